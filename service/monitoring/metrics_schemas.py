"""The metrics API's shapes: a pipeline's (or the tenant's) execution figures over a period ending now, a
pipeline's day-by-day history, and the tenant's report (slowest and most-failing pipelines, bottleneck tasks,
failures by task, top error messages). Executions are counted by submission time, like cost."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field

from service.schemas import ApiModel

PERIODS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
REPORT_LIMIT = 10  # entries in each list of the report


class Metrics(ApiModel):
    execution_count: int = Field(description="executions submitted in the period, whatever their status")
    completed_count: int
    failed_count: int
    success_rate: float | None = Field(
        description="COMPLETED / finished (COMPLETED, FAILED, CANCELLED) executions; null when none finished"
    )
    avg_duration_ms: int | None = Field(description="mean of finishedAt - startedAt of finished executions")
    p95_duration_ms: int | None = Field(description="95th percentile (linear interpolation) of the same")
    total_rows_processed: int = Field(description="rows the runs' OpenLineage events reported")
    total_bytes_processed: int
    total_cost_usd: float = Field(description="stored cost of settled runs plus the live cost of the others")


class HistoryDay(ApiModel):
    date: str = Field(description="UTC day (YYYY-MM-DD) the executions were submitted")
    status: str = Field(description="status of the day's last execution")
    duration_ms: int | None = Field(description="mean duration of the day's finished executions")
    rows: int = Field(description="rows processed by the day's executions")
    execution_count: int
    completed_count: int
    failed_count: int


class PipelineMetricsOut(ApiModel):
    pipeline_id: str
    period: str
    since: datetime
    until: datetime
    metrics: Metrics
    history: list[HistoryDay] = Field(description="one entry per day with executions, oldest first")


class SlowPipeline(ApiModel):
    pipeline_id: str
    name: str
    execution_count: int
    avg_duration_ms: int | None
    p95_duration_ms: int | None


class FailingPipeline(ApiModel):
    pipeline_id: str
    name: str
    execution_count: int
    failed_count: int
    failure_rate: float = Field(description="FAILED / finished executions")


class Bottleneck(ApiModel):
    pipeline_id: str
    name: str
    task_id: str
    share: float = Field(description="the task's share (0-1) of the time all the pipeline's tasks ran")
    avg_duration_ms: int | None = Field(description="the task's mean duration per run")


class TaskFailures(ApiModel):
    pipeline_id: str
    name: str
    task_id: str
    failures: int = Field(description="finished executions in which the task ended failed")


class ErrorMessage(ApiModel):
    message: str
    count: int
    pipeline_count: int
    last_seen_at: datetime = Field(description="submission time of the latest execution that failed so")


class Report(ApiModel):
    slowest_pipelines: list[SlowPipeline] = Field(description="by p95 duration, slowest first")
    most_failing_pipelines: list[FailingPipeline] = Field(description="by failed executions, most first")
    bottlenecks: list[Bottleneck] = Field(description="per pipeline, the task with the largest share of run time")
    failures_by_task: list[TaskFailures]
    top_errors: list[ErrorMessage] = Field(description="failed executions' error messages, most frequent first")


class TenantMetricsOut(ApiModel):
    period: str
    since: datetime
    until: datetime
    metrics: Metrics
    report: Report
