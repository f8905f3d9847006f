"""Keeping an execution in step with its Airflow run: the run's and task instances' states into the row,
row and byte counts from the tasks' XComs, the quality checks' results, the failure message; and the row as
the API shows it."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from dag_factory.spec.task_ids import QUALITY_PREFIX, SINKS_PREFIX, SOURCES_PREFIX, quality_dataset
from service.airflow.client import AirflowClient, AirflowNotFound
from service.db import utcnow
from service.errors import ServiceError
from service.executions.logtext import render_event
from service.executions.models import CANCELLED, DONE_TASK_STATES, FAILED, RUN_STATE, TERMINAL, Execution
from service.executions.schemas import ExecutionOut, Metrics, Progress, QualityResultOut, TaskOut


def ts(value: str | None) -> datetime | None:
    """A datetime from one of Airflow's ISO timestamps (None stays None)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


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
    ex.started_at = ts(run.get("start_date")) or ex.started_at
    status = RUN_STATE.get(run.get("state") or "", ex.status)
    if status in TERMINAL:
        ex.finished_at = ts(run.get("end_date")) or utcnow()
        ex.error_message = _failure_message(ex, tis, airflow) if status == FAILED else None
        ex.quality_results = quality_results(ex, airflow, tis)
    else:
        ex.finished_at, ex.error_message, ex.quality_results = None, None, None
    ex.status = status


def _task_out(ti: dict[str, Any]) -> dict[str, Any]:
    duration = ti.get("duration")
    return TaskOut(
        task_id=ti["task_id"],
        state=ti.get("state"),
        try_number=ti.get("try_number") or 0,
        started_at=ts(ti.get("start_date")),
        finished_at=ts(ti.get("end_date")),
        duration_ms=int(duration * 1000) if duration is not None else None,
    ).model_dump(mode="json")


def _progress(tis: list[dict[str, Any]]) -> dict[str, Any]:
    done = sum(1 for t in tis if t.get("state") in DONE_TASK_STATES)
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


def _metrics(ex: Execution) -> Metrics:
    rows = (ex.progress or {}).get("rows") or {}

    def total(group: str, what: str = "rows") -> int | None:
        counts = [r[what] for t, r in rows.items() if t.startswith(group) and r.get(what) is not None]
        return sum(counts) if counts else None

    elapsed = None
    if ex.started_at is not None:
        elapsed = int(((ex.finished_at or utcnow()) - ex.started_at).total_seconds() * 1000)
    return Metrics(
        rows_processed=total(SOURCES_PREFIX),
        rows_written=total(SINKS_PREFIX),
        bytes_processed=total(SOURCES_PREFIX, "bytes"),  # bytes read by the sources (files, objects, tables)
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
    )
