"""GET /v1/audit-logs: the tenant's audit log, admins only. Read-only: no route changes or removes an entry."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from service.audit import repository
from service.audit.schemas import AuditEntryOut
from service.audit.service import ACTIONS, RESOURCE_TYPES
from service.auth import CurrentPrincipal
from service.db import DbSession
from service.errors import Forbidden, ValidationFailed
from service.schemas import Page, PageNumber, PageSize, UtcDateTime

router = APIRouter(prefix="/v1/audit-logs", tags=["audit"])


@router.get("", response_model=Page[AuditEntryOut], response_model_by_alias=True)
def list_audit_log(
    principal: CurrentPrincipal,
    session: DbSession,
    resource: Annotated[str | None, Query(description=f"resource type: {', '.join(RESOURCE_TYPES)}")] = None,
    resource_id: Annotated[str | None, Query(alias="resourceId", max_length=200)] = None,
    actor: Annotated[str | None, Query(description="the JWT sub of who acted", max_length=200)] = None,
    action: Annotated[str | None, Query(description=", ".join(ACTIONS))] = None,
    since: Annotated[UtcDateTime | None, Query(alias="from", description="at or after (ISO 8601, with zone)")] = None,
    until: Annotated[UtcDateTime | None, Query(alias="to", description="before (ISO 8601, with zone)")] = None,
    page: PageNumber = 0,
    size: PageSize = 20,
) -> Page[AuditEntryOut]:
    """Who changed what, newest first (admin only: an editor or viewer gets 403)."""
    if "admin" not in principal.roles:
        raise Forbidden("the audit log is for admins: the admin role is required")
    _one_of("resource", resource, RESOURCE_TYPES)
    _one_of("action", action, ACTIONS)
    _with_zone("from", since)
    _with_zone("to", until)
    if since and until and since > until:
        raise ValidationFailed("from is after to", details=[{"path": "from", "message": "must not be after 'to'"}])
    wanted = repository.AuditFilter(resource, resource_id, actor, action, since, until)
    rows, total = repository.list_page(session, principal.tenant_id, wanted, offset=page * size, limit=size)
    items = [
        AuditEntryOut(
            audit_id=e.id,
            tenant_id=e.tenant_id,
            actor=e.actor,
            action=e.action,
            resource_type=e.resource_type,
            resource_id=e.resource_id,
            request_id=e.request_id,
            at=e.at,
            before=e.before,
            after=e.after,
            details=e.details,
        )
        for e in rows
    ]
    return Page[AuditEntryOut](items=items, total=total, page=page, size=size)


def _one_of(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise ValidationFailed(
            f"{name} must be one of {', '.join(allowed)}",
            details=[{"path": name, "message": f"unknown {name}"}],
        )


def _with_zone(name: str, value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise ValidationFailed(
            f"{name} needs a time zone (e.g. 2026-02-12T00:00:00Z)",
            details=[{"path": name, "message": "time zone required"}],
        )
