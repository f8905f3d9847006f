from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

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
    """A cron schedule (type `cron`), or a pipeline's data schedule (type `datasets`): its definition's
    `schedule.onDatasets`, listed here read-only (change it in the definition; PUT, PATCH and DELETE of it
    answer 409). Its id is `data-<pipelineId>`, and the runs it starts are executions with that scheduleId."""

    schedule_id: str
    pipeline_id: str
    type: Literal["cron", "datasets"] = Field(
        default="cron", description="cron: runs at cron times; datasets: runs when other pipelines wrote datasets"
    )
    on_datasets: list[str] | None = Field(
        default=None,
        description="type datasets: the datasets (fqn as the lineage API names them) that, once all written by "
        "the tenant's other pipelines since its last such run, start a run (Airflow asset-triggered scheduling)",
    )
    cron_expression: str | None = Field(description="type cron: 5-field cron or @daily etc.; null for datasets")
    timezone: str | None = Field(description="type cron: IANA time zone; null for datasets")
    parameters: dict[str, Any] = Field(description="the runs' parameters (type datasets: the pipeline's defaults)")
    enabled: bool
    description: str = Field(description="the cron in words, with its time zone; or the datasets that start a run")
    next_run_at: datetime | None = Field(description="next fire time in UTC; null when disabled (and for datasets)")
    next_run_at_local: datetime | None = Field(description="the same instant in the schedule's time zone")
    created_by: str | None
    created_at: datetime
    updated_at: datetime
