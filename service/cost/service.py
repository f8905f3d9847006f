"""Cost of executions from what the engine reported: each task's run time (the execution's task snapshot,
refreshed from Airflow while it runs) x the compute rate, and the bytes its OpenLineage events reported x the
storage and network rates. Amounts stay in full precision until they are shown; budgets are checked at
admission."""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from service.audit.service import record
from service.auth import Principal
from service.config import RateCard, Settings
from service.cost import repository
from service.cost.models import Budget, budget_key
from service.cost.repository import DatasetRow, ExecutionRow
from service.cost.schemas import (
    PERIODS,
    TREND_THRESHOLD,
    Breakdown,
    BudgetOut,
    ExecutionCostOut,
    PipelineCostOut,
    TaskCostOut,
    Trend,
)
from service.db import session_scope, utcnow
from service.errors import BudgetExceeded, ValidationFailed
from service.executions.models import TERMINAL, Execution
from service.executions.service import BudgetCheck
from service.pipelines.models import Pipeline

GB = 10**9
MICRO_USD = Decimal("0.000001")  # amounts are shown in micro-dollars


def usd(amount: float | Decimal) -> Decimal:
    """An amount as shown: rounded half up to 6 decimals."""
    return Decimal(repr(amount) if isinstance(amount, float) else amount).quantize(MICRO_USD, ROUND_HALF_UP)


@dataclass(frozen=True)
class TaskCost:
    task_id: str
    duration_seconds: float
    compute_usd: float
    storage_usd: float
    network_usd: float
    bytes_written: int
    bytes_moved: int
    pool: str | None
    queue: str | None


@dataclass(frozen=True)
class ExecutionCost:
    execution_id: str
    pipeline_id: str
    status: str
    submitted_at: datetime
    live: bool
    tasks: list[TaskCost] = field(default_factory=list)

    # The execution's amounts as shown: sums of its tasks' rounded amounts, so that every view (the execution,
    # a pipeline's period, a budget's month) adds up to the sum of the executions it shows.
    @cached_property
    def compute(self) -> Decimal:
        return sum((usd(t.compute_usd) for t in self.tasks), Decimal(0))

    @cached_property
    def storage(self) -> Decimal:
        return sum((usd(t.storage_usd) for t in self.tasks), Decimal(0))

    @cached_property
    def network(self) -> Decimal:
        return sum((usd(t.network_usd) for t in self.tasks), Decimal(0))

    @cached_property
    def total(self) -> Decimal:
        return self.compute + self.storage + self.network


# -- arithmetic ----------------------------------------------------------------------------------------
def host_of(namespace: str) -> str:
    """The server an OpenLineage namespace names (`postgres://db1:5432` -> `postgres://db1:5432`, without any
    user); a namespace without an authority (`file`, a bucket-less scheme) is its own host."""
    parts = urlsplit(namespace)
    if not parts.scheme or not parts.netloc:
        return namespace.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    host = (parts.hostname or "").lower()
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def task_seconds(task: dict[str, Any], end: datetime) -> float:
    """Airflow's duration of the task's latest try; a try without one (running, or cut off by a cancel) counts
    from its start to its end, or to `end` (now while the execution runs)."""
    duration_ms = task.get("duration_ms")
    if isinstance(duration_ms, int | float) and not isinstance(duration_ms, bool):
        return max(0.0, duration_ms / 1000)
    started = _time(task.get("started_at"))
    if started is None:
        return 0.0
    finished = _time(task.get("finished_at")) or end
    return max(0.0, (finished - started).total_seconds())


def _task_bytes(rows: Iterable[DatasetRow]) -> tuple[int, int]:
    """(bytes written, bytes moved) of one task's datasets: moved are the outputs on a host other than one of
    the task's inputs."""
    rows = list(rows)
    input_hosts = {host_of(r.namespace) for r in rows if r.direction == "input"}
    written = moved = 0
    for r in rows:
        if r.direction != "output" or not r.bytes or r.bytes < 0:
            continue
        written += r.bytes
        if input_hosts - {host_of(r.namespace)}:
            moved += r.bytes
    return written, moved


def execution_cost(ex: ExecutionRow, datasets: list[DatasetRow], rates: RateCard, now: datetime) -> ExecutionCost:
    live = ex.status not in TERMINAL
    end = now if live else (ex.finished_at or now)
    by_task: dict[str, list[DatasetRow]] = defaultdict(list)
    for row in datasets:
        by_task[row.task_id].append(row)
    snapshot = [t for t in (ex.progress or {}).get("tasks") or [] if isinstance(t, dict) and t.get("task_id")]
    known = {t["task_id"] for t in snapshot}
    # A task the events name but the snapshot does not (yet): its bytes count, its time is not known.
    snapshot += [{"task_id": task_id} for task_id in by_task if task_id not in known]
    tasks = []
    for task in snapshot:
        seconds = task_seconds(task, end)
        pool, queue = task.get("pool"), task.get("queue")
        written, moved = _task_bytes(by_task.get(task["task_id"], ()))
        tasks.append(
            TaskCost(
                task_id=task["task_id"],
                duration_seconds=seconds,
                compute_usd=seconds * rates.compute_rate(pool, queue),
                storage_usd=written / GB * rates.storage_usd_per_gb,
                network_usd=moved / GB * rates.network_usd_per_gb,
                bytes_written=written,
                bytes_moved=moved,
                pool=pool,
                queue=queue,
            )
        )
    return ExecutionCost(ex.id, ex.pipeline_id, ex.status, ex.submitted_at, live, tasks)


NAMED_IDS_MAX = 500  # bound parameters per query stay far below the databases' limits


def cost_of_executions(
    session: Session,
    tenant_id: str,
    *,
    pipeline_id: str | None,
    since: datetime,
    until: datetime,
    rates: RateCard,
    execution_id: str | None = None,
    now: datetime | None = None,
    unsettled_only: bool = False,
) -> list[ExecutionCost]:
    """The cost of each execution of the tenant (of one pipeline when `pipeline_id` is given) submitted in
    [since, until), in submission order: two queries whatever their number. `unsettled_only`: only those whose
    cost is not stored yet (running, or finished less than SETTLE_AFTER ago)."""
    ids = repository.executions_stmt(
        tenant_id,
        pipeline_id=pipeline_id,
        since=since,
        until=until,
        execution_id=execution_id,
        unsettled_only=unsettled_only,
    )
    if unsettled_only:
        # Usually few (the partial index ix_executions_unsettled finds them), but PostgreSQL cannot estimate how
        # few and would join them to every execution: name them instead (unless a backlog makes them many).
        # Ordered by the partial index's column: with a bare LIMIT, PostgreSQL expects the first rows of a
        # sequential scan to match and reads the whole table (measured: 20-40 ms at 100,000 runs, not 0.05).
        found = list(session.scalars(ids.order_by(Execution.submitted_at).limit(NAMED_IDS_MAX + 1)))
        if not found:
            return []
        if len(found) <= NAMED_IDS_MAX:
            ids = select(Execution.id).where(Execution.id.in_(found))
    return _costs(session, tenant_id, ids, rates, now or utcnow())


def _costs(session: Session, tenant_id: str, ids: Any, rates: RateCard, now: datetime) -> list[ExecutionCost]:
    rows = repository.executions(session, ids)
    if not rows:
        return []
    by_execution: dict[str, list[DatasetRow]] = defaultdict(list)
    for d in repository.datasets(session, tenant_id, ids):
        by_execution[d.execution_id].append(d)
    return [execution_cost(ex, by_execution.get(ex.id, []), rates, now) for ex in rows]


def spent_by_pipeline(
    session: Session,
    tenant_id: str,
    *,
    pipeline_id: str | None,
    since: datetime,
    until: datetime,
    rates: RateCard,
    now: datetime,
) -> dict[str, Decimal]:
    """The cost of the executions submitted in [since, until), per pipeline: the stored cost of settled runs
    summed in SQL, plus the cost of the others (running, just finished) computed now."""
    spent = defaultdict(
        Decimal, repository.settled_totals(session, tenant_id, pipeline_id=pipeline_id, since=since, until=until)
    )
    live = cost_of_executions(
        session, tenant_id, pipeline_id=pipeline_id, since=since, until=until, rates=rates, now=now, unsettled_only=True
    )
    for c in live:
        spent[c.pipeline_id] += c.total
    return dict(spent)


# Late OpenLineage events (a task's COMPLETE after Airflow has marked the run finished) may still add bytes:
# a finished run's cost is stored this long after it finished.
SETTLE_AFTER = timedelta(seconds=30)
SETTLE_BATCH = 200


def settle_step(sessions: sessionmaker[Session], rates: RateCard) -> int:
    """Store the cost of finished executions (the background worker `cost`): how many were settled."""
    now = utcnow()
    with session_scope(sessions) as session:
        due = repository.to_settle(session, finished_before=now - SETTLE_AFTER, limit=SETTLE_BATCH)
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for execution_id, tenant_id in due:
            by_tenant[tenant_id].append(execution_id)
        for tenant_id, ids in by_tenant.items():
            for cost in _costs(session, tenant_id, select(Execution.id).where(Execution.id.in_(ids)), rates, now):
                session.execute(
                    update(Execution)
                    .where(Execution.id == cost.execution_id)
                    .values(
                        cost_compute_usd=cost.compute,
                        cost_storage_usd=cost.storage,
                        cost_network_usd=cost.network,
                        cost_settled_for=Execution.finished_at,
                    )
                )
    return len(due)


def cost_of_execution(session: Session, ex: Execution, rates: RateCard, now: datetime) -> ExecutionCost:
    row = ExecutionRow(ex.id, ex.pipeline_id, ex.status, ex.submitted_at, ex.finished_at, ex.progress or {})
    ids = select(Execution.id).where(Execution.id == ex.id)
    return execution_cost(row, repository.datasets(session, ex.tenant_id, ids), rates, now)


# -- trend ---------------------------------------------------------------------------------------------
def slope(values: list[float]) -> float:
    """Least-squares slope of `values` over 0, 1, 2, ... (0 for fewer than two)."""
    n = len(values)
    if n < 2:
        return 0.0
    x_mean, y_mean = (n - 1) / 2, sum(values) / n
    num = sum((x - x_mean) * (y - y_mean) for x, y in enumerate(values))
    den = sum((x - x_mean) ** 2 for x in range(n))
    return num / den


def trend_of(slope_per_day: float, days: int, total: float) -> Trend:
    """stable while the fitted change over the period is under TREND_THRESHOLD of the mean daily cost."""
    change = slope_per_day * days
    if change == 0 or abs(change) < TREND_THRESHOLD * (total / days):
        return "stable"
    return "rising" if change > 0 else "falling"


def _buckets(costs: list[ExecutionCost], since: datetime, days: int) -> tuple[list[float], int]:
    """The cost per day of the period (per hour for a one-day period) and the number of buckets a day."""
    per_day = 24 if days == 1 else 1
    width = timedelta(days=1) / per_day
    buckets = [0.0] * (days * per_day)
    for c in costs:
        index = min(len(buckets) - 1, max(0, int((c.submitted_at - since) / width)))
        buckets[index] += float(c.total)
    return buckets, per_day


# -- the API's views -----------------------------------------------------------------------------------
def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(start: datetime) -> datetime:
    days = calendar.monthrange(start.year, start.month)[1]
    return start + timedelta(days=days)


def _breakdown(compute: Decimal, storage: Decimal, network: Decimal) -> tuple[Breakdown, float]:
    return Breakdown(compute=float(compute), storage=float(storage), network=float(network)), float(
        compute + storage + network
    )


def execution_out(cost: ExecutionCost, rates: RateCard, now: datetime) -> ExecutionCostOut:
    tasks = [
        TaskCostOut(
            task_id=t.task_id,
            duration_seconds=round(t.duration_seconds, 3),
            compute_usd=float(usd(t.compute_usd)),
            storage_usd=float(usd(t.storage_usd)),
            network_usd=float(usd(t.network_usd)),
            bytes_written=t.bytes_written,
            bytes_moved=t.bytes_moved,
            pool=t.pool,
            queue=t.queue,
        )
        for t in cost.tasks
    ]
    breakdown, total = _breakdown(cost.compute, cost.storage, cost.network)
    return ExecutionCostOut(
        execution_id=cost.execution_id,
        pipeline_id=cost.pipeline_id,
        status=cost.status,
        total_cost_usd=total,
        breakdown=breakdown,
        tasks=tasks,
        rates=rates,
        live=cost.live,
        as_of=now,
    )


def parse_period(period: str) -> int:
    if period not in PERIODS:
        raise ValidationFailed(
            f"period must be one of {', '.join(PERIODS)}",
            details=[{"path": "period", "message": f"must be one of {list(PERIODS)}"}],
        )
    return PERIODS[period]


def pipeline_cost(session: Session, pipeline: Pipeline, period: str, rates: RateCard) -> PipelineCostOut:
    days = parse_period(period)
    now = utcnow()
    since, month = now - timedelta(days=days), month_start(now)
    costs = cost_of_executions(
        session, pipeline.tenant_id, pipeline_id=pipeline.id, since=min(since, month), until=now, rates=rates, now=now
    )
    in_period = [c for c in costs if c.submitted_at >= since]
    breakdown, total = _breakdown(
        sum((c.compute for c in in_period), Decimal(0)),
        sum((c.storage for c in in_period), Decimal(0)),
        sum((c.network for c in in_period), Decimal(0)),
    )
    buckets, per_day = _buckets(in_period, since, days)
    slope_per_day = slope(buckets) * per_day
    month_to_date = sum((c.total for c in costs if c.submitted_at >= month), Decimal(0))
    days_left = (_next_month(month) - now) / timedelta(days=1)
    return PipelineCostOut(
        pipeline_id=pipeline.id,
        period=period,
        since=since,
        until=now,
        total_cost_usd=total,
        breakdown=breakdown,
        execution_count=len(in_period),
        cost_per_execution=float(usd(total / len(in_period))) if in_period else 0.0,
        trend=trend_of(slope_per_day, days, sum(buckets)) if len(in_period) > 1 else "stable",
        trend_slope_usd_per_day=float(usd(slope_per_day)),
        month_to_date_usd=float(month_to_date),
        projected_month_usd=float(month_to_date + usd(total / days * days_left)),
    )


# -- budgets -------------------------------------------------------------------------------------------
def spent_this_month(
    session: Session, tenant_id: str, pipeline_id: str | None, rates: RateCard, now: datetime
) -> Decimal:
    spent = spent_by_pipeline(
        session, tenant_id, pipeline_id=pipeline_id, since=month_start(now), until=now, rates=rates, now=now
    )
    return sum(spent.values(), Decimal(0))


def budget_out(session: Session, tenant_id: str, pipeline_id: str | None, rates: RateCard) -> BudgetOut:
    now = utcnow()
    budget = repository.budget(session, tenant_id, pipeline_id)
    spent = spent_this_month(session, tenant_id, pipeline_id, rates, now)
    limit = usd(budget.monthly_usd) if budget is not None else None
    return BudgetOut(
        scope="pipeline" if pipeline_id is not None else "tenant",
        pipeline_id=pipeline_id,
        month=now.strftime("%Y-%m"),
        monthly_usd=float(limit) if limit is not None else None,
        spent_this_month_usd=float(spent),
        remaining_usd=float(max(Decimal(0), limit - spent)) if limit is not None else None,
        reached=limit is not None and spent >= limit,
    )


def set_budget(session: Session, principal: Principal, pipeline_id: str | None, monthly_usd: float | None) -> None:
    """Store (or with None remove) the monthly budget of the tenant or of one of its pipelines; recorded in the
    audit log as `set` on resource `budget` `<pipelineId>` or `tenant`, `after.monthlyUsd` null when removed."""
    tenant_id, subject = principal.tenant_id, principal.subject
    budget = repository.budget(session, tenant_id, pipeline_id)
    before = {"monthlyUsd": budget.monthly_usd if budget is not None else None}
    if monthly_usd is None:
        if budget is not None:
            session.delete(budget)
    elif budget is None:
        session.add(
            Budget(
                key=budget_key(tenant_id, pipeline_id),
                tenant_id=tenant_id,
                pipeline_id=pipeline_id,
                monthly_usd=monthly_usd,
                updated_by=subject,
            )
        )
    else:
        budget.monthly_usd, budget.updated_by = monthly_usd, subject
    session.flush()
    after = {"monthlyUsd": monthly_usd}
    record(session, principal, "set", "budget", pipeline_id or "tenant", before=before, after=after)


def check_budgets(session: Session, pipeline: Pipeline, rates: RateCard) -> None:
    """BudgetExceeded when this calendar month's (UTC) cost of the pipeline, or of its tenant, has reached its
    monthly budget. No budget, no cost query."""
    budgets = {b.pipeline_id is None: b for b in repository.budgets(session, pipeline.tenant_id, pipeline.id)}
    if not budgets:
        return
    now = utcnow()
    tenant_wide = True in budgets  # the tenant's budget needs every pipeline's cost, the pipeline's its own
    by_pipeline = spent_by_pipeline(
        session,
        pipeline.tenant_id,
        pipeline_id=None if tenant_wide else pipeline.id,
        since=month_start(now),
        until=now,
        rates=rates,
        now=now,
    )
    for is_tenant, budget in sorted(budgets.items()):  # the pipeline's budget first
        spent = sum(by_pipeline.values(), Decimal(0)) if is_tenant else by_pipeline.get(pipeline.id, Decimal(0))
        limit = usd(budget.monthly_usd)
        if spent >= limit:
            whose = f"tenant '{pipeline.tenant_id}'" if is_tenant else f"pipeline '{pipeline.name}'"
            raise BudgetExceeded(
                f"the monthly budget of {whose} is reached: {spent} of {limit} USD spent in "
                f"{now:%Y-%m}; an admin may execute with overrideBudget: true",
                details={
                    "budget": "tenant" if is_tenant else "pipeline",
                    "pipelineId": None if is_tenant else pipeline.id,
                    "monthlyUsd": float(limit),
                    "spentThisMonthUsd": float(spent),
                    "month": f"{now:%Y-%m}",
                },
            )


def budget_check(settings: Settings) -> BudgetCheck:
    """The check executions run at admission (handed over in service/main.py), with the configured rates."""

    def check(session: Session, pipeline: Pipeline) -> None:
        check_budgets(session, pipeline, settings.cost_rate_card)

    return check
