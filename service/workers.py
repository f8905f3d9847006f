"""Background loops of one service process: publish pending pipelines, submit queued executions, and
reconcile running executions with Airflow. Each loop wakes on its interval or when a request commits
work for it; all of them are safe to run in several replicas (conditional updates, SKIP LOCKED)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.airflow.client import AirflowClient
from service.db import session_scope
from service.errors import AirflowUnavailable, ServiceError
from service.executions import service as executions
from service.executions.models import Execution
from service.pipelines.publisher import Publisher

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, name: str, step: Callable[[], object], interval: float):
        self.name, self.step, self.interval = name, step, interval
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.wake.clear()
            try:
                self.step()
            except AirflowUnavailable as exc:
                log.info("%s: %s", self.name, exc.message)
            except Exception:
                log.exception("%s step failed", self.name)
            self.wake.wait(self.interval)


def dispatch_step(sessions: sessionmaker[Session], airflow: AirflowClient) -> None:
    with session_scope(sessions) as s:
        for ex, pipeline in executions.pending_submissions(s):
            if executions.ready_to_submit(s, ex, pipeline):
                executions.submit(ex, airflow)  # AirflowUnavailable propagates: retry next tick


def reconcile_step(sessions: sessionmaker[Session], airflow: AirflowClient) -> None:
    with session_scope(sessions) as s:
        ids = s.scalars(
            select(Execution.id).where(Execution.submitted.is_(True), Execution.status.in_(["QUEUED", "RUNNING"]))
        ).all()
    for execution_id in ids:
        with session_scope(sessions) as s:
            ex = s.get(Execution, execution_id)
            if ex is not None:
                try:
                    executions.refresh(ex, airflow)
                except AirflowUnavailable:
                    raise
                except ServiceError as exc:
                    log.warning("reconcile %s: %s", execution_id, exc.message)


def make_workers(
    publisher: Publisher, sessions: sessionmaker[Session], airflow: AirflowClient, interval: float
) -> list[Worker]:
    return [
        Worker("publisher", publisher.run_pending, interval),
        Worker("dispatcher", lambda: dispatch_step(sessions, airflow), interval),
        Worker("reconciler", lambda: reconcile_step(sessions, airflow), max(interval, 5.0)),
    ]
