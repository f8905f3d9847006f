"""The OpenLineage receiver: what Airflow's openlineage provider posts to POST /api/v1/lineage, validated as
an OpenLineage RunEvent (openlineage-python's models), matched to a pipeline and an execution, and stored once.

Matching (checked against the events Airflow 3.3's provider emits, tests/e2e/test_lineage_receiver.py):
- the job name is the DAG id (`<tenant>.<pipeline>`, service/naming.py) for a DAG-level event, and
  `<dag id>.<task id>` for a task's; the `airflowDagRun` (DAG) or `airflow` (task) run facet names both;
- the Airflow run id, which is the execution id, is in `run.facets.airflowDagRun.dagRun.run_id` (DAG) or
  `run.facets.airflow.dagRun.run_id` (task); a task event without it is matched through its parent run facet
  (`run.facets.parent.run.runId`, the DAG run's OpenLineage run id) to the stored DAG events of the run.

The pipeline (and with it the tenant) comes from the pipelines table by DAG id: never from the event's text
alone. An event of no pipeline of ours is acknowledged and dropped (the transport would only retry it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from dateutil import parser as dateparser
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import output_statistics_output_dataset as stats
from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dag_factory.spec.task_ids import SINKS_PREFIX, SOURCES_PREFIX
from service.db import utcnow
from service.errors import ValidationFailed
from service.executions.models import Execution
from service.lineage.models import LineageDataset, LineageEvent
from service.pipelines.models import Pipeline

Outcome = Literal["stored", "duplicate", "ignored"]

# Core statements on the tables (the hot path: no ORM unit of work for a row that is written once).
EVENTS = cast(Table, LineageEvent.__table__)
DATASETS = cast(Table, LineageDataset.__table__)
EXECUTIONS = cast(Table, Execution.__table__)


@dataclass(frozen=True)
class DatasetStats:
    direction: Literal["input", "output"]
    namespace: str
    name: str
    rows: int | None = None
    bytes: int | None = None


@dataclass(frozen=True)
class ReceivedEvent:
    """A validated RunEvent and what the receiver reads off it."""

    event: RunEvent
    event_type: str
    event_time: datetime
    dag_id: str | None  # None: not an Airflow DAG's or task's event
    task_id: str | None
    airflow_run_id: str | None  # the execution id, when the event names it
    parent_run_id: str | None  # the OpenLineage run id of the parent (the DAG run) of a task event
    datasets: tuple[DatasetStats, ...]
    # How often the run was cleared in Airflow (the task facet's dagRun.clear_number; None: not said). While
    # 0, a task completes at most once in the run.
    clear_number: int | None = None

    @property
    def dedup_key(self) -> str:
        e = self.event
        key = "|".join((e.run.runId, self.event_type, e.eventTime, e.job.namespace, e.job.name))
        return hashlib.sha256(key.encode()).hexdigest()


# -- validation -------------------------------------------------------------------------------------------


def _invalid(path: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"not an OpenLineage RunEvent: {path}: {message}", details=[{"path": path, "message": message}]
    )


def _object(value: Any, path: str, *, required: bool = True) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise _invalid(path, "required" if value is None else "must be an object")
    return value


MAX_NAME = 500  # the stored columns' length: job and dataset namespaces and names
MAX_ID = 250  # DAG, task and run ids (Airflow's own limit is 250)


def _string(value: Any, path: str, *, required: bool = True, max_length: int = MAX_NAME) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise _invalid(path, "required" if value is None else "must be a non-empty string")
    if len(value) > max_length:
        raise _invalid(path, f"longer than {max_length} characters")
    return value


def _facet_id(facets: Mapping[str, Any], path: str) -> str | None:
    """An id read off a run facet (`path` below run.facets): None when absent, 400 when it cannot be one."""
    value = _dig(facets, *path.split("."))
    if value is None or value == "":
        return None
    return _string(value, f"run.facets.{path}", max_length=MAX_ID)


def _count(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _invalid(path, "must be a non-negative integer")
    return value


def _build(make: Callable[[], Any], path: str) -> Any:
    """Construct one of openlineage-python's models, its validators' complaints named by `path`."""
    try:
        return make()
    except (ValueError, TypeError, OverflowError) as exc:
        raise _invalid(path, str(exc) or type(exc).__name__) from None


def _datasets(raw: Any, direction: Literal["input", "output"]) -> tuple[list[Any], list[DatasetStats]]:
    path = f"{direction}s"
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        raise _invalid(path, "must be an array")
    models: list[Any] = []
    found: list[DatasetStats] = []
    for i, item in enumerate(raw):
        at = f"{path}[{i}]"
        d = _object(item, at)
        namespace, name = _string(d.get("namespace"), f"{at}.namespace"), _string(d.get("name"), f"{at}.name")
        _object(d.get("facets"), f"{at}.facets", required=False)
        if direction == "input":
            _object(d.get("inputFacets"), f"{at}.inputFacets", required=False)
            models.append(InputDataset(namespace, name))
            found.append(DatasetStats("input", namespace, name))
            continue
        facets = _object(d.get("outputFacets"), f"{at}.outputFacets", required=False)
        at_stats = f"{at}.outputFacets.outputStatistics"
        raw_stats = _object(facets.get("outputStatistics"), at_stats, required=False)
        rows = _count(raw_stats.get("rowCount"), f"{at_stats}.rowCount")
        size = _count(raw_stats.get("size"), f"{at_stats}.size")
        file_count = _count(raw_stats.get("fileCount"), f"{at_stats}.fileCount")
        output_facets: dict[str, Any] = {}
        if raw_stats:
            output_facets["outputStatistics"] = stats.OutputStatisticsOutputDatasetFacet(
                rowCount=rows, size=size, fileCount=file_count
            )
        models.append(OutputDataset(namespace, name, outputFacets=output_facets))
        found.append(DatasetStats("output", namespace, name, rows, size))
    return models, found


def _dig(facets: Mapping[str, Any], *keys: str) -> Any:
    value: Any = facets
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_event(body: str) -> ReceivedEvent:
    """The body as an OpenLineage RunEvent, or ValidationFailed naming the first offending field."""
    try:
        raw = json.loads(body)
    except ValueError as exc:
        raise _invalid("body", f"not JSON ({exc})") from None
    doc = _object(raw, "body")
    if "dataset" in doc or ("run" not in doc and "job" in doc):
        raise _invalid("run", "required (dataset and job events are not accepted: only run events)")
    event_time = _string(doc.get("eventTime"), "eventTime")
    producer = _string(doc.get("producer"), "producer", required=False)
    raw_type = doc.get("eventType")
    if raw_type is not None and raw_type not in RunState.__members__:
        raise _invalid("eventType", f"must be one of {', '.join(RunState.__members__)}")
    run = _object(doc.get("run"), "run")
    run_id = _string(run.get("runId"), "run.runId")
    run_facets = _object(run.get("facets"), "run.facets", required=False)
    job = _object(doc.get("job"), "job")
    job_namespace, job_name = _string(job.get("namespace"), "job.namespace"), _string(job.get("name"), "job.name")
    _object(job.get("facets"), "job.facets", required=False)
    inputs, in_stats = _datasets(doc.get("inputs"), "input")
    outputs, out_stats = _datasets(doc.get("outputs"), "output")
    event = RunEvent(
        eventTime=_build(lambda: _checked_time(event_time), "eventTime"),
        producer=producer,
        run=_build(lambda: Run(runId=run_id), "run.runId"),
        job=Job(namespace=job_namespace, name=job_name),
        eventType=RunState(raw_type) if raw_type is not None else None,
        inputs=inputs,
        outputs=outputs,
    )
    dag_id, task_id = _job_of(job_name, run_facets)
    if (dag_id and len(dag_id) > MAX_ID) or (task_id and len(task_id) > MAX_ID):
        raise _invalid("job.name", f"its DAG and task ids must be at most {MAX_ID} characters each")
    return ReceivedEvent(
        event=event,
        event_type=raw_type or "OTHER",
        event_time=dateparser.isoparse(event_time),
        dag_id=dag_id,
        task_id=task_id,
        airflow_run_id=_facet_id(run_facets, "airflowDagRun.dagRun.run_id")
        or _facet_id(run_facets, "airflow.dagRun.run_id"),
        parent_run_id=_facet_id(run_facets, "parent.run.runId"),
        clear_number=_clear_number(run_facets),
        datasets=(*in_stats, *out_stats),
    )


def _clear_number(run_facets: Mapping[str, Any]) -> int | None:
    value = _dig(run_facets, "airflow", "dagRun", "clear_number")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _checked_time(value: str) -> str:
    if len(value) > 64:
        raise ValueError("too long for a date-time")
    parsed = dateparser.isoparse(value)  # RunEvent's own check (which also wants a time part) follows
    if parsed.tzinfo is None:
        raise ValueError("must carry a time zone (an ISO 8601 date-time with offset)")
    return value


def _job_of(job_name: str, run_facets: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(dag id, task id) of the event: from the Airflow facets where present, else from the job name
    (`<tenant>.<pipeline>[.<task id>]`: neither the tenant nor the pipeline name contains a '.')."""
    dag_id = _text(_dig(run_facets, "airflowDagRun", "dag", "dag_id")) or _text(
        _dig(run_facets, "airflow", "dag", "dag_id")
    )
    task_id = _text(_dig(run_facets, "airflow", "task", "task_id"))
    if dag_id is None:
        parts = job_name.split(".", 2)
        if len(parts) < 2:
            return None, None
        dag_id = f"{parts[0]}.{parts[1]}"
        task_id = parts[2] if len(parts) == 3 else None
    elif task_id is None and job_name.startswith(dag_id + ".") and "airflow" in run_facets:
        task_id = job_name[len(dag_id) + 1 :]
    return dag_id, task_id


# -- storing ----------------------------------------------------------------------------------------------


def _insert_events(session: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert the events whose dedup key is not stored yet (also not by a concurrent transaction: the unique
    index decides, ON CONFLICT DO NOTHING on both PostgreSQL and SQLite, which waits for the other one's
    outcome). {dedup key: id} of the inserted ones: a key missing from it was a duplicate."""
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(EVENTS).on_conflict_do_nothing(index_elements=["dedup_key"])
    elif dialect == "sqlite":
        stmt = sqlite.insert(EVENTS).on_conflict_do_nothing(index_elements=["dedup_key"])
    else:  # pragma: no cover - the service runs on PostgreSQL or SQLite
        stmt = insert(EVENTS)
    # executemany: SQLAlchemy sends it as one multi-row INSERT ("insertmanyvalues"), its SQL compiled once
    # and cached whatever the batch's size.
    result = session.connection().execute(stmt.returning(EVENTS.c.id, EVENTS.c.dedup_key), rows)
    return {key: event_id for event_id, key in result}


def _execution_of(session: Session, ev: ReceivedEvent, pipeline_id: str) -> str | None:
    if ev.airflow_run_id:
        return ev.airflow_run_id
    if ev.parent_run_id is None:
        return None
    return session.connection().scalar(
        select(LineageEvent.execution_id)
        .where(
            LineageEvent.pipeline_id == pipeline_id,
            LineageEvent.ol_run_id == ev.parent_run_id,
            LineageEvent.task_id.is_(None),
        )
        .limit(1)
    )


@dataclass
class _Matched:
    ev: ReceivedEvent
    payload: str
    tenant_id: str
    pipeline_id: str
    execution_id: str
    event_id: int | None = None


def store(session: Session, ev: ReceivedEvent, payload: str, *, forward: bool) -> Outcome:
    return store_batch(session, [(ev, payload)], forward=forward)[0]


def store_batch(session: Session, items: Sequence[tuple[ReceivedEvent, str]], *, forward: bool) -> list[Outcome]:
    """Store the events of our pipelines' runs, their datasets, and their rows and bytes into the executions'
    metrics, in the caller's transaction (which commits all of it or nothing): a handful of statements for
    the whole batch. The outcome of each item, in order.

    Locks are taken in one order by every batch (event keys sorted, then executions by id), so that two
    batches written at once never deadlock on PostgreSQL."""
    dag_ids = {ev.dag_id for ev, _ in items if ev.dag_id is not None}
    pipelines = (
        {
            dag_id: (pipeline_id, tenant_id)
            for dag_id, pipeline_id, tenant_id in session.connection().execute(
                select(Pipeline.dag_id, Pipeline.id, Pipeline.tenant_id).where(Pipeline.dag_id.in_(dag_ids))
            )
        }
        if dag_ids
        else {}
    )
    outcomes: list[Outcome] = ["ignored"] * len(items)
    matched: dict[str, tuple[int, _Matched]] = {}  # dedup key -> (item index, event); first of a key wins
    for i, (ev, payload) in enumerate(items):
        found = pipelines.get(ev.dag_id or "")
        if found is None:
            continue
        pipeline_id, tenant_id = found
        execution_id = _execution_of(session, ev, pipeline_id)
        if execution_id is None:
            continue
        outcomes[i] = "duplicate"
        matched.setdefault(ev.dedup_key, (i, _Matched(ev, payload, tenant_id, pipeline_id, execution_id)))
    if not matched:
        return outcomes
    keys = sorted(matched)
    ids = _insert_events(session, [_event_row(matched[k][1], k, forward) for k in keys])
    stored = []
    for key in keys:
        i, m = matched[key]
        if key in ids:
            m.event_id, outcomes[i] = ids[key], "stored"
            stored.append(m)
    datasets = [_dataset_row(m, d) for m in stored for d in m.ev.datasets]
    if datasets:
        session.connection().execute(insert(DATASETS), datasets)
    _count_rows(session, stored)
    return outcomes


def _event_row(m: _Matched, dedup_key: str, forward: bool) -> dict[str, Any]:
    return {
        "dedup_key": dedup_key,
        "tenant_id": m.tenant_id,
        "pipeline_id": m.pipeline_id,
        "execution_id": m.execution_id,
        "ol_run_id": m.ev.event.run.runId,
        "event_type": m.ev.event_type,
        "event_time": m.ev.event_time,
        "job_namespace": m.ev.event.job.namespace,
        "job_name": m.ev.event.job.name,
        "task_id": m.ev.task_id,
        "payload": m.payload,
        "received_at": utcnow(),
        "forward_pending": forward,
        "forward_attempts": 0,
        "forward_after": None,
        "forward_error": None,
    }


def _dataset_row(m: _Matched, d: DatasetStats) -> dict[str, Any]:
    return {
        "event_id": m.event_id,
        "tenant_id": m.tenant_id,
        "pipeline_id": m.pipeline_id,
        "execution_id": m.execution_id,
        "task_id": m.ev.task_id,
        "direction": d.direction,
        "namespace": d.namespace,
        "name": d.name,
        "rows": d.rows,
        "bytes": d.bytes,
    }


def _count_rows(session: Session, stored: list[_Matched]) -> None:
    """A source's or sink's completed task adds its outputs' rows (and a source's bytes) to the execution's
    metrics: UPDATEs of increments, so concurrent events of parallel tasks add up and the status sync (which
    writes other columns) loses nothing. A task that completes again in the same run (cleared and re-run)
    replaces what its previous completion added."""
    counted = [m for m in stored if _counts(m)]
    restaged = _restaged(session, [m for m in counted if (m.ev.task_id or "").startswith(SOURCES_PREFIX)])
    counted = [m for m in counted if id(m) not in restaged]
    if not counted:
        return
    # A run never cleared completes each task once: no earlier completion to look for.
    maybe_again = [m for m in counted if m.ev.clear_number != 0]
    earlier = _earlier_completions(session, maybe_again) if maybe_again else {}
    changes: dict[tuple[str, str], dict[str, int]] = {}
    for m in counted:
        task = m.ev.task_id or ""
        outputs = [d for d in m.ev.datasets if d.direction == "output"]
        new_rows = sum(d.rows for d in outputs if d.rows is not None)
        sizes = [d.bytes for d in outputs if d.bytes is not None]
        before = [e for e in earlier.get((m.execution_id, task), []) if e[0] < (m.event_id or 0)]
        before_rows, before_bytes = max(before)[1:] if before else (0, 0)
        add = changes.setdefault((m.execution_id, m.pipeline_id), {})
        if task.startswith(SOURCES_PREFIX):
            add["rows_processed"] = add.get("rows_processed", 0) + new_rows - before_rows
            if sizes:
                add["bytes_processed"] = add.get("bytes_processed", 0) + sum(sizes) - before_bytes
        else:
            add["rows_written"] = add.get("rows_written", 0) + new_rows - before_rows
    t = EXECUTIONS
    for (execution_id, pipeline_id), add in sorted(changes.items()):
        values = {column: func.coalesce(t.c[column], 0) + n for column, n in add.items()}
        session.connection().execute(
            update(t).where(t.c.id == execution_id, t.c.pipeline_id == pipeline_id).values(values)
        )


def _restaged(session: Session, sources: list[_Matched]) -> set[int]:
    """The source tasks that only re-read what other tasks of the same run staged (a partitioned source's
    union of its parts): every input of theirs is an output of the run. Their rows were counted once already,
    by the tasks that staged them. (Python ids of the events.)"""
    candidates = [m for m in sources if any(d.direction == "input" for d in m.ev.datasets)]
    if not candidates:
        return set()
    names = sorted({d.name for m in candidates for d in m.ev.datasets if d.direction == "input"})
    d = DATASETS
    staged = set(
        session.connection().execute(
            select(d.c.execution_id, d.c.namespace, d.c.name)
            .where(
                d.c.execution_id.in_(sorted({m.execution_id for m in candidates})),
                d.c.direction == "output",
                d.c.name.in_(names),
                d.c.event_id.not_in([m.event_id for m in candidates]),
            )
            .distinct()
        )
    )
    return {
        id(m)
        for m in candidates
        if all((m.execution_id, i.namespace, i.name) in staged for i in m.ev.datasets if i.direction == "input")
    }


def _counts(m: _Matched) -> bool:
    """Whether the event's rows count: a COMPLETE of a source or sink task with output statistics."""
    task = m.ev.task_id or ""
    return (
        m.ev.event_type == "COMPLETE"
        and task.startswith((SOURCES_PREFIX, SINKS_PREFIX))
        and any(d.direction == "output" and d.rows is not None for d in m.ev.datasets)
    )


def _earlier_completions(
    session: Session, counted: list[_Matched]
) -> dict[tuple[str, str], list[tuple[int, int, int]]]:
    """{(execution, task): [(event id, rows, bytes)]} of the stored COMPLETE events of those tasks: one query
    for the batch (nearly always empty: a task completes once per run unless it is cleared and re-run)."""
    e, d = EVENTS, DATASETS
    stmt = (
        select(
            e.c.execution_id,
            e.c.task_id,
            e.c.id,
            func.coalesce(func.sum(d.c.rows), 0),
            func.coalesce(func.sum(d.c.bytes), 0),
        )
        .join(d, (d.c.event_id == e.c.id) & (d.c.direction == "output"))
        .where(
            e.c.execution_id.in_(sorted({m.execution_id for m in counted})),
            e.c.task_id.in_(sorted({m.ev.task_id or "" for m in counted})),
            e.c.event_type == "COMPLETE",
            e.c.id.not_in([m.event_id for m in counted]),
        )
        .group_by(e.c.execution_id, e.c.task_id, e.c.id)
    )
    found: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    for execution_id, task_id, event_id, rows, size in session.connection().execute(stmt):
        found.setdefault((execution_id, task_id), []).append((event_id, int(rows), int(size)))
    return found
