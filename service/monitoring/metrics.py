"""Execution metrics over a period ending now: a pipeline's figures and day-by-day history, or the tenant's
totals with a report of where time and failures go. The figures come aggregated from SQL
(service/monitoring/metrics_repository.py); cost is the cost feature's (stored cost of settled runs, the live
cost of the others)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from service.config import RateCard
from service.cost import service as cost
from service.db import utcnow
from service.errors import ValidationFailed
from service.monitoring import metrics_repository as repository
from service.monitoring import rollup
from service.monitoring.metrics_repository import Figures, Window
from service.monitoring.metrics_schemas import (
    PERIODS,
    REPORT_LIMIT,
    Bottleneck,
    ErrorMessage,
    FailingPipeline,
    HistoryDay,
    Metrics,
    PipelineMetricsOut,
    Report,
    SlowPipeline,
    TaskFailures,
    TenantMetricsOut,
)
from service.pipelines.models import Pipeline


def parse_period(period: str) -> timedelta:
    if period not in PERIODS:
        raise ValidationFailed(
            f"period must be one of {', '.join(PERIODS)}",
            details=[{"path": "period", "message": f"must be one of {list(PERIODS)}"}],
        )
    return PERIODS[period]


def window_of(tenant_id: str, pipeline_id: str | None, period: str, now: datetime) -> Window:
    return Window(tenant_id, pipeline_id, now - parse_period(period), now)


def _ms(value: float | None) -> int | None:
    return None if value is None else round(value)


def _metrics(figures: Figures, cost_usd: Decimal) -> Metrics:
    t, p95 = figures
    return Metrics(
        execution_count=t.executions,
        completed_count=t.completed,
        failed_count=t.failed,
        success_rate=round(t.completed / t.finished, 4) if t.finished else None,
        avg_duration_ms=_ms(t.avg_duration_ms),
        p95_duration_ms=_ms(p95),
        total_rows_processed=t.rows,
        total_bytes_processed=t.bytes,
        total_cost_usd=float(cost_usd),
    )


def _cost(session: Session, window: Window, figured: rollup.Figured, rates: RateCard) -> Decimal:
    """The stored cost of settled runs and the live cost of the others (the cost feature's sums; with the
    rollup, its stored cost and the live cost of the window's few unsettled runs)."""
    w = window
    if figured.settled_cost_usd is None:
        spent = cost.spent_by_pipeline(
            session, w.tenant_id, pipeline_id=w.pipeline_id, since=w.since, until=w.until, rates=rates, now=w.until
        )
        return sum(spent.values(), Decimal(0))
    live = cost.cost_of_executions(
        session,
        w.tenant_id,
        pipeline_id=w.pipeline_id,
        since=w.since,
        until=w.until,
        rates=rates,
        now=w.until,
        unsettled_only=True,
    )
    return figured.settled_cost_usd + sum((c.total for c in live), Decimal(0))


def pipeline_metrics(session: Session, pipeline: Pipeline, period: str, rates: RateCard) -> PipelineMetricsOut:
    window = window_of(pipeline.tenant_id, pipeline.id, period, utcnow())
    figured = rollup.figures(session, window, rollup.span_of(session, window), per_pipeline=False)
    history = [
        HistoryDay(
            date=day.date,
            status=day.last_status,
            duration_ms=_ms(day.totals.avg_duration_ms),
            rows=day.totals.rows,
            execution_count=day.totals.executions,
            completed_count=day.totals.completed,
            failed_count=day.totals.failed,
        )
        for day in repository.history(session, window)
    ]
    return PipelineMetricsOut(
        pipeline_id=pipeline.id,
        period=period,
        since=window.since,
        until=window.until,
        metrics=_metrics(figured.everything, _cost(session, window, figured, rates)),
        history=history,
    )


def tenant_metrics(session: Session, tenant_id: str, period: str, rates: RateCard) -> TenantMetricsOut:
    window = window_of(tenant_id, None, period, utcnow())
    span = rollup.span_of(session, window)
    figured = rollup.figures(session, window, span, per_pipeline=True)
    return TenantMetricsOut(
        period=period,
        since=window.since,
        until=window.until,
        metrics=_metrics(figured.everything, _cost(session, window, figured, rates)),
        report=report(session, window, span, figured.each),
    )


def report(session: Session, window: Window, span: rollup.Span | None, each: dict[str, Figures]) -> Report:
    by_pipeline = {pid: f.totals for pid, f in each.items()}
    p95s = {pid: f.p95_duration_ms for pid, f in each.items() if f.p95_duration_ms is not None}
    tasks = rollup.task_figures(session, window, span, REPORT_LIMIT)
    bottlenecks, failures = _bottlenecks(tasks.time), tasks.failures
    names = repository.names(session, window.tenant_id, set(by_pipeline))
    slowest = sorted(p95s, key=lambda pid: (-p95s[pid], pid))[:REPORT_LIMIT]
    failing = sorted((pid for pid, t in by_pipeline.items() if t.failed), key=lambda p: (-by_pipeline[p].failed, p))
    return Report(
        slowest_pipelines=[
            SlowPipeline(
                pipeline_id=pid,
                name=names.get(pid, ""),
                execution_count=by_pipeline[pid].executions,
                avg_duration_ms=_ms(by_pipeline[pid].avg_duration_ms),
                p95_duration_ms=_ms(p95s[pid]),
            )
            for pid in slowest
        ],
        most_failing_pipelines=[
            FailingPipeline(
                pipeline_id=pid,
                name=names.get(pid, ""),
                execution_count=by_pipeline[pid].executions,
                failed_count=by_pipeline[pid].failed,
                failure_rate=round(by_pipeline[pid].failed / by_pipeline[pid].finished, 4),
            )
            for pid in failing[:REPORT_LIMIT]
        ],
        bottlenecks=[b.model_copy(update={"name": names.get(b.pipeline_id, "")}) for b in bottlenecks],
        failures_by_task=[
            TaskFailures(pipeline_id=pid, name=names.get(pid, ""), task_id=task, failures=n)
            for pid, task, n in failures
        ],
        top_errors=[
            ErrorMessage(message=m, count=n, pipeline_count=p, last_seen_at=at)
            for m, n, p, at in repository.top_errors(session, window, REPORT_LIMIT)
        ],
    )


def _bottlenecks(task_time: list[tuple[str, str, int, int]]) -> list[Bottleneck]:
    """Per pipeline, the task whose summed run time is the largest share of all its tasks' (ties: task id);
    those that took the most time first. Input: one aggregated row per (pipeline, task)."""
    total: dict[str, int] = {}
    top: dict[str, tuple[str, int, int]] = {}
    for pid, task, ms, runs in task_time:
        total[pid] = total.get(pid, 0) + ms
        best = top.get(pid)
        if best is None or ms > best[1] or (ms == best[1] and task < best[0]):
            top[pid] = (task, ms, runs)
    found = [
        (
            ms,
            Bottleneck(
                pipeline_id=pid,
                name="",
                task_id=task,
                share=round(ms / total[pid], 4),
                avg_duration_ms=round(ms / runs) if runs else None,
            ),
        )
        for pid, (task, ms, runs) in top.items()
        if total[pid] > 0
    ]
    return [b for _, b in sorted(found, key=lambda f: (-f[0], f[1].pipeline_id))][:REPORT_LIMIT]
