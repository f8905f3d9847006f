from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db import Base, utcnow


class Pipeline(Base):
    __tablename__ = "pipelines"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_pipelines_tenant_name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(100))
    dag_id: Mapped[str] = mapped_column(String(250), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(default=list)
    version: Mapped[str] = mapped_column(String(40))  # the user's semver label
    revision: Mapped[int] = mapped_column(Integer, default=1)  # our counter, one per stored definition
    status: Mapped[str] = mapped_column(String(20), index=True)
    status_detail: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deployed_at: Mapped[datetime | None] = mapped_column()
    # Provenance of a pipeline created from a template (service/templates): id, version, and the
    # {parameters, customizations} it was rendered with (to diff against the template's newest version).
    template_id: Mapped[str | None] = mapped_column(String(150), default=None)
    template_version: Mapped[str | None] = mapped_column(String(40), default=None)
    template_inputs: Mapped[dict[str, Any] | None] = mapped_column(default=None)

    versions: Mapped[list[PipelineVersion]] = relationship(
        back_populates="pipeline", cascade="all, delete-orphan", order_by="PipelineVersion.revision"
    )


class PipelineVersion(Base):
    __tablename__ = "pipeline_versions"
    __table_args__ = (UniqueConstraint("pipeline_id", "revision", name="uq_pipeline_versions_revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(40))
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(default=list)
    definition: Mapped[dict[str, Any]] = mapped_column()
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    pipeline: Mapped[Pipeline] = relationship(back_populates="versions")
