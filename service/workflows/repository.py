from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.workflows.models import PENDING, ApprovalAnswer, ApprovalGate


def gates(session: Session, execution_id: str) -> dict[str, ApprovalGate]:
    rows = session.scalars(select(ApprovalGate).where(ApprovalGate.execution_id == execution_id))
    return {g.gate: g for g in rows}


def answers(session: Session, execution_id: str) -> list[ApprovalAnswer]:
    query = select(ApprovalAnswer).where(ApprovalAnswer.execution_id == execution_id)
    return list(session.scalars(query.order_by(ApprovalAnswer.answered_at, ApprovalAnswer.id)))


def gate_for_update(session: Session, execution_id: str, gate: str, tenant_id: str) -> ApprovalGate:
    """The gate's row, locked (concurrent answers to one gate take turns); created on its first answer."""
    row = session.scalar(
        select(ApprovalGate)
        .where(ApprovalGate.execution_id == execution_id, ApprovalGate.gate == gate)
        .with_for_update()
    )
    if row is not None:
        return row
    row = ApprovalGate(execution_id=execution_id, gate=gate, tenant_id=tenant_id, status=PENDING)
    try:
        with session.begin_nested():  # two first answers at once: one insert wins, the other reads its row
            session.add(row)
    except IntegrityError:
        return gate_for_update(session, execution_id, gate, tenant_id)
    return row


def undelivered(session: Session, limit: int = 50) -> list[ApprovalGate]:
    """Decided gates whose decision Airflow does not have yet (the outbox), locked for this worker."""
    return list(
        session.scalars(
            select(ApprovalGate)
            .where(ApprovalGate.airflow_answered.is_(False), ApprovalGate.status != PENDING)
            .order_by(ApprovalGate.updated_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
