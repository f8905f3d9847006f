"""Prometheus metrics of the service: GET /metrics (text exposition format, prometheus-client).

What is measured, and where:
- every HTTP request, by route template, method and status code (`RequestMetrics`, the outermost ASGI
  middleware, so the answers of the two fast paths before FastAPI's routing are counted too);
- executions by status and the depth of each outbox, read from the database when Prometheus scrapes
  (`DatabaseCollector`: one GROUP BY and four COUNTs, nothing kept in memory between scrapes);
- calls to Airflow's REST API (service/airflow/client.py `CallMetrics`, read from the app's client at scrape);
- alert deliveries, by outcome (service/monitoring/delivery.py increments them).

Labels never carry a tenant, a pipeline or an execution id: a route is its template
(`/v1/pipelines/{pipeline_id}`), a path that matches no route is `unmatched`. Each app has its own registry
(tests build many apps in one process).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import State

from service.connections.models import Connection
from service.executions.models import QUEUED, STATUSES, Execution
from service.lineage.ingest_router import PATH as LINEAGE_PATH
from service.lineage.models import LineageEvent
from service.pipelines.models import Pipeline
from service.pipelines.service import CREATED, DEPLOYING

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"  # the route label of a request no route matched (a 404): raw paths never become labels

# Requests answered before FastAPI's routing (service/executions/fastpath.py, service/lineage/ingest_router.py):
# no route is recorded in their scope, so their template is known here (a test compares it with the routes).
FAST_PATHS = (
    ("GET", re.compile(r"^/v1/pipelines/executions/[^/]+$"), "/v1/pipelines/executions/{execution_id}"),
    ("POST", re.compile("^" + re.escape(LINEAGE_PATH) + "$"), LINEAGE_PATH),
)

# From a cached status answered in ~0.1 ms to a publish waiting on Airflow.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ALERT_OUTCOMES = ("delivered", "failed", "abandoned")


class Metrics:
    """One app's metrics and its registry."""

    def __init__(self, state: State) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Histogram(
            "pipeline_http_request_duration_seconds",
            "HTTP requests served, by route template, method and status code",
            ["route", "method", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.alert_deliveries = Counter(
            "pipeline_alert_deliveries",
            "Alert webhook delivery attempts by outcome: delivered (2xx), failed (to be retried), "
            "abandoned (retries exhausted)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ALERT_OUTCOMES:  # present at 0 from the start: rate() and alerts need the series
            self.alert_deliveries.labels(outcome)
        self.registry.register(DatabaseCollector(state))
        self.registry.register(AirflowCallCollector(state))
        self._children: dict[tuple[str, str, int], Any] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        child = self._children.get(key)  # labels() takes a lock and builds a tuple: cached per label set
        if child is None:
            child = self._children[key] = self.requests.labels(route, method, str(status))
        child.observe(seconds)

    def alert_delivered(self) -> None:
        self.alert_deliveries.labels("delivered").inc()

    def alert_delivery_failed(self, *, abandoned: bool = False) -> None:
        self.alert_deliveries.labels("abandoned" if abandoned else "failed").inc()


def route_template(scope: dict[str, Any]) -> str:
    """The template of the route that served the request (Starlette records it in the scope), else a fast
    path's, else `unmatched`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    for method, pattern, template in FAST_PATHS:
        if scope["method"] == method and pattern.match(scope["path"]):
            return template
    return UNMATCHED


class RequestMetrics:
    """ASGI middleware, installed outermost: the time from the request's arrival to its last body byte."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started is answered 500 by Starlette

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(route_template(scope), scope["method"], status, time.perf_counter() - started)


class DatabaseCollector(Collector):
    """Executions by status and outbox depths, counted when Prometheus scrapes (all tenants together)."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "pipeline_metrics_database_up", "1 when the database answered this scrape's queries, else 0"
        )
        try:
            sessions: sessionmaker[Session] = self.state.sessions
            with sessions() as session:
                by_status = count_by_status(session)
                depths = outbox_depths(session)
        except SQLAlchemyError as exc:
            log.warning("metrics: the database did not answer (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        executions = GaugeMetricFamily(
            "pipeline_executions", "Executions stored, by status (all tenants)", labels=["status"]
        )
        for status in STATUSES:
            executions.add_metric([status], by_status.get(status, 0))
        yield executions
        outbox = GaugeMetricFamily(
            "pipeline_outbox_depth",
            "Work accepted but not yet handed on: executions not yet submitted to Airflow, connections not yet "
            "in Airflow, lineage events waiting to be forwarded, pipelines waiting to deploy",
            labels=["outbox"],
        )
        for name, depth in depths.items():
            outbox.add_metric([name], depth)
        yield outbox


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Execution.status, func.count()).group_by(Execution.status)).all()
    return {status: count for status, count in rows}


def outbox_depths(session: Session) -> dict[str, int]:
    def count(*where: Any) -> int:
        return int(session.scalar(select(func.count()).where(*where)) or 0)

    return {
        "executions_unsubmitted": count(Execution.status == QUEUED, Execution.submitted.is_(False)),
        "connections_unsynced": count(Connection.airflow_synced_version < Connection.airflow_version),
        "lineage_unforwarded": count(LineageEvent.forward_pending.is_(True)),
        "pipelines_undeployed": count(Pipeline.status.in_([CREATED, DEPLOYING])),
    }


class AirflowCallCollector(Collector):
    """The Airflow client's call metrics (service/airflow/client.py CallMetrics), read from the client the app
    holds at scrape time."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        airflow = getattr(self.state, "airflow", None)
        if airflow is None:
            return
        yield from airflow.metrics.latency.collect()
        yield from airflow.metrics.errors.collect()
