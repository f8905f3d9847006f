"""Queries of executions: one by id, pages, the outbox's pending submissions, duration history, and the
finished executions whose Airflow run says otherwise."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from service.airflow.models import DagRun
from service.db import page
from service.errors import NotFound
from service.executions.models import COMPLETED, FAILED, QUEUED, RUN_STATE, Execution
from service.executions.schemas import PRIORITIES
from service.pipelines import service as pipelines
from service.pipelines.models import Pipeline

# Airflow has no per-run priority: the service's own lever is the order in which queued executions are
# submitted (CRITICAL first). It matters when executions queue up (Airflow down, a backlog of submissions).
_PRIORITY_RANK = case({p: i for i, p in enumerate(reversed(PRIORITIES))}, value=Execution.priority, else_=9)
ESTIMATE_SAMPLE = 10  # successful runs the duration estimate looks at


def get_or_404(session: Session, tenant_id: str, execution_id: str) -> Execution:
    ex = session.scalars(
        select(Execution).where(Execution.tenant_id == tenant_id, Execution.id == execution_id)
    ).one_or_none()
    if ex is None:
        raise NotFound(f"execution '{execution_id}' not found")
    return ex


def list_page(
    session: Session,
    tenant_id: str,
    *,
    pipeline_id: str | None,
    status: str | None,
    submitted_from: datetime | None = None,
    submitted_to: datetime | None = None,
    schedule_id: str | None = None,
    offset: int,
    limit: int,
) -> tuple[Sequence[Execution], int]:
    stmt = select(Execution).where(Execution.tenant_id == tenant_id)
    if pipeline_id:
        stmt = stmt.where(Execution.pipeline_id == pipeline_id)
    if schedule_id:
        stmt = stmt.where(Execution.schedule_id == schedule_id)
    if status:
        stmt = stmt.where(Execution.status == status)
    if submitted_from:
        stmt = stmt.where(Execution.submitted_at >= submitted_from)
    if submitted_to:
        stmt = stmt.where(Execution.submitted_at < submitted_to)
    return page(session, stmt.order_by(Execution.submitted_at.desc(), Execution.id), offset=offset, limit=limit)


def estimate_duration_ms(session: Session, pipeline_id: str) -> int | None:
    """Median wall time of the pipeline's recent successful executions; None without history."""
    rows = session.execute(
        select(Execution.started_at, Execution.finished_at)
        .where(
            Execution.pipeline_id == pipeline_id,
            Execution.status == COMPLETED,
            Execution.started_at.is_not(None),
            Execution.finished_at.is_not(None),
        )
        .order_by(Execution.finished_at.desc())
        .limit(ESTIMATE_SAMPLE)
    ).all()
    durations = [(end - start).total_seconds() * 1000 for start, end in rows if start is not None and end is not None]
    return int(statistics.median(durations)) if durations else None


def pending_submissions(session: Session, limit: int = 20) -> Sequence[tuple[Execution, Pipeline]]:
    """Queued executions not yet in Airflow whose pipeline is settled (ACTIVE or INVALID), oldest first.
    Rows another replica holds are skipped (SKIP LOCKED on PostgreSQL)."""
    stmt = (
        select(Execution, Pipeline)
        .join(Pipeline, Pipeline.id == Execution.pipeline_id)
        .where(
            Execution.status == QUEUED,
            Execution.submitted.is_(False),
            Pipeline.status.in_([pipelines.ACTIVE, pipelines.INVALID]),
        )
        .order_by(_PRIORITY_RANK, Execution.submitted_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Execution)
    )
    return [(ex, p) for ex, p in session.execute(stmt).all()]


def reopened_in_airflow(session: Session, runs: list[DagRun]) -> list[str]:
    """Ids of finished executions whose Airflow run now says otherwise: cleared in Airflow and queued or
    running again, or even finished again (while the service was down) with another outcome."""
    # By DAG and run: run ids are unique per DAG only.
    airflow_status = {(r.dag_id, r.dag_run_id): RUN_STATE.get(r.state or "") for r in runs}
    if not airflow_status:
        return []
    finished = session.execute(
        select(Execution.id, Execution.dag_id, Execution.status).where(
            Execution.id.in_([run_id for _, run_id in airflow_status]), Execution.status.in_([COMPLETED, FAILED])
        )
    ).all()
    return [
        ex_id
        for ex_id, dag_id, status in finished
        if (dag_id, ex_id) in airflow_status and airflow_status[dag_id, ex_id] not in (None, status)
    ]
