from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.pipelines.models import Pipeline, PipelineVersion


def get(session: Session, tenant_id: str, pipeline_id: str) -> Pipeline | None:
    stmt = select(Pipeline).where(Pipeline.tenant_id == tenant_id, Pipeline.id == pipeline_id)
    return session.scalars(stmt).one_or_none()


def by_name(session: Session, tenant_id: str, name: str) -> Pipeline | None:
    stmt = select(Pipeline).where(Pipeline.tenant_id == tenant_id, Pipeline.name == name)
    return session.scalars(stmt).one_or_none()


def list_page(
    session: Session, tenant_id: str, *, status: str | None, tags: list[str], offset: int, limit: int
) -> tuple[Sequence[Pipeline], int]:
    stmt = select(Pipeline).where(Pipeline.tenant_id == tenant_id)
    if status:
        stmt = stmt.where(Pipeline.status == status)
    rows = session.scalars(stmt.order_by(Pipeline.created_at, Pipeline.id)).all()
    if tags:
        # Tags are a JSON list; filtering in Python keeps one query shape for SQLite and PostgreSQL.
        rows = [p for p in rows if set(tags) <= set(p.tags)]
    return rows[offset : offset + limit], len(rows)


def current_version(session: Session, pipeline: Pipeline) -> PipelineVersion:
    stmt = select(PipelineVersion).where(
        PipelineVersion.pipeline_id == pipeline.id, PipelineVersion.revision == pipeline.revision
    )
    return session.scalars(stmt).one()


def version(session: Session, pipeline_id: str, revision: int) -> PipelineVersion | None:
    stmt = select(PipelineVersion).where(
        PipelineVersion.pipeline_id == pipeline_id, PipelineVersion.revision == revision
    )
    return session.scalars(stmt).one_or_none()


def versions(session: Session, pipeline_id: str) -> Sequence[PipelineVersion]:
    stmt = select(PipelineVersion).where(PipelineVersion.pipeline_id == pipeline_id)
    return session.scalars(stmt.order_by(PipelineVersion.revision)).all()


def tenant_definitions(session: Session, tenant_id: str) -> list[tuple[Pipeline, dict]]:
    """Each pipeline of a tenant with its current definition (one query)."""
    stmt = (
        select(Pipeline, PipelineVersion.definition)
        .join(
            PipelineVersion,
            (PipelineVersion.pipeline_id == Pipeline.id) & (PipelineVersion.revision == Pipeline.revision),
        )
        .where(Pipeline.tenant_id == tenant_id)
    )
    return [(p, d) for p, d in session.execute(stmt).all()]


def count(session: Session, tenant_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Pipeline).where(Pipeline.tenant_id == tenant_id)) or 0
