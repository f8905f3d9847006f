"""The alerts and webhooks API's shapes (camelCase out, both spellings in)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from service.schemas import ApiModel, Prose

Severity = Literal["CRITICAL", "WARNING", "INFO"]
WebhookName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
WebhookUrl = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^https?://[^\s\x00-\x1f\x7f]+$")]
WebhookSecret = Annotated[str, Field(min_length=16, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$")]


class AlertOut(ApiModel):
    alert_id: str
    pipeline_id: str | None
    execution_id: str | None
    severity: str = Field(description="CRITICAL | WARNING | INFO")
    status: str = Field(description="OPEN | ACKNOWLEDGED | RESOLVED")
    type: str = Field(
        description="RUN_FAILED | QUALITY_WARNING | DURATION_ANOMALY | SLA_MISSED | BUDGET_80 | BUDGET_100"
    )
    message: str
    raised_at: datetime
    acknowledged_by: str | None = Field(description="the `sub` of the token that acknowledged it")
    acknowledged_at: datetime | None
    acknowledged_note: str | None
    resolved_at: datetime | None


class AcknowledgeIn(ApiModel):
    model_config = ConfigDict(extra="forbid")

    note: Annotated[Prose, Field(max_length=2000)] | None = None


class WebhookIn(ApiModel):
    model_config = ConfigDict(extra="forbid")

    name: WebhookName
    url: WebhookUrl = Field(description="http or https; refused when the network policy refuses its host")
    secret: WebhookSecret = Field(description="signs each delivery (HMAC-SHA256); stored encrypted, never returned")
    severities: list[Severity] | None = Field(default=None, min_length=1, description="null: every severity")
    enabled: bool = True


class WebhookPatch(ApiModel):
    """PATCH: the fields given replace the stored ones; `secret` rotates the key."""

    model_config = ConfigDict(extra="forbid")

    name: WebhookName | None = None
    url: WebhookUrl | None = None
    secret: WebhookSecret | None = None
    severities: list[Severity] | None = Field(default=None, min_length=1)
    enabled: bool | None = None


class WebhookOut(ApiModel):
    webhook_id: str
    name: str
    url: str
    secret_set: bool = Field(description="always true: the secret itself is never returned")
    severities: list[str] | None
    enabled: bool
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class DeliveryOut(ApiModel):
    delivery_id: str
    alert_id: str
    event: str
    status: Literal["PENDING", "DELIVERED", "ABANDONED"]
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    response_status: int | None
    created_at: datetime
    delivered_at: datetime | None
