from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from connections.types import PlainStr
from service.schemas import ApiModel


class ScheduleIn(ApiModel):
    """Create (POST, pipelineId required) or replace (PUT: pipelineId may be left out, cannot change)."""

    model_config = ConfigDict(extra="forbid")

    pipeline_id: PlainStr | None = Field(default=None, max_length=64)
    cron_expression: PlainStr = Field(max_length=120, description="5-field cron, read in `timezone`; or @daily etc.")
    timezone: PlainStr = Field(default="UTC", max_length=64, description="IANA name, e.g. America/New_York")
    parameters: dict[str, Any] = Field(default_factory=dict, description="checked against the pipeline's parameters")
    enabled: bool = True


class ScheduleOut(ApiModel):
    schedule_id: str
    pipeline_id: str
    cron_expression: str
    timezone: str
    parameters: dict[str, Any]
    enabled: bool
    description: str = Field(description="the cron in words, with its time zone")
    next_run_at: datetime | None = Field(description="next fire time in UTC; null when disabled")
    next_run_at_local: datetime | None = Field(description="the same instant in the schedule's time zone")
    created_by: str | None
    created_at: datetime
    updated_at: datetime
