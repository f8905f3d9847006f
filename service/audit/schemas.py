from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from service.schemas import ApiModel


class AuditEntryOut(ApiModel):
    audit_id: int = Field(description="increasing: a later entry has a larger id")
    tenant_id: str
    actor: str = Field(description="who: the JWT's sub")
    action: str = Field(description="create, update, delete, execute, cancel, retry, test, enable, disable, ...")
    resource_type: str = Field(description="pipeline, execution, schedule, connection, template, budget, ...")
    resource_id: str
    request_id: str | None = Field(description="the X-Request-ID of the request that made the change")
    at: datetime
    before: dict[str, Any] | None = Field(description="the definition before the change (never a secret)")
    after: dict[str, Any] | None = Field(description="the definition after the change (never a secret)")
    details: dict[str, Any] | None = Field(description="what else the action carried (an execution's pipeline...)")
