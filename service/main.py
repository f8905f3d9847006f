"""The FastAPI application: wiring of settings, database, Airflow client and background workers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from service.airflow.client import AirflowClient
from service.airflow_management.router import router as airflow_management_router
from service.audit.request_id import RequestId
from service.audit.router import router as audit_router
from service.config import Settings, get_settings
from service.connections.router import router as connections_router
from service.connections.service import ConnectionUsers, network_policy
from service.cost import service as cost
from service.cost.router import router as cost_router
from service.db import make_engine, migrate
from service.errors import ServiceError, install_error_handlers
from service.executions import events as execution_events
from service.executions.cache import StatusCache, StatusRefresh
from service.executions.fastpath import StatusFastPath
from service.executions.router import router as executions_router
from service.lineage.forwarding import Forwarder
from service.lineage.ingest import EventWriter
from service.lineage.ingest_router import LineageFastPath
from service.lineage.ingest_router import router as lineage_ingest_router
from service.lineage.router import router as lineage_router
from service.monitoring import delivery as alert_delivery
from service.monitoring import service as alerts
from service.monitoring.metrics_router import router as metrics_router
from service.monitoring.router import router as alerts_router
from service.observability import Metrics, RequestMetrics
from service.openapi import install_openapi
from service.pipelines import dagfile
from service.pipelines import service as pipelines
from service.pipelines.publisher import Publisher
from service.pipelines.router import router as pipelines_router
from service.schedules import service as schedules
from service.schedules.router import router as schedules_router
from service.secrets import Vault
from service.secrets import make_backend as make_secrets_backend
from service.templates import service as templates
from service.templates.router import provenance_router as template_provenance_router
from service.templates.router import router as templates_router
from service.workers import make_workers
from service.workflows.router import router as workflows_router

log = logging.getLogger("service")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrate(settings.sqlalchemy_url)
        dagfile.ensure_sentinel(app.state.publisher.store)
        workers = make_workers(app.state, settings.background_interval_seconds)
        app.state.workers = workers
        if settings.background_tasks:
            for w in workers:
                w.start()
        yield
        for w in workers:
            if settings.background_tasks:
                w.stop()
        app.state.lineage_writer.stop()
        app.state.alert_deliverer.close()
        app.state.lineage_forwarder.close()
        app.state.airflow.close()
        app.state.engine.dispose()

    app = FastAPI(
        title="Pipeline Service",
        version="0.1.0",
        description="Data pipelines defined in JSON, run by Apache Airflow 3.",
        lifespan=lifespan,
    )
    _install_state(app, settings)

    def wake_workers() -> None:
        for w in app.state.workers:
            w.wake.set()

    app.state.wake_workers = wake_workers

    def wake_forwarder() -> None:  # after each stored event: only this loop, not all of them
        for w in app.state.workers:
            if w.name == "lineage-forwarder":
                w.wake.set()

    app.state.wake_forwarder = wake_forwarder
    app.state.publisher.on_published = wake_workers
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(StatusFastPath)
    app.add_middleware(LineageFastPath)  # POST /api/v1/lineage, Airflow's OpenLineage events
    app.add_middleware(RequestId)  # X-Request-ID on every answer (the fast paths' too), audit entries carry it
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)  # last: outermost, the fast paths counted too
    _include_routers(app)
    _install_health(app, settings)
    _install_metrics(app)
    return app


def _install_metrics(app: FastAPI) -> None:
    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        summary="Prometheus metrics (text exposition format; no authentication, no tenant data)",
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "the exposition"}},
    )
    def metrics(request: Request) -> Response:
        # No authentication, like /health: the labels carry route templates and statuses, never tenant data.
        return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _install_health(app: FastAPI, settings: Settings) -> None:
    @app.get("/health", tags=["health"])
    def health(request: Request) -> dict[str, Any]:
        db: dict[str, Any] = {"status": "up"}
        try:
            with request.app.state.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - health reports, it does not raise
            db = {"status": "down", "error": type(exc).__name__}
        try:
            airflow: dict[str, Any] = {
                "status": "up",
                "url": settings.airflow_url,
                **request.app.state.airflow.health(),
            }
        except ServiceError as exc:
            airflow = {"status": "down", "url": settings.airflow_url, "error": exc.message}
        ok = db["status"] == "up" and airflow["status"] == "up"
        return {"status": "ok" if ok else "degraded", "database": db, "airflow": airflow}


def _install_state(app: FastAPI, settings: Settings) -> None:
    """What requests and workers share: database, keys, Airflow client, publisher, status cache."""
    engine = make_engine(settings.sqlalchemy_url)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessionmaker(engine, expire_on_commit=False)
    app.state.jwt_secret = settings.resolved_jwt_secret()
    app.state.jwt_audience = settings.jwt_audience
    app.state.openlineage_api_key = settings.resolved_openlineage_api_key()
    app.state.lineage_forwarder = Forwarder(app.state.sessions, settings)
    app.state.lineage_writer = EventWriter(
        app.state.sessions,
        forward=lambda: bool(settings.openlineage_forward_url),
        on_forwardable=lambda: app.state.wake_forwarder(),
    )
    app.state.vault = Vault(settings.resolved_encryption_key())
    app.state.secrets = make_secrets_backend(settings)
    app.state.airflow = AirflowClient(
        settings.airflow_url or "", settings.airflow_username, settings.resolved_airflow_password
    )
    app.state.publisher = Publisher(
        settings, app.state.airflow, app.state.sessions, timetable=schedules.timetable_entries
    )
    _link_features(app)
    app.state.workers = []
    app.state.status_cache = StatusCache()  # this process's status bodies (service.executions.fastpath too)
    app.state.status_refresh = StatusRefresh(app.state.sessions)
    app.state.metrics = Metrics(app.state)  # GET /metrics: this app's own registry
    _install_alert_delivery(app, settings)


def _install_alert_delivery(app: FastAPI, settings: Settings) -> None:
    """The sender of alert webhooks (the `alert-deliveries` worker), woken after each commit that queued one."""
    app.state.alert_deliverer = alert_delivery.Deliverer(
        app.state.sessions,
        app.state.vault,
        app.state.metrics,
        policy=network_policy(settings),
        timeout_seconds=settings.alert_delivery_timeout_seconds,
        max_attempts=settings.alert_delivery_max_attempts,
    )

    def wake() -> None:
        for w in app.state.workers:
            if w.name == "alert-deliveries":
                w.wake.set()

    alert_delivery.register_waker(app.state.engine, wake)


def _link_features(app: FastAPI) -> None:
    """Features import each other in one direction only (pyproject.toml, [tool.importlinter]); what a lower one
    needs from a higher one is handed to it here (the publisher gets the schedules' timetable above)."""
    template_link: pipelines.TemplateLink = templates  # a pipeline created from a template: controls, provenance
    connection_users: ConnectionUsers = pipelines.connection_users  # a connection in use stays
    app.state.template_link = template_link
    app.state.connection_users = connection_users
    # Executing checks the monthly budgets (cost builds on executions).
    app.state.budget_check = cost.budget_check(app.state.settings)
    # Alerts about runs are raised and resolved in the transaction that stores a finished status.
    execution_events.on_finished(alerts.on_execution_finished)


def _include_routers(app: FastAPI) -> None:
    # Fixed paths first: /v1/pipelines/{pipelineId} would otherwise swallow /v1/pipelines/connections.
    # POST /api/v1/lineage (Airflow's OpenLineage transport, 2-3 events per task): first, so that its requests
    # are not matched against every other route before their own.
    app.include_router(lineage_ingest_router)
    app.include_router(connections_router)
    app.include_router(executions_router)
    app.include_router(cost_router)  # /v1/pipelines/executions/{id}/cost and /v1/pipelines/{id}/cost|budget
    app.include_router(schedules_router)  # /v1/pipelines/schedules/...: before /{pipeline_id}
    app.include_router(templates_router)  # /v1/pipelines/templates/...: before /{pipeline_id}
    app.include_router(template_provenance_router)
    app.include_router(lineage_router)  # /v1/pipelines/{id}/lineage, /v1/lineage/datasets
    app.include_router(alerts_router)  # /v1/pipelines/monitoring/alerts|webhooks: before /{pipeline_id}
    app.include_router(metrics_router)  # GET /v1/pipelines/monitoring/metrics: before /{pipeline_id}
    app.include_router(workflows_router)  # /v1/pipelines/workflows/...: before /{pipeline_id}
    app.include_router(pipelines_router)
    app.include_router(airflow_management_router)
    app.include_router(audit_router)  # GET /v1/audit-logs
