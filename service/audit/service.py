"""Recording changes in the audit log. Every feature calls `record` inside the transaction of the change it
records (the request's session), so an entry exists exactly when the change does."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from sqlalchemy.orm import Session

from service.audit.models import AuditEntry
from service.auth import Principal

# The request's id (X-Request-ID, or one made up per request); set by the request middleware.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def record(
    session: Session,
    actor: Principal,
    action: str,
    resource_type: str,
    resource_id: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        tenant_id=actor.tenant_id,
        actor=actor.subject,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        request_id=request_id.get(),
        before=before,
        after=after,
        details=details,
    )
    session.add(entry)
    return entry
