from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from service.auth import CurrentPrincipal
from service.db import DbSession, run_after_commit
from service.executions import service as executions
from service.executions.schemas import ExecutionOut
from service.merge_patch import PATCH_OPENAPI, MergePatch
from service.schedules import service
from service.schedules.schemas import ScheduleIn, ScheduleOut
from service.schemas import Page, PageNumber, PageSize

router = APIRouter(prefix="/v1/pipelines/schedules", tags=["schedules"])


@router.post("", status_code=201, response_model=ScheduleOut, response_model_by_alias=True)
def create_schedule(body: ScheduleIn, principal: CurrentPrincipal, session: DbSession, request: Request) -> ScheduleOut:
    schedule = service.create(session, principal, body)
    run_after_commit(session, request.app.state.wake_workers)  # the publisher renders the new DAG file
    return service.to_out(schedule)


@router.get("", response_model=Page[ScheduleOut], response_model_by_alias=True)
def list_schedules(
    principal: CurrentPrincipal,
    session: DbSession,
    pipeline_id: Annotated[str | None, Query(alias="pipelineId")] = None,
    page: PageNumber = 0,
    size: PageSize = 20,
) -> Page[ScheduleOut]:
    """The cron schedules, then the pipelines' data schedules (type datasets, read-only)."""
    items, total = service.list_page(
        session, principal.tenant_id, pipeline_id=pipeline_id, offset=page * size, limit=size
    )
    return Page[ScheduleOut](items=items, total=total, page=page, size=size)


@router.get("/{schedule_id}", response_model=ScheduleOut, response_model_by_alias=True)
def get_schedule(schedule_id: str, principal: CurrentPrincipal, session: DbSession) -> ScheduleOut:
    return service.get_out(session, principal.tenant_id, schedule_id)


@router.put("/{schedule_id}", response_model=ScheduleOut, response_model_by_alias=True)
def update_schedule(
    schedule_id: str, body: ScheduleIn, principal: CurrentPrincipal, session: DbSession, request: Request
) -> ScheduleOut:
    schedule = service.update(session, principal, schedule_id, body)
    run_after_commit(session, request.app.state.wake_workers)
    return service.to_out(schedule)


@router.patch("/{schedule_id}", response_model=ScheduleOut, response_model_by_alias=True, openapi_extra=PATCH_OPENAPI)
def patch_schedule(
    schedule_id: str, body: MergePatch, principal: CurrentPrincipal, session: DbSession, request: Request
) -> ScheduleOut:
    """JSON Merge Patch of the PUT body: `{"enabled": false}` takes the schedule out of the DAG's timetable."""
    schedule = service.patch(session, principal, schedule_id, body)
    run_after_commit(session, request.app.state.wake_workers)
    return service.to_out(schedule)


@router.delete("/{schedule_id}", status_code=204)
def delete_schedule(schedule_id: str, principal: CurrentPrincipal, session: DbSession, request: Request) -> Response:
    service.delete(session, principal, schedule_id)
    run_after_commit(session, request.app.state.wake_workers)
    return Response(status_code=204)


@router.post("/{schedule_id}/trigger", status_code=202, response_model=ExecutionOut, response_model_by_alias=True)
def trigger_schedule(
    schedule_id: str, principal: CurrentPrincipal, session: DbSession, request: Request
) -> ExecutionOut:
    rate = request.app.state.settings.execute_rate_per_minute
    ex = service.trigger(
        session, principal, schedule_id, rate_per_minute=rate, budget_check=request.app.state.budget_check
    )
    run_after_commit(session, request.app.state.wake_workers)  # the dispatcher submits it (outbox)
    return executions.to_out(ex)
