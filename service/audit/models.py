"""The audit log: one row per change made through the API, written in the change's own transaction.
Append-only: triggers refuse UPDATE, DELETE (and on PostgreSQL TRUNCATE) (migration 0010)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, utcnow


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_tenant_at", "tenant_id", "at"),
        Index("ix_audit_log_resource", "tenant_id", "resource_type", "resource_id"),
    )

    # BIGINT on PostgreSQL, INTEGER (the rowid) on SQLite: autoincrement on both.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))  # the JWT's sub
    action: Mapped[str] = mapped_column(String(40), index=True)  # create, update, delete, execute, cancel, ...
    resource_type: Mapped[str] = mapped_column(String(40))  # pipeline, execution, connection, alert, ...
    resource_id: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    # Definitions before and after the change (never a secret: connection entries carry no credentials).
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
