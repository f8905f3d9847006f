"""Approval gates of executions (a definition's `approvals`, run as Airflow HITL tasks): each gate's decision
and every approver's answer."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, utcnow

PENDING, APPROVED, REJECTED, EXPIRED = "PENDING", "APPROVED", "REJECTED", "EXPIRED"
GATE_STATUSES = (PENDING, APPROVED, REJECTED, EXPIRED)


class ApprovalGate(Base):
    """A gate of one execution once it was answered or decided. `airflow_answered` flips when Airflow's HITL
    task has the decision (an outbox: a worker retries the answer while it is false)."""

    __tablename__ = "approval_gates"

    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True)
    gate: Mapped[str] = mapped_column(String(100), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(10), default=PENDING)
    decided_at: Mapped[datetime | None] = mapped_column()
    reason: Mapped[str | None] = mapped_column(Text)
    airflow_answered: Mapped[bool] = mapped_column(Boolean, default=False)
    airflow_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApprovalAnswer(Base):
    """One approver's answer to a gate: one per person (the JWT's sub)."""

    __tablename__ = "approval_answers"
    __table_args__ = (UniqueConstraint("execution_id", "gate", "approver", name="uq_approval_answers_person"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"), index=True)
    gate: Mapped[str] = mapped_column(String(100))
    tenant_id: Mapped[str] = mapped_column(String(64))
    approver: Mapped[str] = mapped_column(String(200))  # the JWT's sub
    approved: Mapped[bool] = mapped_column(Boolean)
    approved_by_note: Mapped[str | None] = mapped_column(String(200))  # a differing `approvedBy`, display only
    reason: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime] = mapped_column(default=utcnow)
