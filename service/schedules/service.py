"""Schedules: cron + IANA time zone + parameters per schedule, several per pipeline. Airflow's scheduler runs
them: every change republishes the pipeline's DAG, whose timetable (dag_factory.timetables) holds the
pipeline's enabled schedules. The service only validates, stores and describes them (next fire times are
computed by dag_factory.spec.schedule, the same code the timetable uses)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from dag_factory.exceptions import DefinitionError
from dag_factory.spec import validate_parameters
from dag_factory.spec.schedule import (
    SCHEDULE_ID_PREFIX,
    cron_error,
    describe,
    next_fire,
    normalize_cron,
    timezone_error,
)
from service.audit.service import record
from service.auth import Principal
from service.db import utcnow
from service.errors import NotFound, ValidationFailed
from service.executions import service as executions
from service.executions.models import Execution
from service.executions.schemas import ExecuteIn
from service.merge_patch import patched
from service.pipelines import repository as pipeline_repo
from service.pipelines import service as pipelines
from service.pipelines.models import Pipeline
from service.pipelines.publisher import TimetableEntry
from service.schedules import data, repository
from service.schedules.models import Schedule
from service.schedules.schemas import ScheduleIn, ScheduleOut


def list_page(
    session: Session, tenant_id: str, *, pipeline_id: str | None, offset: int, limit: int
) -> tuple[list[ScheduleOut], int]:
    """The cron schedules (in creation order), then the data schedules (service.schedules.data)."""
    rows, crons = repository.list_page(session, tenant_id, pipeline_id=pipeline_id, offset=offset, limit=limit)
    datas = data.list_all(session, tenant_id, pipeline_id=pipeline_id)
    items = [to_out(s) for s in rows]
    if len(items) < limit:  # the page reaches past the cron schedules
        start = max(0, offset - crons)
        items += datas[start : start + limit - len(items)]
    return items, crons + len(datas)


def get_out(session: Session, tenant_id: str, schedule_id: str) -> ScheduleOut:
    if data.is_data_schedule(schedule_id):
        return data.get_or_404(session, tenant_id, schedule_id)
    return to_out(get_or_404(session, tenant_id, schedule_id))


def get_or_404(session: Session, tenant_id: str, schedule_id: str) -> Schedule:
    if data.is_data_schedule(schedule_id):
        data.refuse_change(session, tenant_id, schedule_id)  # 404, or 409: it is the pipeline definition's
    schedule = repository.get(session, tenant_id, schedule_id)
    if schedule is None:
        raise NotFound(f"schedule '{schedule_id}' not found")
    return schedule


def _pipeline(session: Session, tenant_id: str, pipeline_id: str | None) -> Pipeline:
    if not pipeline_id:
        raise ValidationFailed("pipelineId is required", details=[{"path": "pipelineId", "message": "required"}])
    pipeline = pipeline_repo.get(session, tenant_id, pipeline_id)
    if pipeline is None:
        raise NotFound(
            f"pipeline '{pipeline_id}' not found", details=[{"path": "pipelineId", "message": "no such pipeline"}]
        )
    return pipeline


def _validate(session: Session, pipeline: Pipeline, body: ScheduleIn) -> None:
    """Every problem at once, each naming its field."""
    details: list[dict[str, str]] = []
    if problem := cron_error(body.cron_expression):
        details.append({"path": "cronExpression", "message": problem})
    if problem := timezone_error(body.timezone):
        details.append({"path": "timezone", "message": problem})
    definition = pipelines.parse_definition(pipeline_repo.current_version(session, pipeline).definition)
    try:
        validate_parameters(definition, body.parameters)
    except DefinitionError as exc:
        details += [{"path": e["path"], "message": e["message"]} for e in exc.errors]
    if details:
        raise ValidationFailed(f"{details[0]['path']}: {details[0]['message']}", details=details)


def _republish(pipeline: Pipeline) -> None:
    """The publisher rewrites the DAG file (with the pipeline's schedules) and waits for Airflow to load it.
    A publish already in flight for the old schedules finishes into nothing: it only updates a DEPLOYING row."""
    pipeline.status = pipelines.CREATED
    pipeline.status_detail = None


def create(session: Session, principal: Principal, body: ScheduleIn) -> Schedule:
    pipeline = _pipeline(session, principal.tenant_id, body.pipeline_id)
    _validate(session, pipeline, body)
    now = utcnow()
    schedule = Schedule(
        id=SCHEDULE_ID_PREFIX + uuid.uuid4().hex[:12],
        tenant_id=principal.tenant_id,
        pipeline_id=pipeline.id,
        cron_expression=normalize_cron(body.cron_expression),
        timezone=body.timezone,
        parameters=body.parameters,
        enabled=body.enabled,
        created_by=principal.subject,
        created_at=now,
        updated_at=now,
    )
    session.add(schedule)
    _republish(pipeline)
    session.flush()
    record(session, principal, "create", "schedule", schedule.id, after=put_body(schedule))
    return schedule


def update(session: Session, principal: Principal, schedule_id: str, body: ScheduleIn) -> Schedule:
    schedule = get_or_404(session, principal.tenant_id, schedule_id)
    if body.pipeline_id is not None and body.pipeline_id != schedule.pipeline_id:
        raise ValidationFailed(
            "a schedule cannot move to another pipeline",
            details=[{"path": "pipelineId", "message": f"must stay '{schedule.pipeline_id}'"}],
        )
    pipeline = _pipeline(session, principal.tenant_id, schedule.pipeline_id)
    _validate(session, pipeline, body)
    before = put_body(schedule)
    schedule.cron_expression = normalize_cron(body.cron_expression)
    schedule.timezone = body.timezone
    schedule.parameters = body.parameters
    schedule.enabled = body.enabled
    schedule.updated_at = utcnow()  # also the schedule's new start: no run for a time before the change
    _republish(pipeline)
    session.flush()
    after = put_body(schedule)
    # Switching it on or off is what the log is searched for; other fields changing along show in before/after.
    action = "update" if before["enabled"] == after["enabled"] else "enable" if after["enabled"] else "disable"
    record(session, principal, action, "schedule", schedule.id, before=before, after=after)
    return schedule


def put_body(schedule: Schedule) -> dict[str, Any]:
    """The PUT body that would leave the schedule as it is: what a merge patch applies to."""
    return {
        "pipelineId": schedule.pipeline_id,
        "cronExpression": schedule.cron_expression,
        "timezone": schedule.timezone,
        "parameters": schedule.parameters,
        "enabled": schedule.enabled,
    }


def patch(session: Session, principal: Principal, schedule_id: str, changes: dict[str, Any]) -> Schedule:
    """A merge patch (`{"enabled": false}` switches it off): the merged document goes through `update`."""
    schedule = get_or_404(session, principal.tenant_id, schedule_id)
    return update(session, principal, schedule_id, patched(ScheduleIn, put_body(schedule), changes))


def delete(session: Session, principal: Principal, schedule_id: str) -> None:
    schedule = get_or_404(session, principal.tenant_id, schedule_id)
    pipeline = _pipeline(session, principal.tenant_id, schedule.pipeline_id)
    before = put_body(schedule)
    session.delete(schedule)
    _republish(pipeline)
    session.flush()
    record(session, principal, "delete", "schedule", schedule_id, before=before)


def trigger(
    session: Session,
    principal: Principal,
    schedule_id: str,
    *,
    rate_per_minute: int,
    budget_check: executions.BudgetCheck | None = None,
) -> Execution:
    """An ordinary execution, now, with the schedule's parameters (also for a disabled schedule; a data
    schedule's: the pipeline's defaults). Like any execute, refused once a budget is reached."""
    schedule = get_out(session, principal.tenant_id, schedule_id)
    body = ExecuteIn(parameters=schedule.parameters)
    ex = executions.execute(
        session, principal, schedule.pipeline_id, body, rate_per_minute=rate_per_minute, budget_check=budget_check
    )
    ex.schedule_id = schedule.schedule_id
    session.flush()
    # One entry for the schedule (this one) and one for the execution it started (executions.execute's).
    record(session, principal, "trigger", "schedule", schedule.schedule_id, details={"executionId": ex.id})
    return ex


def timetable_entries(session: Session, pipeline_id: str) -> list[TimetableEntry]:
    """What the pipeline's DAG file carries: its enabled schedules, in the order the timetable numbers them."""
    return [
        TimetableEntry(
            id=s.id,
            cron=s.cron_expression,
            timezone=s.timezone,
            parameters=s.parameters,
            since=s.updated_at.isoformat(),
        )
        for s in repository.enabled_for_pipeline(session, pipeline_id)
    ]


def next_run_at(schedule: Schedule, now: datetime | None = None) -> datetime | None:
    if not schedule.enabled:
        return None
    return next_fire(schedule.cron_expression, schedule.timezone, now or utcnow())


def to_out(schedule: Schedule) -> ScheduleOut:
    at = next_run_at(schedule)
    return ScheduleOut(
        schedule_id=schedule.id,
        pipeline_id=schedule.pipeline_id,
        cron_expression=schedule.cron_expression,
        timezone=schedule.timezone,
        parameters=schedule.parameters,
        enabled=schedule.enabled,
        description=f"{describe(schedule.cron_expression)} ({schedule.timezone})",
        next_run_at=at,
        next_run_at_local=at.astimezone(ZoneInfo(schedule.timezone)) if at else None,
        created_by=schedule.created_by,
        created_at=schedule.created_at,
        updated_at=schedule.updated_at,
    )
