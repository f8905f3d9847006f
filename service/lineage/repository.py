"""Reads of the stored OpenLineage datasets (service/lineage/receiver.py writes them) and of executions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Row, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from dag_factory.spec.task_ids import SINKS_PREFIX, SOURCES_PREFIX
from service.executions.models import Execution
from service.lineage.models import LineageDataset


@dataclass(frozen=True)
class EventDataset:
    """A dataset a task of an execution reported: an input of a sources.* task or an output of a sinks.* task."""

    pipeline_id: str
    execution_id: str
    task_id: str
    direction: str  # input | output
    namespace: str
    name: str


def _boundary() -> Select[str, str, str | None, str, str, str, int]:
    """What the sources read and the sinks wrote (a source task's output and a sink task's input are the run's
    staging tables), once per execution, task and dataset, with the newest row's id."""
    keys = (
        LineageDataset.pipeline_id,
        LineageDataset.execution_id,
        LineageDataset.task_id,
        LineageDataset.direction,
        LineageDataset.namespace,
        LineageDataset.name,
    )
    return (
        select(*keys, func.max(LineageDataset.id))
        .where(
            or_(
                and_(LineageDataset.direction == "input", LineageDataset.task_id.startswith(SOURCES_PREFIX)),
                and_(LineageDataset.direction == "output", LineageDataset.task_id.startswith(SINKS_PREFIX)),
            )
        )
        .group_by(*keys)
    )


def _latest_per_pipeline(rows: Sequence[Row[str, str, str | None, str, str, str, int]]) -> list[EventDataset]:
    """The rows of each pipeline's latest execution that reported what its sinks wrote; of its latest one at
    all when none did (a sql sink reports no table statistics, so no output): a run that failed before its
    sinks says nothing of what the pipeline writes, and a later complete one wins over it."""
    with_sinks: dict[str, tuple[int, str]] = {}
    any_rows: dict[str, tuple[int, str]] = {}
    for pipeline_id, execution_id, _, direction, _, _, last in rows:
        if last > any_rows.get(pipeline_id, (-1, ""))[0]:
            any_rows[pipeline_id] = (last, execution_id)
        if direction == "output" and last > with_sinks.get(pipeline_id, (-1, ""))[0]:
            with_sinks[pipeline_id] = (last, execution_id)
    chosen = {p: (with_sinks.get(p) or newest)[1] for p, newest in any_rows.items()}
    return [
        EventDataset(pipeline_id, execution_id, task_id or "", direction, namespace, name)
        for pipeline_id, execution_id, task_id, direction, namespace, name, _ in rows
        if chosen.get(pipeline_id) == execution_id
    ]


def pipeline_event_datasets(session: Session, tenant_id: str, pipeline_id: str) -> list[EventDataset]:
    """The source inputs and sink outputs of the pipeline's latest execution that reported its sinks (see above)."""
    stmt = _boundary().where(LineageDataset.tenant_id == tenant_id, LineageDataset.pipeline_id == pipeline_id)
    return _latest_per_pipeline(session.execute(stmt).all())


def tenant_event_datasets(session: Session, tenant_id: str) -> list[EventDataset]:
    """The same for every pipeline of the tenant."""
    stmt = _boundary().where(LineageDataset.tenant_id == tenant_id)
    return _latest_per_pipeline(session.execute(stmt).all())


def last_execution(session: Session, tenant_id: str, pipeline_id: str) -> Execution | None:
    """The pipeline's execution that started last (one still queued has not executed yet)."""
    stmt = (
        select(Execution)
        .where(
            Execution.tenant_id == tenant_id,
            Execution.pipeline_id == pipeline_id,
            Execution.started_at.is_not(None),
        )
        .order_by(Execution.started_at.desc(), Execution.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()
