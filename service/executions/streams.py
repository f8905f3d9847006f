"""An execution's task logs: read at once (`logs`) or followed as Server-Sent Events (`follow_logs`), and the
execution's own event stream (`execution_events`: status changes and log lines until it has finished)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.airflow.client import AirflowClient, AirflowNotFound
from service.airflow.models import TaskInstance
from service.db import session_scope
from service.errors import AirflowUnavailable, NotFound, ServiceError, ValidationFailed
from service.executions.cache import StatusRefresh
from service.executions.logtext import readable, render_event
from service.executions.models import DONE_TASK_STATES, TERMINAL, Execution
from service.executions.sync import to_out

KEEPALIVE_EVERY = 15  # polls between SSE comments that keep proxies from closing an idle stream


def _one_task(ex: Execution, tis: list[TaskInstance], task: str) -> TaskInstance:
    """`task` is a full task id (`sinks.daily_transactions`) or, when unambiguous, its last part."""
    exact = [t for t in tis if t.task_id == task]
    matching = exact or [t for t in tis if t.task_id.split(".")[-1] == task]
    if len(matching) == 1:
        return matching[0]
    if matching:
        names = ", ".join(sorted(t.task_id for t in matching))
        raise ValidationFailed(
            f"task '{task}' is ambiguous: use one of {names}", details=[{"path": "task", "message": names}]
        )
    known = ", ".join(sorted(t.task_id for t in tis))
    raise NotFound(f"execution '{ex.id}' has no task '{task}' (tasks: {known})")


def _started(ti: TaskInstance) -> datetime:
    return ti.start_date or datetime.min.replace(tzinfo=UTC)  # not started: first, as before


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
    tis = sorted((t for t in tis if t.try_number > 0), key=_started)
    out: list[str] = []
    for ti in tis:
        events = airflow.task_log(ex.dag_id, ex.id, ti.task_id, ti.try_number)
        prefix = "" if task else f"[{ti.task_id}] "
        out.extend(prefix + render_event(e) for e in events if readable(e))
    return out[-lines:]


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


class LogTail:
    """New log lines of a run since the previous call: each (task, try) remembers how far it was read."""

    def __init__(self, dag_id: str, run_id: str, task: str | None):
        self.dag_id, self.run_id, self.task = dag_id, run_id, task
        self.read: dict[tuple[str, int], int] = {}

    def poll(self, airflow: AirflowClient, tis: list[TaskInstance]) -> list[dict[str, Any]]:
        out = []
        for ti in sorted(tis, key=_started):
            attempt = ti.try_number
            if attempt == 0 or ti.state in (None, "scheduled", "queued"):
                continue
            key = (ti.task_id, attempt)
            events = [e for e in airflow.task_log(self.dag_id, self.run_id, *key) if readable(e)]
            for event in events[self.read.get(key, 0) :]:
                out.append({"task": ti.task_id, "tryNumber": attempt, "line": render_event(event)})
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
        if tis and all(t.state in DONE_TASK_STATES for t in tis):
            yield sse("end", {"executionId": ex.id, "task": task})
            return
        idle = 0 if new else idle + 1
        if idle and idle % KEEPALIVE_EVERY == 0:
            yield ": keepalive\n\n"
        time.sleep(poll_seconds)


def execution_events(
    sessions: sessionmaker[Session],
    airflow: AirflowClient,
    status: StatusRefresh,
    execution_id: str,
    max_age: float,
    poll_seconds: float,
) -> Iterator[str]:
    """`run.updated` whenever status, progress or tasks change, `log` for every new log line, `end` once the
    execution has finished (after its last lines)."""
    tail: LogTail | None = None
    last: Any = None
    idle = 0
    while True:
        seen = _snapshot(sessions, status, execution_id, max_age)
        if seen is not None and seen[3] and status.refresh_active(airflow):
            seen = _snapshot(sessions, status, execution_id, max_age)  # in a new transaction: the batch committed
        if seen is None:  # deleted with its pipeline
            yield sse("end", {"executionId": execution_id, "status": None})
            return
        out, dag_id, submitted, _ = seen
        tail = tail or LogTail(dag_id, execution_id, None)
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


def _snapshot(
    sessions: sessionmaker[Session], status: StatusRefresh, execution_id: str, max_age: float
) -> tuple[dict[str, Any], str, bool, bool] | None:
    """(the execution as the API shows it, its DAG id, whether it was submitted, whether it is stale), or None
    once it is deleted."""
    with session_scope(sessions) as s:
        ex = s.get(Execution, execution_id)
        if ex is None:
            return None
        out = to_out(ex).model_dump(mode="json", by_alias=True)
        return out, ex.dag_id, ex.submitted, status.stale(ex, max_age)
