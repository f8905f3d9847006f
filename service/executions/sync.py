"""Keeping an execution in step with its Airflow run: the run's and task instances' states into the row, the
quality checks' results, the failure message; and the row as the API shows it (with the rows and bytes the
lineage receiver summed from the run's OpenLineage events)."""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dag_factory.spec.task_ids import QUALITY_PREFIX, approval_gate, quality_dataset
from service.airflow.client import AirflowClient, AirflowNotFound
from service.airflow.models import DagRun, TaskInstance
from service.db import utcnow
from service.errors import AirflowUnavailable, ServiceError
from service.executions import events
from service.executions.logtext import render_event
from service.executions.models import (
    CANCELLED,
    DONE_TASK_STATES,
    FAILED,
    RUN_STATE,
    TERMINAL,
    Execution,
    ExecutionTask,
)
from service.executions.schemas import ExecutionOut, Metrics, Progress, QualityResultOut, TaskOut

log = logging.getLogger(__name__)


def refresh(ex: Execution, airflow: AirflowClient, *, reopen: bool = False) -> None:
    """Pull the run's state and its task instances from Airflow: two calls whatever the task count (rows and
    bytes come from the run's OpenLineage events instead: service/lineage/receiver.py).

    `reopen`: also for a finished execution, whose run may have been cleared (re-run) in Airflow since."""
    if not ex.submitted or ex.status == CANCELLED or (ex.status in TERMINAL and not reopen):
        return
    try:
        run = airflow.get_run(ex.dag_id, ex.id)
    except AirflowNotFound:
        previous = ex.status
        ex.status, ex.finished_at = FAILED, utcnow()
        ex.error_message = "the Airflow run no longer exists (the DAG or its run was deleted in Airflow)"
        if previous != FAILED:
            events.finished(Session.object_session(ex), ex, previous)
        return
    apply(ex, run, airflow.task_instances(ex.dag_id, ex.id), airflow)


def refresh_active(session: Session, airflow: AirflowClient) -> None:
    """Bring every submitted, unfinished execution (of every tenant) in step with Airflow in a batch: one call
    for all queued and running runs, then the task instances of each run that is running or changed state; a
    run still queued as it was costs nothing more. An execution whose run is no longer active (it finished,
    or was deleted) is refreshed on its own: that happens once per execution.

    Rows another replica holds (it is refreshing them) are skipped."""
    active = list(
        session.scalars(
            select(Execution)
            .where(Execution.submitted.is_(True), Execution.status.in_(["QUEUED", "RUNNING"]))
            .with_for_update(skip_locked=True)
        )
    )
    if not active:
        return
    runs = airflow.active_runs()
    for ex in active:
        run = runs.get((ex.dag_id, ex.id))
        try:
            if run is None:
                refresh(ex, airflow)
            elif _moved(ex, run):
                apply(ex, run, airflow.task_instances(ex.dag_id, ex.id), airflow)
        except AirflowUnavailable:
            raise
        except ServiceError as exc:
            log.warning("refresh of execution %s: %s", ex.id, exc.message)


def _moved(ex: Execution, run: DagRun) -> bool:
    """Whether an active run's task instances need reading: it runs, or it is not as the row last saw it."""
    return run.state != "queued" or ex.airflow_state != "queued" or not (ex.progress or {}).get("tasks")


def apply(ex: Execution, run: DagRun, tis: list[TaskInstance], airflow: AirflowClient) -> None:
    """The run's state and task instances into the row (with the XCom and log reads a finished task or run
    needs)."""
    previous = ex.progress or {}
    ex.airflow_state = run.state
    ex.progress = {
        **previous,
        "progress": _progress(tis),
        "tasks": [_task_out(t) for t in tis],
        "refreshedAt": utcnow().isoformat(),
    }
    ex.started_at = run.start_date or ex.started_at
    status = RUN_STATE.get(run.state or "", ex.status)
    if status in TERMINAL:
        ex.finished_at = run.end_date or utcnow()
        ex.error_message = _failure_message(ex, tis, airflow) if status == FAILED else None
        ex.quality_results = quality_results(ex, airflow, tis)
    else:
        ex.finished_at, ex.error_message, ex.quality_results = None, None, None
    previous_status, ex.status = ex.status, status
    if status in TERMINAL and status != previous_status:  # finished, or a re-run finished otherwise
        session = Session.object_session(ex)
        _store_tasks(session, ex, tis)
        events.finished(session, ex, previous_status)


def _store_tasks(session: Session | None, ex: Execution, tis: list[TaskInstance]) -> None:
    """The finished run's task instances as rows (replacing those of an earlier finish of a re-run)."""
    if session is None:
        return
    session.execute(delete(ExecutionTask).where(ExecutionTask.execution_id == ex.id))
    session.add_all(
        ExecutionTask(
            execution_id=ex.id,
            task_id=ti.task_id,
            tenant_id=ex.tenant_id,
            pipeline_id=ex.pipeline_id,
            submitted_at=ex.submitted_at,
            state=ti.state,
            try_number=ti.try_number,
            duration_ms=int(ti.duration * 1000) if ti.duration is not None else None,
            started_at=ti.start_date,
            finished_at=ti.end_date,
        )
        for ti in tis
    )


def _task_out(ti: TaskInstance) -> dict[str, Any]:
    return TaskOut(
        task_id=ti.task_id,
        state=ti.state,
        try_number=ti.try_number,
        started_at=ti.start_date,
        finished_at=ti.end_date,
        duration_ms=int(ti.duration * 1000) if ti.duration is not None else None,
        pool=ti.pool,
        queue=ti.queue,
    ).model_dump(mode="json")


def _progress(tis: list[TaskInstance]) -> dict[str, Any]:
    done = sum(1 for t in tis if t.state in DONE_TASK_STATES)
    running = [t.task_id for t in tis if t.state == "running"]
    waiting = [t.task_id for t in tis if t.state in ("queued", "scheduled", "up_for_retry")]
    current = (running or waiting)[0] if running or waiting else None
    total = len(tis)
    return Progress(
        total_tasks=total,
        completed_tasks=done,
        current_task=current,
        percentage=round(100 * done / total) if total else 0,
    ).model_dump(mode="json")


def quality_results(ex: Execution, airflow: AirflowClient, tis: list[TaskInstance]) -> list[dict[str, Any]]:
    """The check results of every quality task that ran, from its XCom return value: one call per quality task,
    made once, when the run has finished. A task whose error-severity check failed pushed its results before
    failing; one that never ran (its sink failed) has none."""
    out: list[dict[str, Any]] = []
    for ti in tis:
        task_id = ti.task_id
        if not task_id.startswith(QUALITY_PREFIX) or ti.state not in ("success", "failed"):
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
        "dataset": raw.get("dataset") or quality_dataset(task_id),
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


def _failure_message(ex: Execution, tis: list[TaskInstance], airflow: AirflowClient) -> str:
    failed = [t for t in tis if t.state == "failed"]
    if not failed:
        return "the Airflow run failed (run timeout, or marked failed in Airflow)"
    first = failed[0]
    reason = ""
    try:
        events = airflow.task_log(ex.dag_id, ex.id, first.task_id, first.try_number or 1)
        errors = [e for e in events if (e.level or "").lower() in ("error", "critical")]
        if errors:
            reason = ": " + render_event(errors[-1], with_time=False)
    except ServiceError:
        pass
    others = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"task '{first.task_id}' failed{others}{reason}"[:2000]


def _metrics(ex: Execution) -> Metrics:
    """Rows and bytes as the run's OpenLineage events reported them (the lineage receiver keeps the three
    columns; no Airflow call here, this is the hot path); the elapsed time from the run's dates."""
    elapsed = None
    if ex.started_at is not None:
        elapsed = int(((ex.finished_at or utcnow()) - ex.started_at).total_seconds() * 1000)
    return Metrics(
        rows_processed=ex.rows_processed,
        rows_written=ex.rows_written,
        bytes_processed=ex.bytes_processed,
        elapsed_ms=elapsed,
    )


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
        budget_override=bool(ex.budget_override),
        waiting_for=waiting_for(ex),
    )


# Airflow's states of a human-in-the-loop task that waits for its answer (3.3: awaiting_input; before: deferred).
WAITING_TASK_STATES = frozenset({"awaiting_input", "deferred"})


def waiting_for(ex: Execution) -> str | None:
    """The approval gate the unfinished run waits on, as its last refresh saw the task instances."""
    if ex.status in TERMINAL:
        return None
    for task in (ex.progress or {}).get("tasks", []):
        gate = approval_gate(str(task.get("task_id") or ""))
        if gate is not None and task.get("state") in WAITING_TASK_STATES:
            return gate
    return None
