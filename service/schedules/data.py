"""Data schedules: a pipeline whose definition has `schedule.onDatasets` runs when the tenant's other pipelines
wrote those datasets (Airflow's asset-triggered scheduling, rendered by the publisher, service.pipelines.assets).
Listed with the cron schedules, read-only: the definition is where it changes. Its id is `data-<pipelineId>`
(an execution's scheduleId: the runs it started, service.schedules.imports)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.errors import Conflict, NotFound
from service.pipelines import repository as pipeline_repo
from service.pipelines.models import Pipeline
from service.schedules.schemas import ScheduleOut

DATA_SCHEDULE_PREFIX = "data-"


def data_schedule_id(pipeline_id: str) -> str:
    return DATA_SCHEDULE_PREFIX + pipeline_id


def is_data_schedule(schedule_id: str) -> bool:
    return schedule_id.startswith(DATA_SCHEDULE_PREFIX)


def _on_datasets(definition: dict[str, Any]) -> list[str]:
    schedule = definition.get("schedule") or {}
    return [str(fqn) for fqn in schedule.get("onDatasets") or []]


def to_out(pipeline: Pipeline, on_datasets: list[str]) -> ScheduleOut:
    return ScheduleOut(
        schedule_id=data_schedule_id(pipeline.id),
        pipeline_id=pipeline.id,
        type="datasets",
        on_datasets=on_datasets,
        cron_expression=None,
        timezone=None,
        parameters={},
        enabled=True,
        description="When the tenant's pipelines have written " + ", ".join(on_datasets),
        next_run_at=None,
        next_run_at_local=None,
        created_by=pipeline.created_by,
        created_at=pipeline.created_at,
        updated_at=pipeline.updated_at,
    )


def list_all(session: Session, tenant_id: str, *, pipeline_id: str | None = None) -> list[ScheduleOut]:
    """The tenant's data schedules (one per pipeline that has one), in the pipelines' creation order."""
    found = []
    for pipeline, definition in pipeline_repo.tenant_definitions(session, tenant_id):
        if (pipeline_id is None or pipeline.id == pipeline_id) and (on := _on_datasets(definition)):
            found.append((pipeline, on))
    found.sort(key=lambda f: (f[0].created_at, f[0].id))
    return [to_out(pipeline, on) for pipeline, on in found]


def get_or_404(session: Session, tenant_id: str, schedule_id: str) -> ScheduleOut:
    pipeline = pipeline_repo.get(session, tenant_id, schedule_id.removeprefix(DATA_SCHEDULE_PREFIX))
    on = _on_datasets(pipeline_repo.current_version(session, pipeline).definition) if pipeline else []
    if pipeline is None or not on:
        raise NotFound(f"schedule '{schedule_id}' not found")
    return to_out(pipeline, on)


def refuse_change(session: Session, tenant_id: str, schedule_id: str) -> None:
    """A data schedule is part of its pipeline's definition: 409 (404 when the tenant has no such one)."""
    out = get_or_404(session, tenant_id, schedule_id)
    raise Conflict(
        f"schedule '{schedule_id}' is the data schedule of pipeline '{out.pipeline_id}': change or remove it in the "
        f"pipeline's definition (definition.schedule.onDatasets, PUT or PATCH /v1/pipelines/{out.pipeline_id})",
        details=[{"path": "scheduleId", "message": "read-only: defined by definition.schedule.onDatasets"}],
    )
