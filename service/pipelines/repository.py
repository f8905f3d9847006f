from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, cast, exists, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from service.db import page
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
    dialect = session.get_bind().dialect.name
    for tag in dict.fromkeys(tags):
        stmt = stmt.where(_has_tag(tag, dialect))
    return page(session, stmt.order_by(Pipeline.created_at, Pipeline.id), offset=offset, limit=limit)


def _has_tag(tag: str, dialect: str) -> ColumnElement[bool]:
    """`tag` is in the pipeline's JSON list of tags (jsonb containment on PostgreSQL, json_each on SQLite)."""
    if dialect == "postgresql":
        return cast(Pipeline.tags, JSONB).contains([tag])
    elements = func.json_each(Pipeline.tags).table_valued("value")
    return exists(select(1).select_from(elements).where(elements.c.value == tag))


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


def tenant_definitions(session: Session, tenant_id: str) -> list[tuple[Pipeline, dict[str, Any]]]:
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
