"""Build an Airflow DAG from a pipeline definition.

Shape of every pipeline DAG:
    prepare_staging (setup) -> sources.* -> transformations.* -> sinks.* -> quality.* -> cleanup_staging (teardown)
Edges follow the data: a task waits only for the datasets it reads. The teardown drops the run's staging
schema whatever happened, and (being a teardown) does not decide the run's state.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup

from dag_factory.builder.sql import lookup_join_sql
from dag_factory.operators import (
    CleanupStagingOperator,
    LoadTableOperator,
    PrepareStagingOperator,
    QualityCheckOperator,
    SqlTransformOperator,
    StageTableOperator,
)
from dag_factory.spec.models import TEARDOWN_TASK_ID, LookupJoin, PipelineDefinition
from dag_factory.spec.validate import validate_definition

START_DATE = datetime(2024, 1, 1, tzinfo=UTC)


def _params(definition: PipelineDefinition) -> dict[str, Param]:
    params = {}
    for name, spec in definition.parameters.items():
        schema = spec.json_schema()
        if spec.default is None:
            # No default: the run must bring the value (the service checks `required` before triggering).
            schema["type"] = [spec.type, "null"]
        params[name] = Param(spec.default, **schema)
    return params


def _default_args(definition: PipelineDefinition, owner: str) -> dict[str, Any]:
    o = definition.orchestration
    args: dict[str, Any] = {
        "owner": owner,
        "retries": o.retries,
        "retry_delay": timedelta(seconds=o.retry_delay_seconds),
    }
    if o.timeout_seconds:
        args["execution_timeout"] = timedelta(seconds=o.timeout_seconds)
    return args


def build_dag(
    definition: PipelineDefinition | dict[str, Any],
    *,
    dag_id: str,
    connections: dict[str, str],
    description: str | None = None,
    tags: list[str] | None = None,
    owner: str = "pipeline-service",
) -> DAG:
    """`connections` maps each connection name used in the definition to its Airflow conn_id."""
    if not isinstance(definition, PipelineDefinition):
        definition = validate_definition(definition)
    conn = connections.__getitem__
    staging = conn(definition.staging_connection())
    sink_conns = sorted({conn(s.connection) for s in definition.sinks.values()} - {staging})
    o = definition.orchestration
    with DAG(
        dag_id=dag_id,
        description=(description or "")[:200] or None,
        doc_md=description,
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=o.max_active_runs,
        dagrun_timeout=timedelta(seconds=o.timeout_seconds) if o.timeout_seconds else None,
        default_args=_default_args(definition, owner),
        params=_params(definition),
        tags=tags or [],
    ) as dag:
        prepare = PrepareStagingOperator(
            task_id="prepare_staging",
            conn_ids=[staging],
            doc_md="Creates this run's staging schema in the staging database.",
        )
        tasks: dict[str, Any] = {}
        with TaskGroup("sources", tooltip="extract every source into the run's staging schema"):
            for name, src in definition.sources.items():
                tasks[name] = StageTableOperator(
                    task_id=name,
                    source_conn_id=conn(src.connection),
                    staging_conn_id=staging,
                    table=src.table,
                    dataset=name,
                    where=src.where,
                    doc_md=f"Stage `{src.table}` from connection `{src.connection}`"
                    + (f" where `{src.where}`" if src.where else "")
                    + ".",
                )
                prepare >> tasks[name]
        with TaskGroup("transformations", tooltip="SQL pushed down into the staging database"):
            for t in definition.transformations:
                sql = lookup_join_sql(t) if isinstance(t, LookupJoin) else t.sql
                tasks[t.name] = SqlTransformOperator(
                    task_id=t.name,
                    staging_conn_id=staging,
                    dataset=t.name,
                    sql=sql,
                    doc_md=f"{t.type} `{t.name}` from {', '.join(t.input_names())}:\n\n```sql\n{sql}\n```",
                )
                for upstream in t.input_names():
                    tasks[upstream] >> tasks[t.name]
        loads: dict[str, Any] = {}
        with TaskGroup("sinks", tooltip="load staged datasets into their target tables"):
            for name, sink in definition.sinks.items():
                loads[name] = LoadTableOperator(
                    task_id=name,
                    staging_conn_id=staging,
                    sink_conn_id=conn(sink.connection),
                    dataset=sink.input,
                    table=sink.table,
                    mode=sink.mode,
                    keys=sink.keys,
                    doc_md=f"{sink.mode} `{sink.input}` into `{sink.table}` on connection `{sink.connection}`.",
                )
                tasks[sink.input] >> loads[name]
        leaves = list(loads.values())
        by_dataset: dict[str, list[dict[str, Any]]] = {}
        for check in definition.quality_checks:
            by_dataset.setdefault(check.dataset, []).append(
                {
                    "name": check.name,
                    "expectation": check.expectation,
                    "kwargs": check.kwargs,
                    "severity": check.severity,
                }
            )
        if by_dataset:
            with TaskGroup("quality", tooltip="great-expectations checks; severity error fails the run"):
                for dataset, checks in by_dataset.items():
                    sink = definition.sinks[dataset]
                    qc = QualityCheckOperator(
                        task_id=dataset,
                        conn_id=conn(sink.connection),
                        table=sink.table,
                        checks=checks,
                        retries=0,  # a failed expectation does not pass by trying again
                        doc_md="Checks: " + ", ".join(f"`{c['name']}` ({c['severity']})" for c in checks),
                    )
                    loads[dataset] >> qc
                    leaves.append(qc)
        cleanup = CleanupStagingOperator(
            task_id=TEARDOWN_TASK_ID,
            conn_ids=[staging, *sink_conns],
            doc_md="Drops this run's staging schema, whatever the outcome of the run.",
        )
        leaves >> cleanup
        cleanup.as_teardown(setups=prepare)
    return dag


def load_pipeline_dag(config_json: str) -> DAG:
    """Entry point of the generated DAG files: one JSON document with the definition and its context."""
    cfg = json.loads(config_json)
    return build_dag(
        cfg["definition"],
        dag_id=cfg["dag_id"],
        connections=cfg["connections"],
        description=cfg.get("description"),
        tags=cfg.get("tags"),
        owner=cfg.get("owner", "pipeline-service"),
    )
