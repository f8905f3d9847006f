"""Background loops of one service process: publish pending pipelines, submit queued executions, and
reconcile running executions with Airflow. Each loop wakes on its interval or when a request commits
work for it; all of them are safe to run in several replicas (conditional updates, SKIP LOCKED)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import State

from service.airflow.client import AirflowClient
from service.connections.service import sync_pending
from service.cost.service import settle_step
from service.db import session_scope, utcnow
from service.errors import AirflowUnavailable, ServiceError
from service.executions import repository as execution_repo
from service.executions import service as executions
from service.executions.cache import StatusRefresh
from service.executions.models import Execution
from service.executions.sync import refresh, refresh_active
from service.lineage.forwarding import Forwarder
from service.monitoring import rollup
from service.monitoring.delivery import Deliverer
from service.monitoring.service import conditions_step
from service.pipelines.publisher import Publisher
from service.schedules.imports import import_scheduled_runs
from service.secrets import SecretsBackend, Vault
from service.workflows.service import deliver_pending as deliver_approvals

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
            except (OperationalError, InterfaceError) as exc:  # the database is down or restarting
                log.warning("%s: the database is unavailable (%s)", self.name, type(exc.orig or exc).__name__)
            except Exception:
                log.exception("%s step failed", self.name)
            self.wake.wait(self.interval)


def dispatch_step(sessions: sessionmaker[Session], airflow: AirflowClient) -> None:
    down: AirflowUnavailable | None = None
    with session_scope(sessions) as s:
        for ex, pipeline in execution_repo.pending_submissions(s):
            if executions.ready_to_submit(s, ex, pipeline):
                try:
                    executions.submit(ex, airflow)
                except AirflowUnavailable as exc:
                    down = exc  # keep the attempt on record (the status shows why it waits); retry next tick
                    break
    if down is not None:
        raise down


def reconcile_step(sessions: sessionmaker[Session], airflow: AirflowClient) -> None:
    """Bring every submitted, unfinished execution in step with its Airflow run (in a batch). At start-up this
    is what picks up runs that finished or failed while the service was down."""
    with session_scope(sessions) as s:
        refresh_active(s, airflow)


def _reconcile_one(sessions: sessionmaker[Session], airflow: AirflowClient, execution_id: str, *, reopen: bool) -> None:
    with session_scope(sessions) as s:
        # Another replica holding the row is reconciling it right now: skip rather than repeat its calls.
        ex = s.scalars(
            select(Execution).where(Execution.id == execution_id).with_for_update(skip_locked=True)
        ).one_or_none()
        if ex is None:
            return
        try:
            refresh(ex, airflow, reopen=reopen)
        except AirflowUnavailable:
            raise
        except ServiceError as exc:
            log.warning("reconcile %s: %s", execution_id, exc.message)


class ClearedRunsWatch:
    """Finds runs that Airflow re-ran behind the service's back (cleared in the Airflow UI or API, also while
    the service was down) and reopens their finished executions; records the runs that the pipelines'
    schedules started as executions. One Airflow call per tick: the runs of every DAG (`~`) updated since
    the previous look."""

    OVERLAP = timedelta(seconds=30)  # tolerates clock skew between the service and Airflow

    def __init__(self, sessions: sessionmaker[Session], airflow: AirflowClient):
        self.sessions, self.airflow = sessions, airflow
        self.since: datetime | None = None

    def _start(self) -> datetime:
        # Where the service (any replica) last wrote execution state: what changed after it was missed.
        with session_scope(self.sessions) as s:
            last = s.scalar(select(func.max(Execution.updated_at)))
        return (last or utcnow()) - self.OVERLAP

    def step(self) -> None:
        since = self.since or self._start()
        looked_at = utcnow()
        runs = self.airflow.runs_updated_since(since.isoformat())
        with session_scope(self.sessions) as s:
            reopened = execution_repo.reopened_in_airflow(s, runs)
        with session_scope(self.sessions) as s:  # runs of the pipelines' schedules become executions
            for execution_id in import_scheduled_runs(s, self.airflow, runs):
                log.info("scheduled run %s recorded as an execution", execution_id)
        for execution_id in reopened:
            log.info("execution %s was re-run in Airflow: following it again", execution_id)
            _reconcile_one(self.sessions, self.airflow, execution_id, reopen=True)
        self.since = looked_at - self.OVERLAP


def connections_step(
    sessions: sessionmaker[Session], airflow: AirflowClient, vault: Vault, secrets: SecretsBackend
) -> None:
    """Connection changes that did not reach Airflow inline (service.connections.service.materialise)."""
    with session_scope(sessions) as s:
        sync_pending(s, airflow, vault, secrets)


def approvals_step(sessions: sessionmaker[Session], airflow: AirflowClient) -> None:
    """Decided approval gates whose answer Airflow refused or was not ready for (service.workflows)."""
    with session_scope(sessions) as s:
        deliver_approvals(s, airflow)


def make_workers(state: State, interval: float) -> list[Worker]:
    """The loops of one process, over what service.main installed on app.state."""
    publisher: Publisher = state.publisher
    sessions: sessionmaker[Session] = state.sessions
    airflow: AirflowClient = state.airflow
    status: StatusRefresh = state.status_refresh
    forwarder: Forwarder = state.lineage_forwarder
    deliverer: Deliverer = state.alert_deliverer
    return [
        Worker("connections", lambda: connections_step(sessions, airflow, state.vault, state.secrets), interval),
        Worker("publisher", publisher.run_pending, interval),
        Worker("dispatcher", lambda: dispatch_step(sessions, airflow), interval),
        # The same batch as status reads run (and share with them: one at a time per process).
        # Every PIPELINE_RECONCILE_INTERVAL_SECONDS (1 s): a tick without unfinished runs is one SELECT; with
        # some, one Airflow call for all of them. A failed run is seen (and alerted on) within about a second.
        Worker("reconciler", lambda: status.refresh_active(airflow), state.settings.reconcile_interval_seconds),
        Worker("cleared-runs", ClearedRunsWatch(sessions, airflow).step, max(interval, 10.0)),
        # Accepted OpenLineage events to PIPELINE_OPENLINEAGE_FORWARD_URL (idle when unset); woken per event.
        Worker("lineage-forwarder", forwarder.step, interval),
        # The cost of finished runs, stored once their late OpenLineage events are in (month sums read it).
        Worker("cost", lambda: settle_step(sessions, state.settings.cost_rate_card), max(interval, 10.0)),
        # Alert webhooks from the durable queue; woken after each commit that queued a delivery.
        Worker("alert-deliveries", deliverer.step, interval),
        # SLA and budget alert conditions.
        Worker(
            "alert-conditions",
            lambda: conditions_step(sessions, state.settings.cost_rate_card),
            state.settings.alert_check_interval_seconds,
        ),
        # Whole past days of executions aggregated per pipeline, for the metrics over long periods.
        Worker("metrics-rollup", lambda: rollup.step(sessions), max(interval, 30.0)),
        # Approval decisions to Airflow's human-in-the-loop tasks when the request could not hand them over.
        Worker("approvals", lambda: approvals_step(sessions, airflow), max(interval, 2.0)),
    ]
