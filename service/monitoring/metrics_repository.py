"""The metrics' queries. Everything is aggregated in the database: counts and sums per pipeline or per day,
durations' 95th percentile with percentile_cont on PostgreSQL and the same linear interpolation between the two
nearest ranks (window functions) on SQLite. Only aggregated rows come back, never one row per execution."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Float, Integer, and_, case, cast, func, literal_column, select
from sqlalchemy.orm import Session

from service.executions.models import CANCELLED, COMPLETED, FAILED, TERMINAL, Execution, ExecutionTask
from service.pipelines.models import Pipeline

P95 = 0.95


class Window(NamedTuple):
    """The executions the figures are over: the tenant's (one pipeline's) submitted in [since, until)."""

    tenant_id: str
    pipeline_id: str | None
    since: datetime
    until: datetime

    def where(self, model: type[Execution | ExecutionTask] = Execution) -> list[ColumnElement[bool]]:
        """The window's executions (or, with ExecutionTask, their tasks: the columns are copied)."""
        conditions = [
            model.tenant_id == self.tenant_id,
            model.submitted_at >= self.since,
            model.submitted_at < self.until,
        ]
        if self.pipeline_id is not None:
            conditions.append(model.pipeline_id == self.pipeline_id)
        return conditions


class Totals(NamedTuple):
    executions: int
    completed: int
    failed: int
    finished: int
    avg_duration_ms: float | None
    rows: int
    bytes: int


class Day(NamedTuple):
    date: str
    totals: Totals
    last_status: str


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def duration_ms(session: Session) -> ColumnElement[Any]:
    """finished_at - started_at in milliseconds (a float)."""
    if _postgres(session):
        return func.extract("epoch", Execution.finished_at - Execution.started_at) * 1000
    return (func.julianday(Execution.finished_at) - func.julianday(Execution.started_at)) * 86_400_000.0


def finished() -> ColumnElement[bool]:
    """An execution with a duration: terminal, with both dates."""
    return and_(Execution.status.in_(TERMINAL), Execution.started_at.is_not(None), Execution.finished_at.is_not(None))


def count_of(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _totals_columns(session: Session) -> list[ColumnElement[Any]]:
    return [
        func.count(),
        count_of(Execution.status == COMPLETED),
        count_of(Execution.status == FAILED),
        count_of(Execution.status.in_((COMPLETED, FAILED, CANCELLED))),
        func.avg(case((finished(), duration_ms(session)))),
        func.coalesce(func.sum(Execution.rows_processed), 0),
        func.coalesce(func.sum(Execution.bytes_processed), 0),
    ]


def _totals(row: Any) -> Totals:
    n, completed, failed, done, avg, rows, size = row
    return Totals(
        int(n), int(completed), int(failed), int(done), None if avg is None else float(avg), int(rows), int(size)
    )


class Figures(NamedTuple):
    totals: Totals
    p95_duration_ms: float | None


EMPTY = Figures(Totals(0, 0, 0, 0, None, 0, 0), None)


def figures(session: Session, window: Window, *, per_pipeline: bool) -> tuple[Figures, dict[str, Figures]]:
    """The window's totals and p95 duration, and with `per_pipeline` each pipeline's. PostgreSQL: one pass
    (GROUPING SETS, percentile_cont); SQLite: the totals, then the percentiles by nearest ranks."""
    if _postgres(session):
        return _figures_in_one_pass(session, window, per_pipeline=per_pipeline)
    where = window.where()
    overall = _totals(session.execute(select(*_totals_columns(session)).where(*where)).one())
    p95s = dict(session.execute(_nearest_ranks(session, [*where, finished()], [])).all())
    everything = Figures(overall, _float(p95s.get(None)))
    if not per_pipeline:
        return everything, {}
    stmt = select(Execution.pipeline_id, *_totals_columns(session)).where(*where).group_by(Execution.pipeline_id)
    each = {row[0]: _totals(row[1:]) for row in session.execute(stmt)}
    ranks = _nearest_ranks(session, [*where, finished()], [Execution.pipeline_id])
    p95_each = {pid: _float(v) for pid, v in session.execute(ranks)}
    return everything, {pid: Figures(t, p95_each.get(pid)) for pid, t in each.items()}


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _figures_in_one_pass(session: Session, window: Window, *, per_pipeline: bool) -> tuple[Figures, dict[str, Figures]]:
    p95 = func.percentile_cont(P95).within_group(duration_ms(session)).filter(finished())
    columns = [*_totals_columns(session), p95]
    if not per_pipeline:
        row = session.execute(select(*columns).where(*window.where())).one()
        return Figures(_totals(row[:-1]), _float(row[-1])), {}
    stmt = (
        select(Execution.pipeline_id, *columns)
        .where(*window.where())
        .group_by(func.grouping_sets(Execution.pipeline_id, literal_column("()")))
    )
    everything, each = EMPTY, {}
    for row in session.execute(stmt):
        found = Figures(_totals(row[1:-1]), _float(row[-1]))
        if row[0] is None:  # the () grouping set: pipeline_id is never null otherwise
            everything = found
        else:
            each[row[0]] = found
    return everything, each


def _nearest_ranks(session: Session, where: list[ColumnElement[bool]], key: list[Any]) -> Any:
    """SQLite: rank the durations in each group (window functions), keep the two ranks around (n-1)*0.95 and
    interpolate between them."""
    d = duration_ms(session).label("d")
    ranked = select(
        *[k.label("k") for k in key],
        d,
        (func.row_number().over(partition_by=key or None, order_by=d) - 1).label("rn"),
        func.count().over(partition_by=key or None).label("n"),
    ).where(*where)
    r = ranked.subquery()
    position = (r.c.n - 1) * P95
    low = cast(position, Integer)  # truncates: position >= 0
    lo = func.max(case((r.c.rn == low, r.c.d)))
    hi = func.max(case((r.c.rn == low + 1, r.c.d)))
    fraction = func.max(position - low)
    value = lo + func.coalesce(hi - lo, 0) * fraction
    keys = [r.c.k] if key else []
    stmt = select(*keys, cast(value, Float)).where(r.c.rn.between(low, low + 1)).group_by(*keys)
    return stmt if key else select(literal_column("NULL"), stmt.subquery())


def _day(session: Session) -> ColumnElement[str]:
    if _postgres(session):
        return func.to_char(func.timezone("UTC", Execution.submitted_at), "YYYY-MM-DD")
    return func.date(Execution.submitted_at)


def history(session: Session, window: Window) -> list[Day]:
    """Per UTC day of submission: the day's totals and the status of its last execution, oldest first."""
    day = _day(session).label("day")
    per_day = select(day, *_totals_columns(session)).where(*window.where()).group_by(day).order_by(day)
    latest = select(
        day,
        Execution.status,
        func.row_number()
        .over(partition_by=day, order_by=(Execution.submitted_at.desc(), Execution.id.desc()))
        .label("rn"),
    ).where(*window.where())
    last = latest.subquery()
    statuses = {d: st for d, st in session.execute(select(last.c.day, last.c.status).where(last.c.rn == 1))}
    return [Day(str(row[0]), _totals(row[1:]), statuses[row[0]]) for row in session.execute(per_day)]


def task_time_columns() -> list[Any]:
    """pipeline, task, summed duration ms, runs with a duration (to group by pipeline and task)."""
    return [
        ExecutionTask.pipeline_id,
        ExecutionTask.task_id,
        func.coalesce(func.sum(ExecutionTask.duration_ms), 0),
        func.count(ExecutionTask.duration_ms),
    ]


def task_time(session: Session, where: list[Any]) -> list[tuple[str, str, int, int]]:
    """(pipeline, task, summed duration ms, runs with a duration) of the task rows matching `where` (each task
    row carries its execution's tenant, pipeline and submission: Window.where(ExecutionTask), no join)."""
    stmt = select(*task_time_columns()).where(*where).group_by(ExecutionTask.pipeline_id, ExecutionTask.task_id)
    return [(p, t, int(ms or 0), int(n)) for p, t, ms, n in session.execute(stmt)]


def failures_by_task(session: Session, where: list[Any], limit: int | None) -> list[tuple[str, str, int]]:
    """(pipeline, task, failed runs) of the tasks that ended failed in the failed executions matching `where`
    (Window.where()), most first (driven from the failed executions: a few, each with an index lookup of its
    tasks); all with limit None."""
    failures = func.count().label("failures")
    stmt = (
        select(ExecutionTask.pipeline_id, ExecutionTask.task_id, failures)
        .join(Execution, Execution.id == ExecutionTask.execution_id)
        .where(*where, Execution.status == FAILED, ExecutionTask.state == "failed")
        .group_by(ExecutionTask.pipeline_id, ExecutionTask.task_id)
        .order_by(failures.desc(), ExecutionTask.pipeline_id, ExecutionTask.task_id)
        .limit(limit)
    )
    return [(p, t, int(n)) for p, t, n in session.execute(stmt)]


def top_errors(session: Session, window: Window, limit: int) -> list[tuple[str, int, int, datetime]]:
    """(message, failed executions, pipelines, latest submission) of failed executions' error messages."""
    count = func.count().label("n")
    stmt = (
        select(
            Execution.error_message,
            count,
            func.count(func.distinct(Execution.pipeline_id)),
            func.max(Execution.submitted_at),
        )
        .where(*window.where(), Execution.status == FAILED, Execution.error_message.is_not(None))
        .group_by(Execution.error_message)
        .order_by(count.desc(), Execution.error_message)
        .limit(limit)
    )
    return [(m or "", int(n), int(p), _aware(at)) for m, n, p, at in session.execute(stmt)]


def _aware(value: Any) -> datetime:
    """max() of a datetime column comes back as the backend gives it (SQLite: text, no zone)."""
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def names(session: Session, tenant_id: str, pipeline_ids: set[str]) -> dict[str, str]:
    if not pipeline_ids:
        return {}
    stmt = select(Pipeline.id, Pipeline.name).where(Pipeline.tenant_id == tenant_id, Pipeline.id.in_(pipeline_ids))
    return {pid: name for pid, name in session.execute(stmt)}
