from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.schemas import ApiModel


class TriggerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conf: dict[str, Any] = Field(default_factory=dict, description="the run's conf: values of the DAG's params")
    note: str | None = Field(default=None, max_length=1000)


class DagOut(ApiModel):
    dag_id: str
    dag_display_name: str | None = None
    description: str | None = None
    is_paused: bool | None = None
    is_stale: bool | None = None
    has_import_errors: bool | None = None
    tags: list[str] = Field(default_factory=list)
    last_parsed_time: datetime | None = None
    next_dagrun_run_after: datetime | None = None
    max_active_runs: int | None = None


class DagRunOut(ApiModel):
    dag_id: str
    run_id: str
    state: str | None
    run_type: str | None = None
    run_after: datetime | None = None
    queued_at: datetime | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    duration_ms: int | None = None
    conf: dict[str, Any] | None = None
    note: str | None = None
    triggered_by: str | None = None


class DagRunsOut(ApiModel):
    dag_id: str
    runs: list[DagRunOut]
    total: int


class TaskInstanceOut(ApiModel):
    task_id: str
    task_display_name: str | None = None
    map_index: int = -1
    state: str | None
    try_number: int
    operator: str | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    duration_ms: int | None = None


class TaskInstancesOut(ApiModel):
    dag_id: str
    run_id: str
    tasks: list[TaskInstanceOut]


class TaskLogsOut(ApiModel):
    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    lines: list[str]
