from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from service.schemas import ApiModel

PRIORITIES = ("LOW", "NORMAL", "HIGH", "CRITICAL")
ENGINES = ("airflow",)


class ExecuteIn(ApiModel):
    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, Any] = Field(default_factory=dict)
    engine_override: str | None = None
    priority: Literal["LOW", "NORMAL", "HIGH", "CRITICAL"] = "NORMAL"


class Progress(ApiModel):
    total_tasks: int = 0
    completed_tasks: int = 0
    current_task: str | None = None
    percentage: int = 0


class TaskOut(ApiModel):
    task_id: str
    state: str | None
    try_number: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None


class ExecutionOut(ApiModel):
    execution_id: str
    pipeline_id: str
    pipeline_revision: int
    status: str
    engine: str
    priority: str
    parameters: dict[str, Any]
    progress: Progress
    tasks: list[TaskOut] = Field(default_factory=list)
    error_message: str | None
    dag_id: str
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    estimated_duration_ms: int | None = None


class LogsOut(ApiModel):
    execution_id: str
    task: str | None
    lines: list[str]
