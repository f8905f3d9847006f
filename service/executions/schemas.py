from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, StrictBool

from connections.types import PlainStr
from service.schemas import ApiModel

PRIORITIES = ("LOW", "NORMAL", "HIGH", "CRITICAL")
ENGINES = ("airflow",)


class ExecuteIn(ApiModel):
    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, Any] = Field(default_factory=dict)
    engine_override: PlainStr | None = Field(default=None, max_length=20)
    priority: Literal["LOW", "NORMAL", "HIGH", "CRITICAL"] = "NORMAL"
    override_budget: StrictBool = Field(
        default=False, description="admin only: run although a monthly budget is reached (recorded on the execution)"
    )


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
    pool: str | None = Field(None, description="the Airflow pool it ran in (the cost rate card may price it)")
    queue: str | None = Field(None, description="the executor queue it ran on (the cost rate card may price it)")


class Metrics(ApiModel):
    rows_processed: int | None = Field(
        None,
        description="rows the sources staged: the rowCount of the source tasks' OpenLineage output statistics, "
        "summed as their events arrive (live while the run goes); null until a source reported",
    )
    rows_written: int | None = Field(
        None, description="rows loaded into the sinks: the rowCount of the sink tasks' OpenLineage output statistics"
    )
    bytes_processed: int | None = Field(
        None, description="bytes the sources staged: the size of the source tasks' OpenLineage output statistics"
    )
    elapsed_ms: int | None = Field(None, description="from the run's start to its end (or to now while running)")


class QualityResultOut(ApiModel):
    """One great-expectations check of the run. Numbers are null where the expectation has none (a column
    map expectation counts unexpected values, an aggregate one has an observed value)."""

    name: str | None
    dataset: str | None = Field(None, description="the checked sink, source or transformation of the definition")
    table: str | None = None
    expectation: str | None
    severity: str | None = Field(None, description="error: a failure fails the run; warn: recorded only")
    success: bool
    observed_value: Any = None
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    missing_count: int | None = None
    errors: list[str] = Field(default_factory=list, description="why the check could not be evaluated")
    details: dict[str, Any] = Field(default_factory=dict, description="great-expectations' whole result")
    task_id: str | None = None


class ExecutionOut(ApiModel):
    execution_id: str
    pipeline_id: str
    pipeline_revision: int
    status: str
    engine: str
    priority: str
    parameters: dict[str, Any]
    schedule_id: str | None = Field(None, description="the schedule that started it; null when executed by request")
    progress: Progress
    tasks: list[TaskOut] = Field(default_factory=list)
    error_message: str | None
    dag_id: str
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    metrics: Metrics = Field(default_factory=Metrics)
    estimated_duration_ms: int | None = Field(
        None, description="median of the pipeline's recent successful executions at submission; null without history"
    )
    quality_results: list[QualityResultOut] = Field(
        default_factory=list, description="the run's quality checks, once it has finished; empty without checks"
    )
    budget_override: bool = Field(
        False, description="an admin executed it with overrideBudget: true (past a reached monthly budget)"
    )
    waiting_for: str | None = Field(
        None, description="the approval gate the run waits on (status RUNNING meanwhile); null when none"
    )


class LogsOut(ApiModel):
    execution_id: str
    task: str | None
    lines: list[str]
