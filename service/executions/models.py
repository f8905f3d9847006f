from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, Numeric, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, utcnow

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"
STATUSES = (QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
RUN_STATE = {"queued": QUEUED, "running": RUNNING, "success": COMPLETED, "failed": FAILED}  # Airflow's -> ours
DONE_TASK_STATES = frozenset({"success", "skipped", "failed", "upstream_failed", "removed"})  # Airflow's


# An execution whose stored cost is not the cost of the run as it last finished (service.cost).
UNSETTLED = "cost_settled_for IS NULL OR cost_settled_for <> finished_at"
FAILED_ONLY = "status = 'FAILED'"


class Execution(Base):
    __tablename__ = "executions"
    # The monitoring metrics' windows (service/monitoring/metrics_repository.py): a tenant's, a pipeline's.
    __table_args__ = (
        Index("ix_executions_tenant_submitted", "tenant_id", "submitted_at"),
        Index("ix_executions_tenant_pipeline_submitted", "tenant_id", "pipeline_id", "submitted_at"),
        # The metrics rollup finds the executions changed since its last pass (service/monitoring/rollup.py).
        Index("ix_executions_updated_at", "updated_at"),
        # The runs whose cost is not stored yet (computed live): few, found without reading the settled ones.
        Index(
            "ix_executions_unsettled",
            "tenant_id",
            "submitted_at",
            postgresql_where=text(UNSETTLED),
            sqlite_where=text(UNSETTLED),
        ),
        # The metrics report's top errors and failures by task: the failed runs of a period, not all of them.
        Index(
            "ix_executions_failed",
            "tenant_id",
            "submitted_at",
            postgresql_where=text(FAILED_ONLY),
            sqlite_where=text(FAILED_ONLY),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # also the Airflow dag_run_id
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), index=True)
    pipeline_revision: Mapped[int] = mapped_column(Integer)
    dag_id: Mapped[str] = mapped_column(String(250))
    status: Mapped[str] = mapped_column(String(20), index=True)
    engine: Mapped[str] = mapped_column(String(20), default="airflow")
    priority: Mapped[str] = mapped_column(String(10), default="NORMAL")
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The schedule that started it (its trigger endpoint, or Airflow's scheduler); null when executed by request.
    schedule_id: Mapped[str | None] = mapped_column(String(32), index=True)
    # Outbox: the execution is stored first; `submitted` flips once Airflow has the run.
    submitted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    submit_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_submit_error: Mapped[str | None] = mapped_column(Text)
    airflow_state: Mapped[str | None] = mapped_column(String(20))
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error_message: Mapped[str | None] = mapped_column(Text)
    # Results of the run's quality checks, read from the quality tasks' XCom once the run has finished;
    # null until then.
    quality_results: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # Rows and bytes the run's tasks reported in their OpenLineage events (output statistics), summed by the
    # lineage receiver as the events arrive (one UPDATE each); null until a task reported any.
    rows_processed: Mapped[int | None] = mapped_column(BigInteger, default=None)
    bytes_processed: Mapped[int | None] = mapped_column(BigInteger, default=None)
    rows_written: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_by: Mapped[str | None] = mapped_column(String(200))
    # An admin executed it with "overrideBudget": true (past a reached monthly budget; service/cost).
    budget_override: Mapped[bool] = mapped_column(Boolean, default=False)
    # The cost of a finished run as shown (service/cost), stored once its late OpenLineage events are in:
    # month and period sums read these instead of recomputing every run. `cost_settled_for` is the
    # finished_at it was computed for (a retried run finishes again: settled anew).
    cost_compute_usd: Mapped[Decimal | None] = mapped_column(Numeric(18, 6), default=None)
    cost_storage_usd: Mapped[Decimal | None] = mapped_column(Numeric(18, 6), default=None)
    cost_network_usd: Mapped[Decimal | None] = mapped_column(Numeric(18, 6), default=None)
    cost_settled_for: Mapped[datetime | None] = mapped_column(default=None)
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ExecutionTask(Base):
    """A finished execution's task instances as Airflow last reported them (written when the run is seen to
    finish, replaced if it is re-run): what the monitoring report sums in SQL (bottlenecks, failures by task)."""

    __tablename__ = "execution_tasks"
    __table_args__ = (
        Index("ix_execution_tasks_pipeline", "tenant_id", "pipeline_id"),
        # The monitoring report's windows: the tasks of a tenant's executions submitted in a period.
        Index("ix_execution_tasks_tenant_submitted", "tenant_id", "submitted_at"),
    )

    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    pipeline_id: Mapped[str] = mapped_column(String(64))
    submitted_at: Mapped[datetime | None] = mapped_column()  # the execution's (copied: no join to filter by it)
    state: Mapped[str | None] = mapped_column(String(20))
    try_number: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class AdmissionLock(Base):
    """One row per limit scope (`tenant:<id>`, `pipeline:<id>`), written at the start of an execute so that
    concurrent executes of one scope take turns (service/executions/limits.py)."""

    __tablename__ = "admission_locks"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    locked_at: Mapped[datetime] = mapped_column(default=utcnow)
