"""Per-day rollup of the executions, so that the metrics over long periods read a row per pipeline and day
instead of every execution and task.

A UTC day is *sealed* an hour after it ended: the worker `metrics-rollup` (step) aggregates each tenant's
executions submitted that day into metrics_days (counts, duration sum and a histogram of durations, rows,
bytes, stored cost) and metrics_day_tasks (per task: run time, runs, failures), a week of days per pass, and
rebuilds a sealed (tenant, day) whenever one of its executions changed afterwards (updated_at since its
previous pass, with a margin for transactions that committed late). The days' rows are also summed into
aligned blocks of 2, 4, ... 64 days (days = the block's length, built once its last day is sealed and again
when one of its days is rebuilt). The metrics of a window then add the rollup's rows for the sealed whole days
inside it, tiled by the fewest blocks (90 days: about a dozen rows per pipeline and task instead of 89), to
what the raw rows of the rest (at most the first partial day and the unsealed tail) give. A window without a
sealed whole day (1h, 24h) is computed from the raw rows only, as before.

Counts, sums, means and cost come out exactly as from the raw rows. The 95th percentile over a window that
uses the rollup is interpolated from the histograms: buckets 2 % wide, so within 1 % of the exact value.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Date, Integer, String, and_, case, delete, func, insert, literal, or_, select
from sqlalchemy.orm import Session, sessionmaker

from service.cost.repository import settled
from service.db import session_scope, utcnow
from service.executions.models import CANCELLED, COMPLETED, FAILED, Execution, ExecutionTask
from service.monitoring import metrics_repository as raw
from service.monitoring.metrics_repository import P95, Figures, Totals, Window, count_of
from service.monitoring.models import MetricsDay, MetricsDayDuration, MetricsDayTask, MetricsRollup

RATIO = 1.02  # histogram buckets: [RATIO**b - 1, RATIO**(b+1) - 1) milliseconds
_LOG_RATIO = math.log(RATIO)
SEAL_AFTER = timedelta(hours=1)  # a UTC day is rolled up this long after it ended
CHANGE_MARGIN = timedelta(minutes=5)  # changes committed up to this long after their updated_at are still seen
DAYS_PER_STEP = 7  # new days rolled up per pass (a first pass over a long history is spread out)
BLOCKS = (1, 2, 4, 8, 16, 32, 64)  # the rollup's block lengths in days (1: the days themselves)


def bucket_of(ms: float) -> int:
    return int(math.log1p(max(ms, 0.0)) / _LOG_RATIO)


def bucket_value(bucket: int) -> float:
    """The bucket's middle (geometric): within 1 % of any duration in it."""
    return math.expm1((bucket + 0.5) * _LOG_RATIO)


def percentile(histogram: Mapping[int, int], q: float) -> float | None:
    """The q-quantile with percentile_cont's interpolation between the two nearest ranks, each rank's value
    taken as its bucket's middle."""
    n = sum(histogram.values())
    if n == 0:
        return None
    position = (n - 1) * q
    low = int(position)
    values: list[float] = []  # the values of ranks low and low + 1
    seen = 0
    for bucket in sorted(histogram):
        count = histogram[bucket]
        while len(values) < 2 and seen + count > low + len(values):
            values.append(bucket_value(bucket))
        seen += count
        if len(values) == 2:
            break
    lo = values[0]
    hi = values[1] if len(values) > 1 else lo
    return lo + (hi - lo) * (position - low)


_DAY_SUMS = (
    "executions",
    "completed",
    "failed",
    "finished",
    "duration_sum_ms",
    "duration_count",
    "rows",
    "bytes",
    "settled_cost_usd",
    "unsettled",
)


@dataclass
class Aggregate:
    """Executions added up: per pipeline from the raw rows (_aggregate) or from rollup rows (add_day)."""

    executions: int = 0
    completed: int = 0
    failed: int = 0
    finished: int = 0
    duration_sum_ms: float = 0.0
    duration_count: int = 0
    durations: Counter[int] = field(default_factory=Counter)
    rows: int = 0
    bytes: int = 0
    settled_cost_usd: Decimal = Decimal(0)
    unsettled: int = 0

    def add_day(self, day: Any) -> None:
        """`day`: metrics_days rows, or _aggregate's sums (_DAY_SUMS of them; sums may come back as Decimal
        or, on SQLite, as float)."""
        for name in _DAY_SUMS:
            value = getattr(day, name) or 0
            if name == "duration_sum_ms":
                self.duration_sum_ms += float(value)
            elif name == "settled_cost_usd":
                self.settled_cost_usd += value if isinstance(value, Decimal) else Decimal(str(value))
            else:
                setattr(self, name, getattr(self, name) + int(value))

    def merge(self, other: Aggregate) -> None:
        for name in _DAY_SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.durations.update(other.durations)

    def figures(self) -> Figures:
        avg = self.duration_sum_ms / self.duration_count if self.duration_count else None
        totals = Totals(self.executions, self.completed, self.failed, self.finished, avg, self.rows, self.bytes)
        return Figures(totals, percentile(self.durations, P95))


# -- building ------------------------------------------------------------------------------------------
def _start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _utc_day(at: datetime) -> date:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).date()


def _aggregate(session: Session, where: Iterable[Any]) -> dict[str, Aggregate]:
    """Per pipeline, the executions matching `where`: the sums in SQL, then each duration (only those) into
    the histogram. Same figures as the metrics' raw queries (metrics_repository)."""
    where = list(where)
    ms = raw.duration_ms(session)
    cost = sum(
        (
            func.coalesce(c, 0)
            for c in (Execution.cost_compute_usd, Execution.cost_storage_usd, Execution.cost_network_usd)
        ),
    )
    sums = (
        select(
            Execution.pipeline_id,
            func.count().label("executions"),
            count_of(Execution.status == COMPLETED).label("completed"),
            count_of(Execution.status == FAILED).label("failed"),
            count_of(Execution.status.in_((COMPLETED, FAILED, CANCELLED))).label("finished"),
            func.sum(case((raw.finished(), ms))).label("duration_sum_ms"),
            count_of(raw.finished()).label("duration_count"),
            func.sum(Execution.rows_processed).label("rows"),
            func.sum(Execution.bytes_processed).label("bytes"),
            func.sum(case((settled(), cost))).label("settled_cost_usd"),
            (func.count() - count_of(settled())).label("unsettled"),
        )
        .where(*where)
        .group_by(Execution.pipeline_id)
    )
    found: dict[str, Aggregate] = defaultdict(Aggregate)
    for row in session.execute(sums):
        found[row.pipeline_id].add_day(row)
    for pid, duration in session.execute(select(Execution.pipeline_id, ms).where(*where, raw.finished())):
        found[pid].durations[bucket_of(float(duration))] += 1
    return found


def rebuild(session: Session, tenant_id: str, day: date) -> None:
    """The tenant's rollup rows of `day`, from its executions submitted that day."""
    for model in (MetricsDay, MetricsDayDuration, MetricsDayTask):
        session.execute(delete(model).where(model.tenant_id == tenant_id, model.days == 1, model.day == day))
    in_day = Window(tenant_id, None, _start(day), _start(day + timedelta(days=1)))
    key = {"tenant_id": tenant_id, "days": 1, "day": day}
    aggregates = _aggregate(session, in_day.where())
    days = [
        {**key, "pipeline_id": pipeline_id, **{name: getattr(a, name) for name in _DAY_SUMS}}
        for pipeline_id, a in aggregates.items()
    ]
    durations = [
        {**key, "pipeline_id": pipeline_id, "bucket": bucket, "runs": n}
        for pipeline_id, a in aggregates.items()
        for bucket, n in sorted(a.durations.items())
    ]
    tasks = [{**key, **task} for task in _tasks(session, in_day.where(ExecutionTask), in_day.where())]
    for model, rows in ((MetricsDay, days), (MetricsDayDuration, durations), (MetricsDayTask, tasks)):
        if rows:
            session.execute(insert(model), rows)


# What a block's rows add up from its days' rows: (model, columns grouped by besides the pipeline, columns summed).
_BLOCK_SUMS: tuple[tuple[Any, tuple[str, ...], tuple[str, ...]], ...] = (
    (MetricsDay, (), _DAY_SUMS),
    (MetricsDayDuration, ("bucket",), ("runs",)),
    (MetricsDayTask, ("task_id",), ("duration_sum_ms", "runs", "failures")),
)


def block_start(day: date, days: int) -> date:
    """The first day of the aligned block of `days` days holding `day`."""
    return date.fromordinal(day.toordinal() - day.toordinal() % days)


def rebuild_block(session: Session, tenant_id: str, start: date, days: int) -> None:
    """The tenant's rollup rows of the block of `days` days from `start` (all sealed), summed from its days'."""
    end = start + timedelta(days=days - 1)
    for model, keys, sums in _BLOCK_SUMS:
        session.execute(delete(model).where(model.tenant_id == tenant_id, model.days == days, model.day == start))
        group = [model.pipeline_id, *(getattr(model, k) for k in keys)]
        rows = (
            select(
                literal(tenant_id, String()),
                literal(days, Integer()),
                literal(start, Date()),
                *group,
                *(func.sum(getattr(model, name)) for name in sums),
            )
            .where(model.tenant_id == tenant_id, model.days == 1, model.day >= start, model.day <= end)
            .group_by(*group)
        )
        columns = ["tenant_id", "days", "day", "pipeline_id", *keys, *sums]
        session.execute(insert(model).from_select(columns, rows))


def _blocks_to_build(session: Session, built: set[tuple[str, date]], new_days: list[date], sealed: date) -> set[Any]:
    """(tenant, start, days) of the blocks to rebuild after the days `built` were: every complete block holding
    one of them, and every block that `new_days` completed, for each tenant with a day in it."""
    completed = [
        (block_start(day, days), days)
        for day in new_days
        for days in BLOCKS[1:]
        if block_start(day, days) + timedelta(days=days - 1) == day
    ]
    rolled: set[tuple[str, date]] = set()  # (tenant, day) of every day row the completed blocks hold: one query
    if completed:
        first = min(start for start, _ in completed)
        in_blocks = select(MetricsDay.tenant_id, MetricsDay.day).distinct()
        where = (MetricsDay.days == 1, MetricsDay.day >= first, MetricsDay.day <= max(new_days))
        rolled = set(session.execute(in_blocks.where(*where)).tuples())
    blocks = {
        (tenant, start, days)
        for start, days in completed
        for tenant, day in rolled
        if start <= day < start + timedelta(days=days)
    }
    for days in BLOCKS[1:]:
        for tenant, day in built:
            start = block_start(day, days)
            if start + timedelta(days=days - 1) <= sealed:
                blocks.add((tenant, start, days))
    return blocks


def _tasks(session: Session, tasks: list[Any], executions: list[Any]) -> list[dict[str, Any]]:
    """Per (pipeline, task) of some executions (`tasks`: their task rows, `executions`: them): run time, runs
    with a duration, failures. Two queries without a join of all tasks: the task rows by their copy of the
    submission, the failures from the (few) failed executions."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for pid, task, ms, runs in raw.task_time(session, tasks):
        found[(pid, task)] = {"pipeline_id": pid, "task_id": task, "duration_sum_ms": ms, "runs": runs, "failures": 0}
    for pid, task, n in raw.failures_by_task(session, executions, None):
        row = found.setdefault(
            (pid, task), {"pipeline_id": pid, "task_id": task, "duration_sum_ms": 0, "runs": 0, "failures": 0}
        )
        row["failures"] = n
    return list(found.values())


def last_sealable(now: datetime) -> date:
    return _utc_day(now - SEAL_AFTER) - timedelta(days=1)


def step(sessions: sessionmaker[Session], now: datetime | None = None) -> int:
    """One pass of the worker: rebuild the sealed days whose executions changed, roll up the next new days.
    Replicas take turns (the progress row is locked, SKIP LOCKED). Returns how many (tenant, day) it built."""
    now = now or utcnow()
    with session_scope(sessions) as session:
        state = session.execute(
            select(MetricsRollup).where(MetricsRollup.id == 1).with_for_update(skip_locked=True)
        ).scalar_one_or_none()
        if state is None:  # another replica is at it
            return 0
        last = last_sealable(now)
        built: set[tuple[str, date]] = set()
        if state.sealed_through is not None and state.watermark is not None:
            changed = select(Execution.tenant_id, Execution.submitted_at).where(
                Execution.updated_at >= state.watermark - CHANGE_MARGIN,
                Execution.submitted_at < _start(state.sealed_through + timedelta(days=1)),
            )
            built |= {(tenant, _utc_day(at)) for tenant, at in session.execute(changed)}
        if state.sealed_through is not None:
            first: date | None = state.sealed_through + timedelta(days=1)
        else:
            oldest = session.scalar(select(func.min(Execution.submitted_at)))
            first = None if oldest is None else _utc_day(oldest)
        new_days = [] if first is None else [first + timedelta(days=i) for i in range((last - first).days + 1)]
        for day in new_days[:DAYS_PER_STEP]:
            tenants = (
                select(Execution.tenant_id)
                .distinct()
                .where(Execution.submitted_at >= _start(day), Execution.submitted_at < _start(day + timedelta(days=1)))
            )
            built |= {(tenant, day) for tenant in session.scalars(tenants)}
        for tenant, day in sorted(built):
            rebuild(session, tenant, day)
        if new_days:
            state.sealed_through = new_days[:DAYS_PER_STEP][-1]
        elif state.sealed_through is None:
            state.sealed_through = last  # nothing older than `last` to roll up
        for tenant, start, days in sorted(
            _blocks_to_build(session, built, new_days[:DAYS_PER_STEP], state.sealed_through)
        ):
            rebuild_block(session, tenant, start, days)
        state.watermark = now
    return len(built)


def catch_up(sessions: sessionmaker[Session], now: datetime | None = None) -> int:
    """Steps until every sealed day is rolled up (a first build over a long history, benchmarks, tests); the
    number of (tenant, day) built. Rebuilds of changed days are part of the first step."""
    built = step(sessions, now)
    while True:
        with sessions() as session:
            sealed = session.scalar(select(MetricsRollup.sealed_through).where(MetricsRollup.id == 1))
        if sealed is not None and sealed >= last_sealable(now or utcnow()):
            return built
        built += step(sessions, now)


# -- reading -------------------------------------------------------------------------------------------
class Span(NamedTuple):
    """The sealed whole days of a window (inclusive: read from the rollup's blocks) and the parts around them
    (read from the raw rows)."""

    first: date
    last: date
    edges: list[Window]

    def where(self, model: type[MetricsDay | MetricsDayDuration | MetricsDayTask], window: Window) -> list[Any]:
        """The rollup rows of the span: the fewest aligned blocks that tile it (at most two of each length)."""
        starts: dict[int, list[date]] = defaultdict(list)
        for start, days in blocks_of(self.first, self.last):
            starts[days].append(start)
        tiles = or_(*(and_(model.days == days, model.day.in_(found)) for days, found in sorted(starts.items())))
        conditions = [model.tenant_id == window.tenant_id, model.day >= self.first, model.day <= self.last, tiles]
        if window.pipeline_id is not None:
            conditions.append(model.pipeline_id == window.pipeline_id)
        return conditions

    def where_edges(self, model: type[Execution | ExecutionTask]) -> list[Any]:
        """The raw rows of the edges (executions, or their tasks): one condition, one query."""
        return [or_(*(and_(*edge.where(model)) for edge in self.edges))]


def blocks_of(first: date, last: date) -> list[tuple[date, int]]:
    """(start, days) of the aligned blocks tiling [first, last]: from `first` on, the longest block starting
    there that ends by `last` (a complete block is in the rollup once its last day is sealed)."""
    tiles = []
    day = first
    while day <= last:
        days = max(n for n in BLOCKS if day.toordinal() % n == 0 and day + timedelta(days=n - 1) <= last)
        tiles.append((day, days))
        day += timedelta(days=days)
    return tiles


def span_of(session: Session, window: Window) -> Span | None:
    """The window's sealed whole days, or None when it has none (read it from the raw rows)."""
    sealed = session.scalar(select(MetricsRollup.sealed_through).where(MetricsRollup.id == 1))
    if sealed is None:
        return None
    first = _utc_day(window.since)
    if _start(first) < window.since:
        first += timedelta(days=1)
    last = min(sealed, _utc_day(window.until) - timedelta(days=1))
    if first > last:
        return None
    t, p = window.tenant_id, window.pipeline_id
    edges = [Window(t, p, window.since, _start(first))] if window.since < _start(first) else []
    after = _start(last + timedelta(days=1))
    if after < window.until:
        edges.append(Window(t, p, after, window.until))
    return Span(first, last, edges)


def aggregates(session: Session, window: Window, span: Span) -> dict[str, Aggregate]:
    """Per pipeline: the rollup's days of the span plus the raw executions of its edges."""
    found: dict[str, Aggregate] = defaultdict(Aggregate)
    summed = [func.sum(getattr(MetricsDay, name)).label(name) for name in _DAY_SUMS]
    days = (
        select(MetricsDay.pipeline_id, *summed).where(*span.where(MetricsDay, window)).group_by(MetricsDay.pipeline_id)
    )
    for day in session.execute(days):
        found[day.pipeline_id].add_day(day)
    histogram = (
        select(MetricsDayDuration.pipeline_id, MetricsDayDuration.bucket, func.sum(MetricsDayDuration.runs))
        .where(*span.where(MetricsDayDuration, window))
        .group_by(MetricsDayDuration.pipeline_id, MetricsDayDuration.bucket)
    )
    for pid, bucket, n in session.execute(histogram):
        found[pid].durations[bucket] += int(n)
    if span.edges:
        for pid, a in _aggregate(session, span.where_edges(Execution)).items():
            found[pid].merge(a)
    return found


class Figured(NamedTuple):
    """A window's figures, each pipeline's (when asked), and the stored cost of its settled executions when
    they came from the rollup (None: the raw rows were read; the cost is the cost feature's to sum)."""

    everything: Figures
    each: dict[str, Figures]
    settled_cost_usd: Decimal | None


def figures(session: Session, window: Window, span: Span | None, *, per_pipeline: bool) -> Figured:
    """raw.figures, from the rollup where the window has sealed whole days (`span`)."""
    if span is None:
        return Figured(*raw.figures(session, window, per_pipeline=per_pipeline), None)
    each = aggregates(session, window, span)
    everything = Aggregate()
    for a in each.values():
        everything.merge(a)
    by_pipeline = {pid: a.figures() for pid, a in each.items()} if per_pipeline else {}
    return Figured(everything.figures(), by_pipeline, everything.settled_cost_usd)


class TaskFigures(NamedTuple):
    time: list[tuple[str, str, int, int]]  # raw.task_time's
    failures: list[tuple[str, str, int]]  # raw.failures_by_task's


def task_figures(session: Session, window: Window, span: Span | None, limit: int) -> TaskFigures:
    """raw.task_time and raw.failures_by_task, from the rollup where the window has sealed whole days."""
    if span is None:
        return TaskFigures(
            raw.task_time(session, window.where(ExecutionTask)), raw.failures_by_task(session, window.where(), limit)
        )
    stmt = (
        select(
            MetricsDayTask.pipeline_id,
            MetricsDayTask.task_id,
            func.sum(MetricsDayTask.duration_sum_ms).label("duration_sum_ms"),
            func.sum(MetricsDayTask.runs).label("runs"),
            func.sum(MetricsDayTask.failures).label("failures"),
        )
        .where(*span.where(MetricsDayTask, window))
        .group_by(MetricsDayTask.pipeline_id, MetricsDayTask.task_id)
    )
    rows = [row._asdict() for row in session.execute(stmt)]
    if span.edges:
        rows += _tasks(session, span.where_edges(ExecutionTask), span.where_edges(Execution))
    found: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        sums = found[(row["pipeline_id"], row["task_id"])]
        for i, name in enumerate(("duration_sum_ms", "runs", "failures")):
            sums[i] += int(row[name] or 0)
    ranked = sorted(((-f, key) for key, (_, _, f) in found.items() if f), key=lambda item: item)
    return TaskFigures(
        [(pid, task, ms, runs) for (pid, task), (ms, runs, _) in found.items()],
        [(pid, task, -negative) for negative, (pid, task) in ranked[:limit]],
    )
