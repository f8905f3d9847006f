from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import page
from service.schedules.models import Schedule


def get(session: Session, tenant_id: str, schedule_id: str) -> Schedule | None:
    stmt = select(Schedule).where(Schedule.tenant_id == tenant_id, Schedule.id == schedule_id)
    return session.scalars(stmt).one_or_none()


def list_page(
    session: Session, tenant_id: str, *, pipeline_id: str | None, offset: int, limit: int
) -> tuple[Sequence[Schedule], int]:
    stmt = select(Schedule).where(Schedule.tenant_id == tenant_id)
    if pipeline_id:
        stmt = stmt.where(Schedule.pipeline_id == pipeline_id)
    return page(session, stmt.order_by(Schedule.created_at, Schedule.id), offset=offset, limit=limit)


def enabled_for_pipeline(session: Session, pipeline_id: str) -> Sequence[Schedule]:
    """In creation order: a schedule's position is part of its run times (dag_factory.timetables)."""
    stmt = select(Schedule).where(Schedule.pipeline_id == pipeline_id, Schedule.enabled.is_(True))
    return session.scalars(stmt.order_by(Schedule.created_at, Schedule.id)).all()
