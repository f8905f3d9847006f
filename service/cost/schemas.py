"""The cost API's shapes. Amounts are USD, computed in full precision per task and rounded (half up) to 6
decimals (micro-dollars) only when shown. Every sum is a sum of shown amounts: a breakdown is the sum of the
tasks' (of a pipeline: of its executions' breakdowns), a total the sum of its breakdown."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from service.config import RateCard
from service.schemas import ApiModel

PERIODS = {"1d": 1, "7d": 7, "30d": 30, "90d": 90}
# The trend is stable while the fitted change over the period (|slope| x days) is under this share of the
# period's mean daily cost.
TREND_THRESHOLD = 0.10
Trend = Literal["rising", "falling", "stable"]


class Breakdown(ApiModel):
    compute: float = Field(description="task run time x the compute rate (of its pool or queue)")
    storage: float = Field(description="GB the tasks wrote x storageUsdPerGb")
    network: float = Field(description="GB written to a host other than the one read from x networkUsdPerGb")


class TaskCostOut(ApiModel):
    task_id: str
    duration_seconds: float = Field(description="the task's run time; a running task's counts up to now")
    compute_usd: float
    storage_usd: float
    network_usd: float
    bytes_written: int = Field(description="the task's outputs' size, from its OpenLineage outputStatistics")
    bytes_moved: int = Field(description="bytes written to a host other than one the task read from")
    pool: str | None
    queue: str | None


class ExecutionCostOut(ApiModel):
    execution_id: str
    pipeline_id: str
    status: str
    total_cost_usd: float = Field(description="compute + storage + network of the breakdown")
    breakdown: Breakdown = Field(description="each the sum of the tasks' rounded amounts")
    tasks: list[TaskCostOut]
    rates: RateCard = Field(description="the rate card the amounts were computed with")
    live: bool = Field(description="true while the execution is queued or running: the cost still grows")
    as_of: datetime = Field(description="when the amounts were computed (the end of running tasks' time)")


class PipelineCostOut(ApiModel):
    pipeline_id: str
    period: str
    since: datetime = Field(description="start of the period (executions counted by submission time)")
    until: datetime
    total_cost_usd: float = Field(description="compute + storage + network of the breakdown")
    breakdown: Breakdown
    execution_count: int
    cost_per_execution: float = Field(description="totalCostUsd / executionCount (0 without executions)")
    trend: Trend = Field(
        description=(
            "least-squares slope of the cost per day over the period (per hour for 1d): stable while "
            "|slope| x days < trendThreshold x the period's mean daily cost, else rising or falling; "
            "stable with fewer than two executions in the period"
        )
    )
    trend_slope_usd_per_day: float = Field(description="the fitted slope, USD per day")
    trend_threshold: float = Field(TREND_THRESHOLD, description="the share of the mean daily cost; see trend")
    month_to_date_usd: float = Field(description="cost of the executions submitted this calendar month (UTC)")
    projected_month_usd: float = Field(
        description="monthToDateUsd + the period's mean daily cost x the days left in the month"
    )


class BudgetIn(ApiModel):
    model_config = ConfigDict(extra="forbid")

    monthly_usd: Annotated[float, Field(strict=True, ge=0, le=1e12, allow_inf_nan=False)] | None = Field(
        description="the monthly budget in USD (>= 0); null removes it"
    )


class BudgetOut(ApiModel):
    scope: Literal["tenant", "pipeline"]
    pipeline_id: str | None = None
    month: str = Field(description="the calendar month (UTC) spent in, YYYY-MM")
    monthly_usd: float | None = Field(description="null: no budget")
    spent_this_month_usd: float = Field(description="cost of the executions submitted this month")
    remaining_usd: float | None = Field(description="monthlyUsd - spent, never below 0; null without a budget")
    reached: bool = Field(description="spent >= monthlyUsd: executing answers 409 BUDGET_EXCEEDED")
