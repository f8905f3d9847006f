"""Executions: recorded first (outbox), submitted to Airflow as a DAG run whose run_id is the execution id,
and kept in step with Airflow's run and task-instance states."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dag_factory.exceptions import DefinitionError
from dag_factory.spec import TEARDOWN_TASK_ID, validate_parameters
from service.airflow.client import AirflowClient, AirflowConflict, AirflowNotFound
from service.auth import Principal
from service.db import utcnow
from service.errors import AirflowUnavailable, Conflict, NotFound, ServiceError, ValidationFailed
from service.executions.models import Execution
from service.executions.schemas import ENGINES, ExecuteIn, ExecutionOut, Progress, TaskOut
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


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def get_or_404(session: Session, tenant_id: str, execution_id: str) -> Execution:
    ex = session.scalars(
        select(Execution).where(Execution.tenant_id == tenant_id, Execution.id == execution_id)
    ).one_or_none()
    if ex is None:
        raise NotFound(f"execution '{execution_id}' not found")
    return ex


def execute(session: Session, principal: Principal, pipeline_id: str, body: ExecuteIn) -> Execution:
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
        progress={},
    )
    session.add(ex)
    session.flush()
    return ex


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
        .order_by(Execution.submitted_at)
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
        airflow.trigger(ex.dag_id, ex.id, ex.parameters, note=f"pipeline-service execution {ex.id}")
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


def refresh(ex: Execution, airflow: AirflowClient) -> None:
    """Pull the run's state and its task instances from Airflow: two calls, whatever the task count."""
    if ex.status in TERMINAL or not ex.submitted:
        return
    try:
        run = airflow.get_run(ex.dag_id, ex.id)
    except AirflowNotFound:
        ex.status, ex.finished_at = FAILED, utcnow()
        ex.error_message = "the Airflow run no longer exists (the DAG or its run was deleted in Airflow)"
        return
    tis = airflow.task_instances(ex.dag_id, ex.id)
    ex.airflow_state = run.get("state")
    ex.progress = {"progress": _progress(tis), "tasks": [_task_out(t) for t in tis]}
    ex.started_at = _ts(run.get("start_date")) or ex.started_at
    status = _RUN_STATE.get(run.get("state") or "", ex.status)
    if status in TERMINAL:
        ex.finished_at = _ts(run.get("end_date")) or utcnow()
        if status == FAILED:
            ex.error_message = _failure_message(ex, tis, airflow)
    ex.status = status


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
        progress=Progress.model_validate(snapshot.get("progress", {})),
        tasks=[TaskOut.model_validate(t) for t in snapshot.get("tasks", [])],
        error_message=ex.error_message
        or (f"not yet submitted: {ex.last_submit_error}" if ex.last_submit_error else None),
        dag_id=ex.dag_id,
        submitted_at=ex.submitted_at,
        started_at=ex.started_at,
        finished_at=ex.finished_at,
    )


def list_page(
    session: Session, tenant_id: str, *, pipeline_id: str | None, status: str | None, offset: int, limit: int
) -> tuple[Sequence[Execution], int]:
    from sqlalchemy import func

    stmt = select(Execution).where(Execution.tenant_id == tenant_id)
    if pipeline_id:
        stmt = stmt.where(Execution.pipeline_id == pipeline_id)
    if status:
        stmt = stmt.where(Execution.status == status)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Execution.submitted_at.desc(), Execution.id).offset(offset).limit(limit)).all()
    return rows, total


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
