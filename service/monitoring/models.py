"""Alerts the service raises about pipelines, the tenants' webhooks, and the durable queue of deliveries."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, Float, ForeignKey, Index, Integer, Numeric, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, utcnow

CRITICAL, WARNING, INFO = "CRITICAL", "WARNING", "INFO"
SEVERITIES = (CRITICAL, WARNING, INFO)
OPEN, ACKNOWLEDGED, RESOLVED = "OPEN", "ACKNOWLEDGED", "RESOLVED"
ALERT_STATUSES = (OPEN, ACKNOWLEDGED, RESOLVED)
# What an alert is about (`type`); one unresolved alert per (tenant, condition key) at most.
RUN_FAILED, QUALITY_WARNING, DURATION_ANOMALY, SLA_MISSED = (
    "RUN_FAILED",
    "QUALITY_WARNING",
    "DURATION_ANOMALY",
    "SLA_MISSED",
)
BUDGET_80, BUDGET_100 = "BUDGET_80", "BUDGET_100"
ALERT_TYPES = (RUN_FAILED, QUALITY_WARNING, DURATION_ANOMALY, SLA_MISSED, BUDGET_80, BUDGET_100)


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        # Deduplication: one alert per condition while it is not resolved (partial unique index, both backends).
        Index(
            "uq_alerts_open_condition",
            "tenant_id",
            "condition_key",
            unique=True,
            postgresql_where=text("status <> 'RESOLVED'"),
            sqlite_where=text("status <> 'RESOLVED'"),
        ),
        Index("ix_alerts_tenant_raised", "tenant_id", "raised_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # alertId
    tenant_id: Mapped[str] = mapped_column(String(64))
    pipeline_id: Mapped[str | None] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), index=True)
    execution_id: Mapped[str | None] = mapped_column(String(64))  # the run that raised it (kept if deleted)
    type: Mapped[str] = mapped_column(String(40))
    # The condition it is about, e.g. "RUN_FAILED:<pipelineId>", "BUDGET_80:tenant:<month>"
    condition_key: Mapped[str] = mapped_column(String(300))
    severity: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(15), index=True)
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    raised_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    acknowledged_note: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column()


class AlertWebhook(Base):
    """A tenant's endpoint that receives its alerts; the secret signs each delivery (HMAC-SHA256 of the body)."""

    __tablename__ = "alert_webhooks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(String(2000))
    secret_encrypted: Mapped[str] = mapped_column(Text)  # Fernet (service.secrets.Vault); never returned
    # Which alerts it receives: severities (null = all), and whether raise/acknowledge/resolve events.
    severities: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AlertDelivery(Base):
    """One alert event (raised, acknowledged, resolved) to one webhook: the durable queue. Written in the
    transaction that changed the alert; sent by the `alert-deliveries` worker (SKIP LOCKED), retried with
    exponential back-off until delivered or abandoned."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (Index("ix_alert_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("alert_webhooks.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(20))  # alert.raised | alert.acknowledged | alert.resolved
    body: Mapped[str] = mapped_column(Text)  # the exact JSON sent (signed as is)
    status: Mapped[str] = mapped_column(String(15))  # PENDING | DELIVERED | ABANDONED
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    response_status: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()


class MetricsDay(Base):
    """One pipeline's executions submitted in a block of sealed UTC days, aggregated (service.monitoring.rollup):
    what the metrics read for whole past days instead of every execution. A block is `days` long (a power of
    two up to 64) and starts at `day`, aligned (its ordinal is a multiple of `days`); days = 1 is one day."""

    __tablename__ = "metrics_days"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    days: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # 1, 2, 4, ... 64
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True)
    executions: Mapped[int] = mapped_column(Integer)
    completed: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    finished: Mapped[int] = mapped_column(Integer)  # COMPLETED, FAILED or CANCELLED
    duration_sum_ms: Mapped[float] = mapped_column(Float)
    duration_count: Mapped[int] = mapped_column(Integer)  # finished runs with both dates
    rows: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    settled_cost_usd: Mapped[Decimal] = mapped_column(Numeric(18, 6))  # the stored cost of the settled runs
    unsettled: Mapped[int] = mapped_column(Integer)  # runs without a stored cost (computed live when read)


class MetricsDayDuration(Base):
    """The histogram of one pipeline's run durations in a block of sealed UTC days (as MetricsDay's): how many
    finished runs took a duration in `bucket` (buckets 2 % wide, service.monitoring.rollup.bucket_of)."""

    __tablename__ = "metrics_day_durations"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    days: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # 1, 2, 4, ... 64
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    runs: Mapped[int] = mapped_column(Integer)


class MetricsDayTask(Base):
    """One task of one pipeline in a block of sealed UTC days (as MetricsDay's): its summed run time, runs with
    a duration, and failures (the task failed in a FAILED execution)."""

    __tablename__ = "metrics_day_tasks"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    days: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # 1, 2, 4, ... 64
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    duration_sum_ms: Mapped[int] = mapped_column(BigInteger)
    runs: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer)


class MetricsRollup(Base):
    """The rollup's progress (one row): days up to `sealed_through` are in metrics_days; executions changed
    since `watermark` (updated_at) have their day rebuilt."""

    __tablename__ = "metrics_rollup"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sealed_through: Mapped[date | None] = mapped_column(Date)
    watermark: Mapped[datetime | None] = mapped_column()
