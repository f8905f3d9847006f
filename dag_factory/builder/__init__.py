"""Definition -> Airflow DAG. The only part of dag_factory (with operators/hooks) that imports Airflow."""

from dag_factory.builder.dag import build_dag, load_pipeline_dag

__all__ = ["build_dag", "load_pipeline_dag"]
