"""Build an Airflow DAG from a pipeline definition.

Shape of every pipeline DAG:
    prepare_staging (setup) -> sources.* -> transformations.* -> sinks.* -> quality.* -> cleanup_staging (teardown)
(a check of a source, a transformation or a file/s3 sink sits between the staged dataset and its readers).
Edges follow the data (a task waits only for the datasets it reads) plus the steps' explicit `depends_on`.
The teardown drops the run's staging schema whatever happened, and (being a teardown) does not decide the
run's state.
"""

from __future__ import annotations

import contextlib
import functools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, TaskGroup

from dag_factory.builder.extract import extraction_task, is_extraction, sql_sink_task, watermark_task
from dag_factory.builder.io import Conn, object_sink_task, object_source_task
from dag_factory.builder.sql import select_sql
from dag_factory.exceptions import DefinitionError
from dag_factory.operators import (
    ApprovalGateOperator,
    CleanupStagingOperator,
    LoadTableOperator,
    PrepareStagingOperator,
    PythonStepOperator,
    QualityCheckOperator,
    SqlTransformOperator,
    StageTableOperator,
)
from dag_factory.spec.models import (
    FileSink,
    FileSource,
    HttpSource,
    PipelineDefinition,
    PostgresSink,
    PostgresSource,
    PythonStep,
    S3Sink,
    S3Source,
    Sink,
    Source,
    SqlSink,
    SqlSource,
    TableSink,
    Transformation,
)
from dag_factory.spec.task_ids import (
    STAGING_SETUP_TASK_ID,
    TEARDOWN_TASK_ID,
    approval_task,
    quality_task,
    sink_task,
    source_task,
    transformation_task,
)
from dag_factory.spec.validate import STAGING_REQUIRED, step_key, validate_definition

# A pendulum DateTime already: the DAG would convert a datetime on every build.
START_DATE = pendulum.instance(datetime(2024, 1, 1, tzinfo=UTC))
Tasks = dict[tuple[str, str], Any]  # ("dataset" | "sink", name) -> task
Assets = dict[str, Any]  # the tenant's assets of a definition (build_dag's `assets`)


def _params(definition: PipelineDefinition) -> dict[str, Param]:
    params = {}
    for name, spec in definition.parameters.items():
        schema = spec.json_schema()
        if spec.default is None:
            # No default: the run must bring the value (the service checks `required` before triggering).
            schema["type"] = [spec.type, "null"]
        params[name] = Param(spec.default, **schema)
    return params


def _task_args(definition: PipelineDefinition, owner: str) -> dict[str, Any]:
    """Arguments of every task. Passed to each operator rather than as DAG default_args, which Airflow
    deep-copies into every task (about a tenth of the build time of a small DAG)."""
    o = definition.orchestration
    args: dict[str, Any] = {
        "owner": owner,
        "retries": o.retries,
        "retry_delay": timedelta(seconds=o.retry_delay_seconds),
    }
    if o.timeout_seconds:
        args["execution_timeout"] = timedelta(seconds=o.timeout_seconds)
    if o.priority:
        args["priority_weight"] = o.priority
    return args


@functools.cache
def _config_defaults() -> dict[str, Any]:
    """DAG arguments whose defaults Airflow reads from its config on every DAG: read them once per process."""
    from airflow.sdk.configuration import conf

    return {
        "max_active_tasks": conf.getint("core", "max_active_tasks_per_dag"),
        "max_consecutive_failed_dag_runs": conf.getint("core", "max_consecutive_failed_dag_runs_per_dag"),
        "disable_bundle_versioning": conf.getboolean("dag_processor", "disable_bundle_versioning"),
    }


def _alerts(definition: PipelineDefinition, dag_id: str, conn: Conn) -> dict[str, Any]:
    """on_failure webhook and SLA. Airflow 3 dropped SLAs: a Deadline Alert on the run's queued time replaces it."""
    o = definition.orchestration
    args: dict[str, Any] = {}
    target: dict[str, Any] = {}
    if o.on_failure and o.on_failure.connection:  # the Airflow connection's id only: no URL in the DAG
        target = {"conn_id": conn(o.on_failure.connection), "path": o.on_failure.path}
    elif o.on_failure:
        target = {"url": o.on_failure.webhook}
    if target:
        from dag_factory.callbacks import WebhookNotifier

        args["on_failure_callback"] = WebhookNotifier(**target)
    if o.sla_seconds:
        from airflow.sdk.definitions.callback import AsyncCallback
        from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

        kwargs = {"dag_id": dag_id, "sla_seconds": o.sla_seconds, **target}
        args["deadline"] = DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT,
            interval=timedelta(seconds=o.sla_seconds),
            callback=AsyncCallback("dag_factory.callbacks.deadline_missed", kwargs=kwargs),
        )
    return args


def _group(name: str, tooltip: str, size: int) -> Any:
    """A UI group for a stage of several tasks. Task ids carry the stage either way (`sources.orders`), so
    a stage of one task skips the group: it collapses nothing, and groups cost a tenth of a small DAG's build."""
    if size < 2:
        return contextlib.nullcontext()
    return TaskGroup(name, tooltip=tooltip, prefix_group_id=False)


def _step_args(step: Source | Transformation | Sink, common: dict[str, Any]) -> dict[str, Any]:
    if step.timeout_seconds:
        return {**common, "execution_timeout": timedelta(seconds=step.timeout_seconds)}
    return common


def _source_tasks(
    definition: PipelineDefinition, conn: Conn, staging: str, tasks: Tasks, common: dict[str, Any], assets: Assets
) -> None:
    for name, src in definition.sources.items():
        args = _step_args(src, common) | _asset_args("inlets", assets.get("sources", {}).get(name))
        tasks[("dataset", name)] = _source_task(name, src, conn, staging, args)


def _source_task(name: str, src: Source, conn: Conn, staging: str, args: dict[str, Any]) -> Any:
    match src:
        case FileSource() | S3Source() | HttpSource():
            return object_source_task(name, src, conn, staging, args)
        case SqlSource() | PostgresSource() if is_extraction(src):  # sql, incremental or partitioned
            return extraction_task(name, src, conn(src.connection), staging, args)
        case PostgresSource():
            where = f" where `{src.where}`" if src.where else ""
            return StageTableOperator(
                task_id=source_task(name),
                source_conn_id=conn(src.connection),
                staging_conn_id=staging,
                table=src.table,
                dataset=name,
                where=src.where,
                materialize=src.materialize,
                doc_md=f"Stage `{src.table}` from connection `{src.connection}`{where}.",
                **args,
            )


def _transformation_task(t: Transformation, staging: str, common: dict[str, Any]) -> Any:
    inputs = ", ".join(t.input_names()) or "no input"
    if isinstance(t, PythonStep):
        return PythonStepOperator(
            task_id=transformation_task(t.name),
            staging_conn_id=staging,
            dataset=t.name,
            callable_path=t.callable,
            inputs=t.inputs,
            options=t.options,
            doc_md=f"python `{t.name}` from {inputs}: calls `{t.callable}`.",
            **_step_args(t, common),
        )
    sql = select_sql(t)
    return SqlTransformOperator(
        task_id=transformation_task(t.name),
        staging_conn_id=staging,
        dataset=t.name,
        sql=sql,
        materialize=t.materialize,
        doc_md=f"{t.type} `{t.name}` from {inputs}:\n\n```sql\n{sql}\n```",
        **_step_args(t, common),
    )


def _sink_tasks(
    definition: PipelineDefinition, conn: Conn, staging: str, tasks: Tasks, common: dict[str, Any], assets: Assets
) -> None:
    for name, sink in definition.sinks.items():
        args = _step_args(sink, common) | _asset_args("outlets", assets.get("sinks", {}).get(name))
        tasks[("sink", name)] = _sink_task(name, sink, conn, staging, args)


def _sink_task(name: str, sink: Sink, conn: Conn, staging: str, args: dict[str, Any]) -> Any:
    match sink:
        case FileSink() | S3Sink():
            return object_sink_task(name, sink, conn, staging, args)
        case SqlSink():
            return sql_sink_task(name, sink, conn, staging, args)
        case PostgresSink():
            return LoadTableOperator(
                task_id=sink_task(name),
                staging_conn_id=staging,
                sink_conn_id=conn(sink.connection),
                dataset=sink.input,
                table=sink.table,
                mode=sink.mode,
                keys=sink.keys,
                doc_md=f"{sink.mode} `{sink.input}` into `{sink.table}` on connection `{sink.connection}`.",
                **args,
            )


def _wire(definition: PipelineDefinition, tasks: Tasks, prepare: Any) -> None:
    """Data edges (a step waits for the datasets it reads) and explicit depends_on edges."""
    datasets = {n for kind, n in tasks if kind == "dataset"}
    sinks = set(definition.sinks)
    steps: list[tuple[tuple[str, str], Any, list[Any]]] = [
        (("dataset", n), s, [prepare]) for n, s in definition.sources.items()
    ]
    steps += [
        (("dataset", t.name), t, [tasks[("dataset", n)] for n in t.input_names()]) for t in definition.transformations
    ]
    steps += [(("sink", n), s, [tasks[("dataset", s.input)]]) for n, s in definition.sinks.items()]
    for key, step, upstream in steps:
        upstream += [tasks[k] for k in (step_key(datasets, sinks, d) for d in step.depends_on) if k]
        # A python step may read nothing: it still waits for the staging schema.
        tasks[key].set_upstream(upstream or [prepare])


def _quality_tasks(
    definition: PipelineDefinition, conn: Conn, staging: str, tasks: Tasks, common: dict[str, Any]
) -> list[Any]:
    """One task per checked name. A database sink is checked in its table once loaded. A source or a
    transformation is checked where the run staged it, and a file/s3 sink through the staged dataset it
    writes: both before anything reads it, so that a failing `error` check keeps the data from the sinks."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for check in definition.quality_checks:
        by_name.setdefault(check.dataset, []).append(
            {"name": check.name, "expectation": check.expectation, "kwargs": check.kwargs, "severity": check.severity}
        )
    if not by_name:
        return []
    checks_tasks = []
    with _group("quality", "great-expectations checks; severity error fails the run", len(by_name)):
        for name, checks in by_name.items():
            sink = definition.sinks.get(name)
            doc = "Checks: " + ", ".join(f"`{c['name']}` ({c['severity']})" for c in checks)
            args = {**common, "retries": 0}  # a failed expectation does not pass by trying again
            if isinstance(sink, TableSink):  # a table: checked once loaded
                qc = QualityCheckOperator(
                    task_id=quality_task(name), conn_id=conn(sink.connection), table=sink.table, checks=checks,
                    dataset=name, doc_md=doc, **args,
                )  # fmt: skip
                qc.set_upstream(tasks[("sink", name)])
                checks_tasks.append(qc)
                continue
            if sink is not None:  # file/s3: what it writes is its input, as staged
                staged, readers = sink.input, [tasks[("sink", name)]]
            else:
                staged, readers = name, list(tasks[("dataset", name)].downstream_list)
            qc = QualityCheckOperator(
                task_id=quality_task(name), conn_id=staging, table=staged, staged=True, checks=checks,
                dataset=name, doc_md=f"{doc} (on the staged `{staged}`)", **args,
            )  # fmt: skip
            qc.set_upstream(tasks[("dataset", staged)])
            if any(c["severity"] == "error" for c in checks):
                qc.set_downstream(readers)
            checks_tasks.append(qc)
    return checks_tasks


def _asset(ref: dict[str, str]) -> Any:
    from airflow.sdk import Asset

    return Asset(name=ref["name"], uri=ref["uri"])


def _asset_args(kind: str, ref: dict[str, str] | None) -> dict[str, Any]:
    """`inlets` of a source task / `outlets` of a sink task: the tenant's asset of the dataset it reads or
    writes (a sink task's success is an asset event, which runs the DAGs scheduled on it)."""
    return {kind: [_asset(ref)]} if ref else {}


def _schedule(schedules: list[dict[str, Any]] | None, dag_id: str, on_assets: list[list[dict[str, str]]]) -> Any:
    """The pipeline's cron schedules as one timetable, also when there are none (dag_factory.timetables says
    why). With a data schedule, the DAG runs on its assets too (Airflow's asset-triggered scheduling): each
    entry of `on_assets` is one dataset of the definition's `schedule.onDatasets` (any of its assets: a table
    name written on several hosts), all of them written since the last such run. Airflow's
    AssetOrTimeSchedule holds both, also with no cron schedule: the timetable inside still names the DAG's
    scheduled runs, whichever version of the DAG the scheduler holds."""
    from dag_factory.timetables import ScheduleSetTimetable

    timetable = ScheduleSetTimetable(schedules or [], dag_id)
    if not on_assets:
        return timetable
    from airflow.sdk import AssetAll, AssetAny, AssetOrTimeSchedule

    condition = AssetAll(*(AssetAny(*map(_asset, refs)) if len(refs) > 1 else _asset(refs[0]) for refs in on_assets))
    # A core timetable (a plugin's) inside the SDK's AssetOrTimeSchedule: Airflow serializes it as any other.
    return AssetOrTimeSchedule(timetable=timetable, assets=condition)  # type: ignore[arg-type]


def _on_assets(definition: PipelineDefinition, assets: Assets) -> list[list[dict[str, str]]]:
    """The assets of the definition's data schedule, as the service resolved them when it published."""
    if definition.schedule is None:
        return []
    resolved = assets.get("schedule") or {}
    missing = [i for i, fqn in enumerate(definition.schedule.on_datasets) if not resolved.get(fqn)]
    if missing:
        errors = [{"path": f"schedule.onDatasets[{i}]", "message": "no asset resolved for it"} for i in missing]
        raise DefinitionError(errors)
    return [resolved[fqn] for fqn in definition.schedule.on_datasets]


def build_dag(
    definition: PipelineDefinition | dict[str, Any],
    *,
    dag_id: str,
    connections: dict[str, str],
    description: str | None = None,
    tags: list[str] | None = None,
    owner: str = "pipeline-service",
    schedules: list[dict[str, Any]] | None = None,
    doc: str | None = None,
    assets: Assets | None = None,
) -> DAG:
    """`connections` maps each connection name used in the definition to its Airflow conn_id.
    `schedules`: the enabled schedules [{id, cron, timezone, parameters, since}] (none: manual runs only).
    `doc`: the DAG's docs in Airflow's UI (default: the description).
    `assets`: the tenant's Airflow assets of the definition, resolved by the service (the dag-processor looks
    up no connection): {"sources": {name: {name, uri}}, "sinks": {name: {name, uri}}, "schedule": {fqn:
    [{name, uri}, ...]}} — inlets of the source tasks, outlets of the sink tasks, the data schedule."""
    if not isinstance(definition, PipelineDefinition):
        definition = validate_definition(definition, check_sql=False)
    conn = connections.__getitem__
    staging_name = definition.staging_connection()
    if staging_name is None:  # a definition given as a model was not necessarily validated
        raise DefinitionError([{"path": "orchestration.staging_connection", "message": STAGING_REQUIRED}])
    staging = conn(staging_name)
    assets = assets or {}
    sink_conns = sorted({conn(s.connection) for s in definition.sinks.values() if isinstance(s, TableSink)} - {staging})
    o = definition.orchestration
    common = _task_args(definition, owner)
    with DAG(
        dag_id=dag_id,
        description=(description or "")[:200] or None,
        doc_md=doc or description,
        schedule=_schedule(schedules, dag_id, _on_assets(definition, assets)),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=o.max_active_runs,
        dagrun_timeout=timedelta(seconds=o.timeout_seconds) if o.timeout_seconds else None,
        params=_params(definition),
        tags=tags or [],
        **_alerts(definition, dag_id, conn),
        **(_config_defaults() | ({"max_active_tasks": o.concurrency} if o.concurrency else {})),
    ) as dag:
        _pipeline_tasks(definition, conn, staging, sink_conns, common, assets)
    return dag


def _pipeline_tasks(
    definition: PipelineDefinition,
    conn: Conn,
    staging: str,
    sink_conns: list[str],
    common: dict[str, Any],
    assets: Assets,
) -> None:
    """Every task of the DAG being built (called inside its `with DAG(...)`), wired: setup, stages, teardown."""
    prepare = PrepareStagingOperator(
        task_id=STAGING_SETUP_TASK_ID,
        conn_ids=[staging],
        doc_md="Creates this run's staging schema in the staging database.",
        **common,
    )
    tasks: Tasks = {}
    with _group("sources", "extract every source into the run's staging schema", len(definition.sources)):
        _source_tasks(definition, conn, staging, tasks, common, assets)
    with _group("transformations", "pushed down into the staging database", len(definition.transformations)):
        for t in definition.transformations:
            tasks[("dataset", t.name)] = _transformation_task(t, staging, common)
    with _group("sinks", "load staged datasets into their target tables", len(definition.sinks)):
        _sink_tasks(definition, conn, staging, tasks, common, assets)
    _wire(definition, tasks, prepare)
    checks = _quality_tasks(definition, conn, staging, tasks, common)
    _approval_tasks(definition, tasks, prepare, common)
    # Incremental sources: their marks are saved only once every sink and check has passed.
    commit = watermark_task(definition, staging, common)
    if commit is not None:
        commit.set_upstream([*(tasks[("sink", n)] for n in definition.sinks), *checks])
        checks = [*checks, commit]
    cleanup = CleanupStagingOperator(
        task_id=TEARDOWN_TASK_ID,
        conn_ids=[staging, *sink_conns],
        doc_md="Drops this run's staging schema, whatever the outcome of the run.",
        **common,
    )
    cleanup.set_upstream([*(tasks[("sink", n)] for n in definition.sinks), *checks])
    cleanup.as_teardown(setups=prepare)


def _approval_tasks(definition: PipelineDefinition, tasks: Tasks, prepare: Any, common: dict[str, Any]) -> None:
    """Each gate waits for everything its targets wait for, and they wait for it. A rejection fails the gate
    task: its targets end upstream_failed and the run failed; the staging teardown still runs."""
    # A human's answer is not retried, and the wait is bounded by the gate's own expiry, not the step timeout.
    args = {k: v for k, v in common.items() if k != "execution_timeout"} | {"retries": 0}
    with _group("approvals", "human approval gates, answered through the pipeline service", len(definition.approvals)):
        for gate in definition.approvals:
            targets = [tasks[("sink", n) if n in definition.sinks else ("dataset", n)] for n in gate.before]
            upstream = {t.task_id: t for target in targets for t in target.upstream_list}
            expires = timedelta(seconds=gate.expires_after_seconds) if gate.expires_after_seconds else None
            task = ApprovalGateOperator(
                task_id=approval_task(gate.name),
                gate=gate.name,
                approver_roles=list(gate.approver_roles),
                quorum=gate.quorum,
                before=gate.before,
                expires_after=expires,
                on_expiry=gate.on_expiry,
                doc_md=f"Approval gate `{gate.name}`: waits for {gate.quorum} approval(s) "
                f"({', '.join(gate.approver_roles)}) before {', '.join(f'`{b}`' for b in gate.before)}.",
                **args,
            )
            task.set_upstream(list(upstream.values()) or [prepare])
            for target in targets:
                target.set_upstream(task)


def load_pipeline_dag(config_json: str) -> DAG:
    """Entry point of the generated DAG files: one JSON document with the definition and its context."""
    cfg = json.loads(config_json)
    return build_dag(
        cfg["definition"],
        dag_id=cfg["dag_id"],
        connections=cfg["connections"],
        description=cfg.get("description"),
        doc=cfg.get("doc"),
        tags=cfg.get("tags"),
        owner=cfg.get("owner", "pipeline-service"),
        schedules=cfg.get("schedules"),
        assets=cfg.get("assets"),
    )
