"""The alerts feature's queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from service.db import page
from service.errors import NotFound
from service.executions.models import COMPLETED, QUEUED, RUNNING, Execution
from service.monitoring.models import RESOLVED, Alert, AlertDelivery, AlertWebhook
from service.pipelines.models import PipelineVersion

PENDING, DELIVERED, ABANDONED = "PENDING", "DELIVERED", "ABANDONED"


def open_alert(session: Session, tenant_id: str, condition_key: str) -> Alert | None:
    return session.scalars(
        select(Alert).where(
            Alert.tenant_id == tenant_id, Alert.condition_key == condition_key, Alert.status != RESOLVED
        )
    ).first()


def open_alerts_of(session: Session, tenant_id: str, prefix: str) -> Sequence[Alert]:
    """The unresolved alerts whose condition key starts with `prefix` (e.g. all budget alerts of a scope)."""
    return session.scalars(
        select(Alert).where(
            Alert.tenant_id == tenant_id,
            Alert.condition_key.startswith(prefix, autoescape=True),
            Alert.status != RESOLVED,
        )
    ).all()


def list_page(
    session: Session,
    tenant_id: str,
    *,
    severity: str | None,
    status: str | None,
    pipeline_id: str | None,
    alert_type: str | None,
    offset: int,
    limit: int,
) -> tuple[Sequence[Alert], int]:
    stmt: Select[Any] = select(Alert).where(Alert.tenant_id == tenant_id)
    for column, value in (
        (Alert.severity, severity),
        (Alert.status, status),
        (Alert.pipeline_id, pipeline_id),
        (Alert.type, alert_type),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    return page(session, stmt.order_by(Alert.raised_at.desc(), Alert.id.desc()), offset=offset, limit=limit)


def get_alert(session: Session, tenant_id: str, alert_id: str, *, for_update: bool = False) -> Alert:
    stmt = select(Alert).where(Alert.id == alert_id, Alert.tenant_id == tenant_id)
    if for_update:
        stmt = stmt.with_for_update()
    alert = session.scalars(stmt).one_or_none()
    if alert is None:
        raise NotFound(f"alert '{alert_id}' not found")
    return alert


def webhooks(session: Session, tenant_id: str) -> Sequence[AlertWebhook]:
    return session.scalars(
        select(AlertWebhook).where(AlertWebhook.tenant_id == tenant_id).order_by(AlertWebhook.created_at)
    ).all()


def get_webhook(session: Session, tenant_id: str, webhook_id: str) -> AlertWebhook:
    hook = session.scalars(
        select(AlertWebhook).where(AlertWebhook.id == webhook_id, AlertWebhook.tenant_id == tenant_id)
    ).one_or_none()
    if hook is None:
        raise NotFound(f"webhook '{webhook_id}' not found")
    return hook


def deliveries_of(session: Session, tenant_id: str, webhook_id: str, limit: int = 50) -> Sequence[AlertDelivery]:
    return session.scalars(
        select(AlertDelivery)
        .where(AlertDelivery.tenant_id == tenant_id, AlertDelivery.webhook_id == webhook_id)
        .order_by(AlertDelivery.created_at.desc())
        .limit(limit)
    ).all()


def due_deliveries(session: Session, now: datetime, limit: int) -> Sequence[AlertDelivery]:
    """Pending deliveries whose time has come, oldest first, locked (another replica takes the next ones)."""
    return session.scalars(
        select(AlertDelivery)
        .where(AlertDelivery.status == PENDING, AlertDelivery.next_attempt_at <= now)
        .order_by(AlertDelivery.next_attempt_at, AlertDelivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()


def recent_durations(session: Session, ex: Execution, limit: int) -> list[float]:
    """Seconds of the pipeline's last `limit` successful runs before `ex` (start to finish), newest first."""
    rows = session.execute(
        select(Execution.started_at, Execution.submitted_at, Execution.finished_at)
        .where(
            Execution.pipeline_id == ex.pipeline_id,
            Execution.status == COMPLETED,
            Execution.id != ex.id,
            Execution.finished_at.is_not(None),
            Execution.finished_at <= (ex.finished_at or ex.submitted_at),
        )
        .order_by(Execution.finished_at.desc())
        .limit(limit)
    ).all()
    return [(finished - (started or submitted)).total_seconds() for started, submitted, finished in rows if finished]


def unfinished_with_definition(session: Session) -> list[tuple[Execution, dict[str, Any]]]:
    """Every queued or running execution (of every tenant) with the definition of the revision it runs."""
    rows = session.execute(
        select(Execution, PipelineVersion.definition)
        .join(
            PipelineVersion,
            and_(
                PipelineVersion.pipeline_id == Execution.pipeline_id,
                PipelineVersion.revision == Execution.pipeline_revision,
            ),
        )
        .where(or_(Execution.status == QUEUED, Execution.status == RUNNING))
    ).all()
    return [(ex, definition or {}) for ex, definition in rows]
