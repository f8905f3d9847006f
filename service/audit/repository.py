from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit.models import AuditEntry
from service.db import page


@dataclass(frozen=True)
class AuditFilter:
    resource_type: str | None = None
    resource_id: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def list_page(
    session: Session, tenant_id: str, wanted: AuditFilter, *, offset: int, limit: int
) -> tuple[Sequence[AuditEntry], int]:
    """The tenant's entries, newest first (`at`, then the id: entries of one transaction may share a time)."""
    stmt = select(AuditEntry).where(AuditEntry.tenant_id == tenant_id)
    if wanted.resource_type is not None:
        stmt = stmt.where(AuditEntry.resource_type == wanted.resource_type)
    if wanted.resource_id is not None:
        stmt = stmt.where(AuditEntry.resource_id == wanted.resource_id)
    if wanted.actor is not None:
        stmt = stmt.where(AuditEntry.actor == wanted.actor)
    if wanted.action is not None:
        stmt = stmt.where(AuditEntry.action == wanted.action)
    if wanted.since is not None:
        stmt = stmt.where(AuditEntry.at >= wanted.since)
    if wanted.until is not None:
        stmt = stmt.where(AuditEntry.at < wanted.until)
    return page(session, stmt.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()), offset=offset, limit=limit)
