"""dag_factory: turns a pipeline definition (JSON) into an Apache Airflow DAG.

`dag_factory.spec` (the definition's models) imports no Airflow and is what the service uses.
The builder imports Airflow, so it is loaded lazily: `from dag_factory import build_dag`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_dag", "load_pipeline_dag", "DefinitionError", "DagFactoryError"]

from dag_factory.exceptions import DagFactoryError, DefinitionError


def __getattr__(name: str) -> Any:
    if name in ("build_dag", "load_pipeline_dag"):
        from dag_factory import builder

        return getattr(builder, name)
    raise AttributeError(name)
