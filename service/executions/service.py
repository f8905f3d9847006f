"""Executions: recorded first (outbox), submitted to Airflow as a DAG run whose run_id is the execution id,
and kept in step with Airflow's run and task-instance states."""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session, sessionmaker

from dag_factory.exceptions import DefinitionError
from dag_factory.spec import TEARDOWN_TASK_ID, validate_parameters
from dag_factory.spec.models import OBJECT_SINK_TYPES
from service.airflow.client import AirflowClient, AirflowConflict, AirflowNotFound
from service.auth import Principal
from service.db import page, session_scope, utcnow
from service.errors import AirflowUnavailable, Conflict, NotFound, ServiceError, ValidationFailed
from service.executions import limits
from service.executions.models import Execution
from service.executions.schemas import (
    ENGINES,
    PRIORITIES,
    ExecuteIn,
    ExecutionOut,
    Metrics,
    Progress,
    QualityResultOut,
    TaskOut,
)
from service.pipelines import repository as pipeline_repo
from service.pipelines import service as pipelines
from service.pipelines.models import Pipeline

log = logging.getLogger(__name__)

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"
STATUSES = (QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
_RUN_STATE = {"queued": QUEUED, "running": RUNNING, "success": COMPLETED, "failed": FAILED}
_DONE_TASK_STATES = {"success", "skipped", "failed", "upstream_failed", "removed"}
MAX_SUBMIT_ATTEMPTS = 20
# Airflow has no per-run priority: the service's own lever is the order in which queued executions are
# submitted (CRITICAL first). It matters when executions queue up (Airflow down, a backlog of submissions).
_PRIORITY_RANK = case({p: i for i, p in enumerate(reversed(PRIORITIES))}, value=Execution.priority, else_=9)
ESTIMATE_SAMPLE = 10  # successful runs the duration estimate looks at
QUALITY_PREFIX = "quality."  # task ids of the great-expectations checks (one task per checked dataset)


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def get_or_404(session: Session, tenant_id: str, execution_id: str) -> Execution:
    ex = session.scalars(
        select(Execution).where(Execution.tenant_id == tenant_id, Execution.id == execution_id)
    ).one_or_none()
    if ex is None:
        raise NotFound(f"execution '{execution_id}' not found")
    return ex


def execute(
    session: Session, principal: Principal, pipeline_id: str, body: ExecuteIn, *, rate_per_minute: int
) -> Execution:
    limits.admit_rate(session, principal.tenant_id, rate_per_minute)
    pipeline = pipelines.get_or_404(session, principal.tenant_id, pipeline_id)
    if body.engine_override is not None and body.engine_override not in ENGINES:
        raise ValidationFailed(
            f"engine '{body.engine_override}' is not supported; supported engines: {', '.join(ENGINES)}",
            details=[{"path": "engine_override", "message": f"must be one of {list(ENGINES)} or null"}],
        )
    if pipeline.status == pipelines.INVALID:
        raise Conflict(f"pipeline '{pipeline.name}' is INVALID and cannot run: {pipeline.status_detail or ''}".strip())
    definition = pipelines.parse_definition(pipeline_repo.current_version(session, pipeline).definition)
    try:
        parameters = validate_parameters(definition, body.parameters)
    except DefinitionError as exc:
        raise ValidationFailed(f"{exc.errors[0]['path']}: {exc.errors[0]['message']}", details=exc.errors) from None
    limits.admit_run(session, pipeline, definition.orchestration.max_active_runs)
    ex = Execution(
        id="exec-" + uuid.uuid4().hex[:24],
        tenant_id=principal.tenant_id,
        pipeline_id=pipeline.id,
        pipeline_revision=pipeline.revision,
        dag_id=pipeline.dag_id,
        status=QUEUED,
        engine="airflow",
        priority=body.priority,
        parameters=parameters,
        created_by=principal.subject,
        progress={"estimatedDurationMs": estimate_duration_ms(session, pipeline.id)},
    )
    session.add(ex)
    session.flush()
    return ex


def estimate_duration_ms(session: Session, pipeline_id: str) -> int | None:
    """Median wall time of the pipeline's recent successful executions; None without history."""
    rows = session.execute(
        select(Execution.started_at, Execution.finished_at)
        .where(
            Execution.pipeline_id == pipeline_id,
            Execution.status == COMPLETED,
            Execution.started_at.is_not(None),
            Execution.finished_at.is_not(None),
        )
        .order_by(Execution.finished_at.desc())
        .limit(ESTIMATE_SAMPLE)
    ).all()
    durations = [(end - start).total_seconds() * 1000 for start, end in rows]
    return int(statistics.median(durations)) if durations else None


# -- submission (the outbox dispatcher) ----------------------------------------------------------------
def pending_submissions(session: Session, limit: int = 20) -> Sequence[tuple[Execution, Pipeline]]:
    """Queued executions not yet in Airflow whose pipeline is settled (ACTIVE or INVALID), oldest first.
    Rows another replica holds are skipped (SKIP LOCKED on PostgreSQL)."""
    stmt = (
        select(Execution, Pipeline)
        .join(Pipeline, Pipeline.id == Execution.pipeline_id)
        .where(
            Execution.status == QUEUED,
            Execution.submitted.is_(False),
            Pipeline.status.in_([pipelines.ACTIVE, pipelines.INVALID]),
        )
        .order_by(_PRIORITY_RANK, Execution.submitted_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Execution)
    )
    return [(ex, p) for ex, p in session.execute(stmt).all()]


def ready_to_submit(session: Session, ex: Execution, pipeline: Pipeline) -> bool:
    """False (and the execution FAILED) when what it was accepted for can no longer run."""
    problem = None
    if pipeline.status == pipelines.INVALID:
        problem = f"pipeline is INVALID: {pipeline.status_detail or 'see the pipeline'}"
    elif pipeline.revision != ex.pipeline_revision:
        # Updated between execute and submission: the DAG now runs the new revision, so check again.
        definition = pipelines.parse_definition(pipeline_repo.current_version(session, pipeline).definition)
        try:
            ex.parameters = validate_parameters(definition, ex.parameters)
            ex.pipeline_revision = pipeline.revision
        except DefinitionError as exc:
            problem = f"parameters do not fit pipeline revision {pipeline.revision}: {exc}"
    if problem:
        ex.status, ex.finished_at, ex.error_message = FAILED, utcnow(), problem[:2000]
    return problem is None


def submit(ex: Execution, airflow: AirflowClient) -> None:
    """Create the Airflow run. The run_id is the execution id, so a repeat can never make a second run."""
    try:
        note = f"pipeline-service execution {ex.id} (priority {ex.priority})"
        airflow.trigger(ex.dag_id, ex.id, ex.parameters, note=note)
    except AirflowConflict:
        pass  # an earlier attempt got through: the run exists
    except AirflowUnavailable:
        ex.submit_attempts += 1
        ex.last_submit_error = "Airflow unreachable"
        raise
    except ServiceError as exc:
        ex.submit_attempts += 1
        ex.last_submit_error = exc.message
        if ex.submit_attempts >= MAX_SUBMIT_ATTEMPTS:
            ex.status, ex.finished_at = FAILED, utcnow()
            ex.error_message = f"Airflow did not accept the run: {exc.message}"
        return
    ex.submitted = True
    ex.last_submit_error = None


# -- status --------------------------------------------------------------------------------------------
def _task_out(ti: dict[str, Any]) -> dict[str, Any]:
    duration = ti.get("duration")
    return TaskOut(
        task_id=ti["task_id"],
        state=ti.get("state"),
        try_number=ti.get("try_number") or 0,
        started_at=_ts(ti.get("start_date")),
        finished_at=_ts(ti.get("end_date")),
        duration_ms=int(duration * 1000) if duration is not None else None,
    ).model_dump(mode="json")


def _progress(tis: list[dict[str, Any]]) -> dict[str, Any]:
    done = sum(1 for t in tis if t.get("state") in _DONE_TASK_STATES)
    running = [t["task_id"] for t in tis if t.get("state") == "running"]
    waiting = [t["task_id"] for t in tis if t.get("state") in ("queued", "scheduled", "up_for_retry")]
    current = (running or waiting or [None])[0]
    total = len(tis)
    return Progress(
        total_tasks=total,
        completed_tasks=done,
        current_task=current,
        percentage=round(100 * done / total) if total else 0,
    ).model_dump(mode="json")


def refresh(ex: Execution, airflow: AirflowClient, *, reopen: bool = False) -> None:
    """Pull the run's state and its task instances from Airflow: two calls whatever the task count, plus one
    XCom read per task that finished since the last refresh (for the row counts).

    `reopen`: also for a finished execution, whose run may have been cleared (re-run) in Airflow since."""
    if not ex.submitted or ex.status == CANCELLED or (ex.status in TERMINAL and not reopen):
        return
    try:
        run = airflow.get_run(ex.dag_id, ex.id)
    except AirflowNotFound:
        ex.status, ex.finished_at = FAILED, utcnow()
        ex.error_message = "the Airflow run no longer exists (the DAG or its run was deleted in Airflow)"
        return
    tis = airflow.task_instances(ex.dag_id, ex.id)
    previous = ex.progress or {}
    ex.airflow_state = run.get("state")
    ex.progress = {
        **previous,
        "progress": _progress(tis),
        "tasks": [_task_out(t) for t in tis],
        "rows": _task_rows(ex, airflow, tis, previous.get("rows") or {}),
        "refreshedAt": utcnow().isoformat(),
    }
    ex.started_at = _ts(run.get("start_date")) or ex.started_at
    status = _RUN_STATE.get(run.get("state") or "", ex.status)
    if status in TERMINAL:
        ex.finished_at = _ts(run.get("end_date")) or utcnow()
        ex.error_message = _failure_message(ex, tis, airflow) if status == FAILED else None
        ex.quality_results = quality_results(ex, airflow, tis)
    else:
        ex.finished_at, ex.error_message, ex.quality_results = None, None, None
    ex.status = status


def _task_rows(
    ex: Execution, airflow: AirflowClient, tis: list[dict[str, Any]], known: dict[str, Any]
) -> dict[str, Any]:
    """{task_id: {"try": n, "rows": r}} from each successful task's XCom, read once per task try: a finished
    try's XCom never changes, so a status read costs no XCom calls once every task has been seen."""
    rows = dict(known)
    for ti in tis:
        task_id, attempt = ti["task_id"], ti.get("try_number") or 0
        if ti.get("state") != "success" or (rows.get(task_id) or {}).get("try") == attempt:
            continue
        if task_id.startswith(QUALITY_PREFIX):
            continue  # check results, no rows: read once the run has finished (quality_results)
        try:
            value = airflow.xcom_value(ex.dag_id, ex.id, task_id)
        except AirflowNotFound:
            value = None  # the task returned nothing (staging setup/teardown)
        rows[task_id] = {"try": attempt, **_counts_of(value)}
    return rows


def _counts_of(value: Any) -> dict[str, int | None]:
    """{"rows", "bytes"} of a task's return value (None where it reports none)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    value = value if isinstance(value, dict) else {}
    return {k: v if isinstance(v := value.get(k), int) and not isinstance(v, bool) else None for k in ("rows", "bytes")}


def quality_results(ex: Execution, airflow: AirflowClient, tis: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The check results of every quality task that ran, from its XCom return value: one call per quality task,
    made once, when the run has finished. A task whose error-severity check failed pushed its results before
    failing; one that never ran (its sink failed) has none."""
    out: list[dict[str, Any]] = []
    for ti in tis:
        task_id = ti["task_id"]
        if not task_id.startswith(QUALITY_PREFIX) or ti.get("state") not in ("success", "failed"):
            continue
        try:
            value = airflow.xcom_value(ex.dag_id, ex.id, task_id)
        except AirflowNotFound:
            continue  # failed before it could check anything (e.g. killed)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                continue
        if isinstance(value, list):
            out.extend(_quality_result(task_id, r) for r in value if isinstance(r, dict))
    return out


def _quality_result(task_id: str, raw: dict[str, Any]) -> dict[str, Any]:
    """One check's outcome as stored (snake_case, QualityResultOut's fields): headline numbers on top, the
    whole great-expectations result in `details`."""
    result = raw.get("result")
    if not isinstance(result, dict):
        result = {}
    errors = result.get("errors")
    return {
        "name": raw.get("name"),
        "dataset": raw.get("dataset") or task_id.removeprefix(QUALITY_PREFIX),
        "table": raw.get("table"),
        "expectation": raw.get("expectation"),
        "severity": raw.get("severity"),
        "success": bool(raw.get("success")),
        "observed_value": result.get("observed_value"),
        "element_count": result.get("element_count"),
        "unexpected_count": result.get("unexpected_count"),
        "unexpected_percent": result.get("unexpected_percent"),
        "missing_count": result.get("missing_count"),
        "errors": [str(e) for e in errors] if isinstance(errors, list) else [],
        "details": {k: v for k, v in result.items() if k != "errors"},
        "task_id": task_id,
    }


def _metrics(ex: Execution) -> Metrics:
    rows = (ex.progress or {}).get("rows") or {}

    def total(group: str, what: str = "rows") -> int | None:
        counts = [r[what] for t, r in rows.items() if t.startswith(group) and r.get(what) is not None]
        return sum(counts) if counts else None

    elapsed = None
    if ex.started_at is not None:
        elapsed = int(((ex.finished_at or utcnow()) - ex.started_at).total_seconds() * 1000)
    return Metrics(
        rows_processed=total("sources."),
        rows_written=total("sinks."),
        bytes_processed=total("sources.", "bytes"),  # bytes read by the sources (files, objects, responses, tables)
        elapsed_ms=elapsed,
    )


class StatusCache:
    """Serialised status bodies per (tenant, execution) for a short time: polls of a finished execution, or
    of a running one within the status max age, cost no database read. Bounded; per process (a retry or
    reopen by another replica shows after at most `status_cache_seconds`).

    When an entry expires, the first poller to see it claims the refresh (`lookup`), and until it stores
    the new body the other pollers get the expired one: fifty clients polling one execution cause one
    database read per expiry, not fifty at the same instant."""

    MAX_ENTRIES = 10_000
    CLAIM_SECONDS = 5.0  # a refresh that has not finished by then is presumed lost: the next poller claims it

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[float, bytes]] = {}
        self._claims: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> bytes | None:
        entry = self._entries.get(key)
        return entry[1] if entry and entry[0] > time.monotonic() else None

    def lookup(self, key: tuple[str, str]) -> tuple[bytes | None, bool]:
        """(body, claimed): a fresh body; or an expired one while another caller refreshes it; or
        (None, True) when this caller must refresh it (then put() or release())."""
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1], False
        with self._lock:
            claimed_at = self._claims.get(key)
            if entry is not None and claimed_at is not None and now - claimed_at < self.CLAIM_SECONDS:
                return entry[1], False
            self._claims[key] = now
        return None, True

    def put(self, key: tuple[str, str], body: bytes, ttl: float) -> None:
        with self._lock:
            self._claims.pop(key, None)
            if ttl <= 0:
                return
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
                self._claims.clear()
            self._entries[key] = (time.monotonic() + ttl, body)

    def release(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._claims.pop(key, None)

    def drop(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._claims.pop(key, None)


status_cache = StatusCache()
_refreshing: set[str] = set()
_refreshing_lock = threading.Lock()


def read_status(ex: Execution, airflow: AirflowClient, max_age_seconds: float) -> None:
    """Serve the stored row while it is fresh (the reconciler keeps it so); refresh it inline when stale.
    Single-flight per process: while one request refreshes an execution, the others answer from the row."""
    if ex.status in TERMINAL or not ex.submitted or not _stale(ex, max_age_seconds):
        return
    with _refreshing_lock:
        if ex.id in _refreshing:
            return
        _refreshing.add(ex.id)
    try:
        refresh(ex, airflow)
    except AirflowUnavailable:
        pass  # the stored state is still the best answer; the reconciler catches up later
    finally:
        with _refreshing_lock:
            _refreshing.discard(ex.id)


def _stale(ex: Execution, max_age_seconds: float) -> bool:
    stamp = (ex.progress or {}).get("refreshedAt")
    if not stamp:
        return True
    return (utcnow() - datetime.fromisoformat(stamp)).total_seconds() > max_age_seconds


def _failure_message(ex: Execution, tis: list[dict[str, Any]], airflow: AirflowClient) -> str:
    failed = [t for t in tis if t.get("state") == "failed"]
    if not failed:
        return "the Airflow run failed (run timeout, or marked failed in Airflow)"
    first = failed[0]
    reason = ""
    try:
        events = airflow.task_log(ex.dag_id, ex.id, first["task_id"], first.get("try_number") or 1)
        errors = [e for e in events if str(e.get("level", "")).lower() in ("error", "critical")]
        if errors:
            reason = ": " + render_event(errors[-1], with_time=False)
    except ServiceError:
        pass
    others = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"task '{first['task_id']}' failed{others}{reason}"[:2000]


def to_out(ex: Execution) -> ExecutionOut:
    snapshot = ex.progress or {}
    return ExecutionOut(
        execution_id=ex.id,
        pipeline_id=ex.pipeline_id,
        pipeline_revision=ex.pipeline_revision,
        status=ex.status,
        engine=ex.engine,
        priority=ex.priority,
        parameters=ex.parameters,
        schedule_id=ex.schedule_id,
        progress=Progress.model_validate(snapshot.get("progress", {})),
        tasks=[TaskOut.model_validate(t) for t in snapshot.get("tasks", [])],
        error_message=ex.error_message
        or (f"not yet submitted: {ex.last_submit_error}" if ex.last_submit_error else None),
        dag_id=ex.dag_id,
        submitted_at=ex.submitted_at,
        started_at=ex.started_at,
        finished_at=ex.finished_at,
        metrics=_metrics(ex),
        estimated_duration_ms=snapshot.get("estimatedDurationMs"),
        quality_results=[QualityResultOut.model_validate(r) for r in ex.quality_results or []],
    )


def list_page(
    session: Session,
    tenant_id: str,
    *,
    pipeline_id: str | None,
    status: str | None,
    submitted_from: datetime | None = None,
    submitted_to: datetime | None = None,
    schedule_id: str | None = None,
    offset: int,
    limit: int,
) -> tuple[Sequence[Execution], int]:
    stmt = select(Execution).where(Execution.tenant_id == tenant_id)
    if pipeline_id:
        stmt = stmt.where(Execution.pipeline_id == pipeline_id)
    if schedule_id:
        stmt = stmt.where(Execution.schedule_id == schedule_id)
    if status:
        stmt = stmt.where(Execution.status == status)
    if submitted_from:
        stmt = stmt.where(Execution.submitted_at >= submitted_from)
    if submitted_to:
        stmt = stmt.where(Execution.submitted_at < submitted_to)
    return page(session, stmt.order_by(Execution.submitted_at.desc(), Execution.id), offset=offset, limit=limit)


def cancel(ex: Execution, airflow: AirflowClient) -> None:
    if ex.status in TERMINAL:
        raise Conflict(f"execution '{ex.id}' is already {ex.status} and cannot be cancelled")
    if ex.submitted:
        _fail_unfinished_tasks(ex, airflow)
    ex.status, ex.finished_at = CANCELLED, utcnow()
    ex.error_message = "cancelled by request"


def _fail_unfinished_tasks(ex: Execution, airflow: AirflowClient) -> None:
    """Cancel in Airflow by failing every unfinished task except the teardown.

    Not PATCH dagRun state=failed: with a teardown pending, Airflow keeps such a run going, runs the teardown
    and then judges the run by its (skipped) leaves: success. Failing the tasks kills the running ones, lets
    the teardown drop the staging schema, and the run ends failed.
    """
    for _ in range(3):  # a task may start between our read and our write: look again
        try:
            tis = airflow.task_instances(ex.dag_id, ex.id)
        except AirflowNotFound:
            return
        unfinished = [
            t["task_id"] for t in tis if t.get("state") not in _DONE_TASK_STATES and t["task_id"] != TEARDOWN_TASK_ID
        ]
        if not unfinished:
            return
        airflow.set_task_states(ex.dag_id, ex.id, unfinished, "failed")


# -- retry ---------------------------------------------------------------------------------------------
_STAGING_GROUPS = ("prepare_staging", "sources.", "transformations.")


def retry(session: Session, ex: Execution, airflow: AirflowClient) -> None:
    """Re-run the failed tasks of a FAILED execution in the same Airflow run (Airflow's clear).

    The teardown dropped the run's staging schema, so when a failed task reads staged data (anything but a
    check of a sink table) the staging side is rebuilt too: setup, sources, transformations, teardown. Sinks
    that succeeded are not loaded again (an append sink would get its rows twice)."""
    if ex.status != FAILED:
        raise Conflict(f"execution '{ex.id}' is {ex.status}; only a FAILED execution can be retried")
    if not ex.submitted:
        raise Conflict(f"execution '{ex.id}' never reached Airflow ({ex.error_message}); execute the pipeline again")
    tis = airflow.task_instances(ex.dag_id, ex.id)
    version = pipeline_repo.version(session, ex.pipeline_id, ex.pipeline_revision)
    task_ids = retry_set(tis, table_check_tasks(version.definition if version else {}))
    airflow.clear_tasks(ex.dag_id, ex.id, task_ids)
    ex.status, ex.finished_at, ex.error_message, ex.quality_results = QUEUED, None, None, None
    ex.progress = {**(ex.progress or {}), "refreshedAt": None, "retries": (ex.progress or {}).get("retries", 0) + 1}


def table_check_tasks(definition: dict[str, Any]) -> set[str]:
    """Task ids of the checks that read a sink's table rather than staged data (dag_factory.builder)."""
    sinks = definition.get("sinks") or {}
    return {
        f"{QUALITY_PREFIX}{name}"
        for name in {c.get("dataset") for c in definition.get("quality_checks") or []}
        if isinstance(sinks.get(name), dict) and sinks[name].get("type") not in OBJECT_SINK_TYPES
    }


def retry_set(tis: list[dict[str, Any]], table_checks: set[str]) -> list[str]:
    every = [t["task_id"] for t in tis]
    failed = [t["task_id"] for t in tis if t.get("state") in ("failed", "upstream_failed")]
    if not failed:  # the run failed as a whole (run timeout, marked failed): re-run what did not succeed
        failed = [t["task_id"] for t in tis if t.get("state") not in ("success", "skipped")]
    chosen = set(failed)
    if any(t not in table_checks for t in failed):
        chosen |= {t for t in every if t.startswith(_STAGING_GROUPS)}
    if TEARDOWN_TASK_ID in every:
        chosen.add(TEARDOWN_TASK_ID)
    return [t for t in every if t in chosen]


# -- runs changed in Airflow behind the service's back ---------------------------------------------------
def reopened_in_airflow(session: Session, runs: list[dict[str, Any]]) -> list[str]:
    """Ids of finished executions whose Airflow run now says otherwise: cleared in Airflow and queued or
    running again, or even finished again (while the service was down) with another outcome."""
    # By DAG and run: run ids are unique per DAG only.
    airflow_status = {(r.get("dag_id"), r["dag_run_id"]): _RUN_STATE.get(r.get("state") or "") for r in runs}
    if not airflow_status:
        return []
    finished = session.execute(
        select(Execution.id, Execution.dag_id, Execution.status).where(
            Execution.id.in_([run_id for _, run_id in airflow_status]), Execution.status.in_([COMPLETED, FAILED])
        )
    ).all()
    return [
        ex_id
        for ex_id, dag_id, status in finished
        if (dag_id, ex_id) in airflow_status and airflow_status[dag_id, ex_id] not in (None, status)
    ]


def import_scheduled_runs(session: Session, airflow: AirflowClient, runs: list[dict[str, Any]]) -> list[str]:
    """Record as executions the runs that Airflow's scheduler started for a pipeline's DAG (run_type
    scheduled) and the service does not know yet, also those started while the service was down. The run id
    names the schedule (dag_factory.spec.schedule); the execution carries that schedule's parameters over
    the pipeline's defaults. Safe on several replicas: the execution id is the run id (a primary key)."""
    from sqlalchemy.exc import IntegrityError

    from dag_factory.spec.schedule import schedule_at, schedule_id_of
    from service.schedules import repository as schedule_repo
    from service.schedules.models import Schedule

    scheduled = [r for r in runs if r.get("run_type") == "scheduled" and len(r.get("dag_run_id") or "") <= 64]
    if not scheduled:
        return []
    # An id already taken (by this DAG's execution, or, for a run id made by Airflow alone, another DAG's: the
    # execution id is the run id, a primary key) is not imported again.
    known = set(session.scalars(select(Execution.id).where(Execution.id.in_([r["dag_run_id"] for r in scheduled]))))
    new = [r for r in scheduled if r["dag_run_id"] not in known]
    dag_ids = {r["dag_id"] for r in new}
    by_dag = {p.dag_id: p for p in session.scalars(select(Pipeline).where(Pipeline.dag_id.in_(dag_ids)))} if new else {}
    imported = []
    for run in new:
        pipeline = by_dag.get(run["dag_id"])
        if pipeline is None:
            continue  # not a pipeline's DAG
        schedule_id = schedule_id_of(run["dag_run_id"])
        logical_date = _ts(run.get("logical_date"))
        if schedule_id is None and logical_date is not None:
            # Its id was made while Airflow's scheduler still held the DAG's previous version: the logical
            # date tells the schedule (dag_factory.timetables).
            enabled = schedule_repo.enabled_for_pipeline(session, pipeline.id)
            entries = [{"id": s.id, "cron": s.cron_expression, "timezone": s.timezone} for s in enabled]
            found = schedule_at(entries, logical_date)
            schedule_id = str(found["id"]) if found else None
        schedule = session.get(Schedule, schedule_id) if schedule_id else None
        values = schedule.parameters if schedule is not None and schedule.pipeline_id == pipeline.id else {}
        try:
            definition = pipelines.parse_definition(pipeline_repo.current_version(session, pipeline).definition)
            parameters = validate_parameters(definition, values)
        except (DefinitionError, ServiceError):
            parameters = dict(values)
        ex = Execution(
            id=run["dag_run_id"],
            tenant_id=pipeline.tenant_id,
            pipeline_id=pipeline.id,
            pipeline_revision=pipeline.revision,
            dag_id=pipeline.dag_id,
            status=QUEUED,
            engine="airflow",
            priority="NORMAL",
            parameters=parameters,
            schedule_id=schedule_id,
            submitted=True,
            created_by=f"schedule:{schedule_id}" if schedule_id else "airflow-scheduler",
            submitted_at=_ts(run.get("run_after") or run.get("queued_at")) or utcnow(),
            progress={},
        )
        try:
            with session.begin_nested():
                session.add(ex)
        except IntegrityError:
            continue  # another replica imported it first
        try:
            refresh(ex, airflow)
        except ServiceError as exc:
            if isinstance(exc, AirflowUnavailable):
                raise
            log.warning("imported scheduled run %s: %s", ex.id, exc.message)
        imported.append(ex.id)
    return imported


# -- logs ----------------------------------------------------------------------------------------------
def render_event(event: dict[str, Any], with_time: bool = True) -> str:
    """One readable line from one of Airflow 3's structured log events."""
    parts = []
    if with_time and event.get("timestamp"):
        parts.append(str(event["timestamp"])[:23].replace("T", " "))
    if event.get("level"):
        parts.append(str(event["level"]).upper())
    text = str(event.get("event", ""))
    for detail in event.get("error_detail") or []:
        if isinstance(detail, dict):
            text += f" | {detail.get('exc_type', '')}: {detail.get('exc_value', '')}"
    parts.append(text)
    return " ".join(p for p in parts if p)


def _readable(event: dict[str, Any]) -> bool:
    # "::group::"/"::endgroup::" are folding markers for Airflow's UI, not log content.
    text = str(event.get("event") or "")
    return bool(text) and not text.startswith("::")


def _one_task(ex: Execution, tis: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """`task` is a full task id (`sinks.daily_transactions`) or, when unambiguous, its last part."""
    exact = [t for t in tis if t["task_id"] == task]
    matching = exact or [t for t in tis if t["task_id"].split(".")[-1] == task]
    if len(matching) == 1:
        return matching[0]
    if matching:
        names = ", ".join(sorted(t["task_id"] for t in matching))
        raise ValidationFailed(
            f"task '{task}' is ambiguous: use one of {names}", details=[{"path": "task", "message": names}]
        )
    known = ", ".join(sorted(t["task_id"] for t in tis))
    raise NotFound(f"execution '{ex.id}' has no task '{task}' (tasks: {known})")


def check_task(ex: Execution, airflow: AirflowClient, task: str) -> None:
    try:
        _one_task(ex, airflow.task_instances(ex.dag_id, ex.id), task)
    except (AirflowNotFound, AirflowUnavailable):
        pass  # the stream waits for the run


def logs(ex: Execution, airflow: AirflowClient, task: str | None, lines: int) -> list[str]:
    if not ex.submitted:
        return []
    tis = airflow.task_instances(ex.dag_id, ex.id)
    if task:
        tis = [_one_task(ex, tis, task)]
    tis = sorted((t for t in tis if (t.get("try_number") or 0) > 0), key=lambda t: t.get("start_date") or "")
    out: list[str] = []
    for ti in tis:
        events = airflow.task_log(ex.dag_id, ex.id, ti["task_id"], ti["try_number"])
        prefix = "" if task else f"[{ti['task_id']}] "
        out.extend(prefix + render_event(e) for e in events if _readable(e))
    return out[-lines:]


# -- streams (Server-Sent Events) ------------------------------------------------------------------------
KEEPALIVE_EVERY = 15  # polls between SSE comments that keep proxies from closing an idle stream


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


class LogTail:
    """New log lines of a run since the previous call: each (task, try) remembers how far it was read."""

    def __init__(self, dag_id: str, run_id: str, task: str | None):
        self.dag_id, self.run_id, self.task = dag_id, run_id, task
        self.read: dict[tuple[str, int], int] = {}

    def poll(self, airflow: AirflowClient, tis: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for ti in sorted(tis, key=lambda t: t.get("start_date") or ""):
            attempt = ti.get("try_number") or 0
            if attempt == 0 or ti.get("state") in (None, "scheduled", "queued"):
                continue
            key = (ti["task_id"], attempt)
            events = [e for e in airflow.task_log(self.dag_id, self.run_id, *key) if _readable(e)]
            for event in events[self.read.get(key, 0) :]:
                out.append({"task": ti["task_id"], "tryNumber": attempt, "line": render_event(event)})
            self.read[key] = len(events)
        return out


def follow_logs(
    airflow: AirflowClient, ex: Execution, task: str | None, lines: int, poll_seconds: float
) -> Iterator[str]:
    """`log` events: the last `lines` lines, then every new one until the task (or, without `task`, every
    task of the run) has finished; then one `end` event."""
    tail, first, idle = LogTail(ex.dag_id, ex.id, task), True, 0
    while True:
        try:
            tis = airflow.task_instances(ex.dag_id, ex.id)
        except (AirflowNotFound, AirflowUnavailable):
            tis = []  # not submitted yet, or Airflow briefly away: keep waiting
        if task and tis:
            try:
                tis = [_one_task(ex, tis, task)]
            except ServiceError as exc:  # the run appeared after the request was checked: say so and stop
                yield sse("error", {"code": exc.code, "message": exc.message})
                return
        new = tail.poll(airflow, tis) if tis else []
        for entry in new[-lines:] if first else new:
            yield sse("log", entry)
        first = False
        if tis and all(t.get("state") in _DONE_TASK_STATES for t in tis):
            yield sse("end", {"executionId": ex.id, "task": task})
            return
        idle = 0 if new else idle + 1
        if idle and idle % KEEPALIVE_EVERY == 0:
            yield ": keepalive\n\n"
        time.sleep(poll_seconds)


def execution_events(
    sessions: sessionmaker[Session], airflow: AirflowClient, execution_id: str, max_age: float, poll_seconds: float
) -> Iterator[str]:
    """`run.updated` whenever status, progress or tasks change, `log` for every new log line, `end` once the
    execution has finished (after its last lines)."""
    tail: LogTail | None = None
    last: Any = None
    idle = 0
    while True:
        with session_scope(sessions) as s:
            ex = s.get(Execution, execution_id)
            if ex is None:  # deleted with its pipeline
                yield sse("end", {"executionId": execution_id, "status": None})
                return
            read_status(ex, airflow, max_age)
            out = to_out(ex).model_dump(mode="json", by_alias=True)
            submitted = ex.submitted
            tail = tail or LogTail(ex.dag_id, ex.id, None)
        emitted = False
        state = (out["status"], out["progress"], out["tasks"], out["errorMessage"])
        if state != last:
            last, emitted = state, True
            yield sse("run.updated", out)
        if submitted:
            try:
                for entry in tail.poll(airflow, airflow.task_instances(tail.dag_id, tail.run_id)):
                    emitted = True
                    yield sse("log", entry)
            except (AirflowNotFound, AirflowUnavailable):
                pass
        if out["status"] in TERMINAL:
            yield sse("end", {"executionId": execution_id, "status": out["status"]})
            return
        idle = 0 if emitted else idle + 1
        if idle and idle % KEEPALIVE_EVERY == 0:
            yield ": keepalive\n\n"
        time.sleep(poll_seconds)
