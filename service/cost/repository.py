"""The cost feature's queries: the executions of a window with their task snapshots, the bytes their tasks'
OpenLineage events reported (one grouped query for all of them), and the budgets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from service.cost.models import Budget, budget_key
from service.executions.models import TERMINAL, Execution
from service.lineage.models import LineageDataset


class ExecutionRow(NamedTuple):
    id: str
    pipeline_id: str
    status: str
    submitted_at: datetime
    finished_at: datetime | None
    progress: dict[str, Any]


class DatasetRow(NamedTuple):
    """One dataset a task of an execution read or wrote, with the largest size any of its events reported
    (START and COMPLETE name the same dataset; only COMPLETE carries outputStatistics)."""

    execution_id: str
    task_id: str
    direction: str
    namespace: str
    name: str
    bytes: int | None


def unsettled() -> ColumnElement[bool]:
    """The negation of settled(), spelled as the partial index ix_executions_unsettled is (so it is used)."""
    return or_(Execution.cost_settled_for.is_(None), Execution.cost_settled_for != Execution.finished_at)


def settled() -> ColumnElement[bool]:
    """Whether an execution's stored cost is the cost of the run as it last finished."""
    return and_(Execution.cost_settled_for.is_not(None), Execution.cost_settled_for == Execution.finished_at)


def executions_stmt(
    tenant_id: str,
    *,
    pipeline_id: str | None,
    since: datetime,
    until: datetime,
    execution_id: str | None = None,
    unsettled_only: bool = False,
) -> Select[Any]:
    """The executions of the tenant (of one pipeline, or one execution) submitted in [since, until); only
    those without a settled cost with `unsettled_only`."""
    stmt = select(Execution.id).where(
        Execution.tenant_id == tenant_id, Execution.submitted_at >= since, Execution.submitted_at < until
    )
    if unsettled_only:
        stmt = stmt.where(unsettled())
    if pipeline_id is not None:
        stmt = stmt.where(Execution.pipeline_id == pipeline_id)
    if execution_id is not None:
        stmt = stmt.where(Execution.id == execution_id)
    return stmt


def executions(session: Session, ids: Select[Any]) -> list[ExecutionRow]:
    stmt = select(
        Execution.id,
        Execution.pipeline_id,
        Execution.status,
        Execution.submitted_at,
        Execution.finished_at,
        Execution.progress,
    ).where(Execution.id.in_(ids.scalar_subquery()))
    return [ExecutionRow(*row) for row in session.execute(stmt.order_by(Execution.submitted_at, Execution.id))]


def datasets(session: Session, tenant_id: str, ids: Select[Any]) -> list[DatasetRow]:
    """The task-level datasets of the executions `ids` selects, one row per (execution, task, direction,
    dataset): one query, grouped in the database."""
    stmt = (
        select(
            LineageDataset.execution_id,
            LineageDataset.task_id,
            LineageDataset.direction,
            LineageDataset.namespace,
            LineageDataset.name,
            func.max(LineageDataset.bytes),
        )
        .where(
            LineageDataset.tenant_id == tenant_id,
            LineageDataset.task_id.is_not(None),
            LineageDataset.execution_id.in_(ids.scalar_subquery()),
        )
        .group_by(
            LineageDataset.execution_id,
            LineageDataset.task_id,
            LineageDataset.direction,
            LineageDataset.namespace,
            LineageDataset.name,
        )
    )
    return [DatasetRow(ex, task or "", d, ns, name, size) for ex, task, d, ns, name, size in session.execute(stmt)]


def budgets(session: Session, tenant_id: str, pipeline_id: str | None) -> Sequence[Budget]:
    """The tenant's budget and, with `pipeline_id`, the pipeline's (those that exist)."""
    keys = [budget_key(tenant_id, None)]
    if pipeline_id is not None:
        keys.append(budget_key(tenant_id, pipeline_id))
    return session.scalars(select(Budget).where(Budget.key.in_(keys), Budget.tenant_id == tenant_id)).all()


def budget(session: Session, tenant_id: str, pipeline_id: str | None) -> Budget | None:
    found = session.get(Budget, budget_key(tenant_id, pipeline_id))
    return found if found is not None and found.tenant_id == tenant_id else None


def settled_totals(
    session: Session, tenant_id: str, *, pipeline_id: str | None, since: datetime, until: datetime
) -> dict[str, Decimal]:
    """The stored cost of the settled executions submitted in [since, until), summed per pipeline in SQL."""
    parts = [
        func.coalesce(c, 0)
        for c in (Execution.cost_compute_usd, Execution.cost_storage_usd, Execution.cost_network_usd)
    ]
    stmt = (
        select(Execution.pipeline_id, func.sum(parts[0] + parts[1] + parts[2]))
        .where(
            Execution.tenant_id == tenant_id,
            Execution.submitted_at >= since,
            Execution.submitted_at < until,
            settled(),
        )
        .group_by(Execution.pipeline_id)
    )
    if pipeline_id is not None:
        stmt = stmt.where(Execution.pipeline_id == pipeline_id)
    return {pid: Decimal(str(total or 0)) for pid, total in session.execute(stmt)}


def to_settle(session: Session, *, finished_before: datetime, limit: int) -> list[tuple[str, str]]:
    """(execution id, tenant id) of finished executions whose cost is not stored for their last finish, the
    oldest first; locked (SKIP LOCKED on PostgreSQL: replicas settle different ones)."""
    stmt = (
        select(Execution.id, Execution.tenant_id)
        .where(
            Execution.status.in_(TERMINAL),
            Execution.finished_at.is_not(None),
            Execution.finished_at < finished_before,
            unsettled(),
        )
        .order_by(Execution.finished_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [(ex_id, tenant) for ex_id, tenant in session.execute(stmt)]
