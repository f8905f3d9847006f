"""Recording changes in the audit log. Every feature calls `record` inside the transaction of the change it
records (the request's session), so an entry exists exactly when the change does: a request that fails rolls
its entry back with everything else. Background work (the publisher, the dispatcher, sync) acts for no one and
records nothing; what it changes follows from a recorded request (a create, an execute)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from sqlalchemy.orm import Session

from service.audit.models import AuditEntry
from service.auth import Principal

# The request's id (X-Request-ID, or one made up per request); set by service.audit.request_id.RequestId.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# What an entry's `action` and `resourceType` may be: the audit log's filters accept exactly these (a 400
# names the parameter otherwise). A feature that records a new kind adds it here.
ACTIONS = (
    "create",
    "update",
    "delete",
    "execute",
    "cancel",
    "retry",
    "test",
    "enable",
    "disable",
    "trigger",
    "set",
    "acknowledge",  # an alert (service.monitoring)
    "approval",  # an answer to an approval gate, on the execution (service.workflows)
    "pause",  # an Airflow DAG through the passthrough (service.airflow_management)
    "unpause",
)
RESOURCE_TYPES = (
    "pipeline",
    "execution",
    "schedule",
    "connection",
    "template",
    "budget",
    "alert",
    "webhook",
    "airflow_dag",  # the Airflow passthrough's trigger, pause and unpause: the change is in Airflow, the entry
    # is written after Airflow accepted it
)


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
    """Add the entry to the change's transaction (flushed with it; never on its own commit)."""
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
