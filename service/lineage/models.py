"""What Airflow's openlineage provider reported: one row per accepted event, one per dataset it names."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, utcnow


class LineageEvent(Base):
    """One OpenLineage run event of a pipeline's DAG (a DAG-level event when `task_id` is null), stored once:
    `dedup_key` is the hash of (run id, event type, event time, job namespace and name)."""

    __tablename__ = "lineage_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedup_key: Mapped[str] = mapped_column(String(64), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), index=True)
    # The Airflow run id, which is the execution id. No foreign key: a scheduled run's events can arrive
    # before the service has imported the run as an execution.
    execution_id: Mapped[str] = mapped_column(String(250), index=True)
    ol_run_id: Mapped[str] = mapped_column(String(64))  # OpenLineage's run id (a UUID, not the execution id)
    event_type: Mapped[str] = mapped_column(String(16))  # START RUNNING COMPLETE FAIL ABORT OTHER
    event_time: Mapped[datetime] = mapped_column()
    job_namespace: Mapped[str] = mapped_column(String(500))
    job_name: Mapped[str] = mapped_column(String(500))
    task_id: Mapped[str | None] = mapped_column(String(250))
    payload: Mapped[str] = mapped_column(Text)  # the body as received: forwarded unchanged
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Forwarding to PIPELINE_OPENLINEAGE_FORWARD_URL (an outbox): pending until delivered.
    forward_pending: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    forward_attempts: Mapped[int] = mapped_column(Integer, default=0)
    forward_after: Mapped[datetime | None] = mapped_column()
    forward_error: Mapped[str | None] = mapped_column(Text)


class LineageDataset(Base):
    """One input or output dataset of a stored event, with the output statistics where the event had them."""

    __tablename__ = "lineage_datasets"
    __table_args__ = (Index("ix_lineage_datasets_tenant_name", "tenant_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("lineage_events.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    pipeline_id: Mapped[str] = mapped_column(String(64), index=True)
    execution_id: Mapped[str] = mapped_column(String(250), index=True)
    task_id: Mapped[str | None] = mapped_column(String(250))
    direction: Mapped[str] = mapped_column(String(6))  # input | output
    namespace: Mapped[str] = mapped_column(String(500))
    name: Mapped[str] = mapped_column(String(500))
    rows: Mapped[int | None] = mapped_column(BigInteger)
    bytes: Mapped[int | None] = mapped_column(BigInteger)
