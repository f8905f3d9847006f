from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.auth import CurrentPrincipal
from service.db import DbSession, run_after_commit, session_scope, session_slot
from service.deps import Airflow
from service.errors import AirflowUnavailable, ValidationFailed
from service.executions import repository, service, streams
from service.executions.models import STATUSES, TERMINAL
from service.executions.schemas import ExecuteIn, ExecutionOut, LogsOut
from service.executions.sync import refresh, to_out
from service.schemas import Page, PageNumber, PageSize, UtcDateTime

router = APIRouter(tags=["executions"])
POLL_SECONDS = 1.0  # how often a stream looks at Airflow for news
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post(
    "/v1/pipelines/{pipeline_id}/execute", status_code=202, response_model=ExecutionOut, response_model_by_alias=True
)
def execute_pipeline(
    pipeline_id: str, principal: CurrentPrincipal, session: DbSession, request: Request, body: ExecuteIn | None = None
) -> ExecutionOut:
    rate = request.app.state.settings.execute_rate_per_minute
    budget_check: service.BudgetCheck = request.app.state.budget_check
    ex = service.execute(
        session, principal, pipeline_id, body or ExecuteIn(), rate_per_minute=rate, budget_check=budget_check
    )
    # Submission happens after the commit (outbox): an accepted execution exists even if Airflow is down.
    run_after_commit(session, request.app.state.wake_workers)
    return to_out(ex)


@router.get("/v1/pipelines/executions", response_model=Page[ExecutionOut], response_model_by_alias=True)
def list_executions(
    principal: CurrentPrincipal,
    session: DbSession,
    pipeline_id: Annotated[str | None, Query(alias="pipelineId")] = None,
    schedule_id: Annotated[str | None, Query(alias="scheduleId", description="executions of one schedule")] = None,
    status: Annotated[str | None, Query()] = None,
    submitted_from: Annotated[
        UtcDateTime | None, Query(alias="from", description="submittedAt at or after (ISO 8601)")
    ] = None,
    submitted_to: Annotated[UtcDateTime | None, Query(alias="to", description="submittedAt before (ISO 8601)")] = None,
    page: PageNumber = 0,
    size: PageSize = 20,
) -> Page[ExecutionOut]:
    if status is not None and status not in STATUSES:
        raise ValidationFailed(
            f"status must be one of {', '.join(STATUSES)}",
            details=[{"path": "status", "message": "unknown status"}],
        )
    for name, value in (("from", submitted_from), ("to", submitted_to)):
        if value is not None and value.tzinfo is None:
            raise ValidationFailed(
                f"{name} needs a time zone (e.g. 2026-02-12T00:00:00Z)",
                details=[{"path": name, "message": "time zone required"}],
            )
    if submitted_from and submitted_to and submitted_from > submitted_to:
        raise ValidationFailed("from is after to", details=[{"path": "from", "message": "must not be after 'to'"}])
    rows, total = repository.list_page(
        session,
        principal.tenant_id,
        pipeline_id=pipeline_id,
        status=status,
        submitted_from=submitted_from,
        submitted_to=submitted_to,
        schedule_id=schedule_id,
        offset=page * size,
        limit=size,
    )
    return Page[ExecutionOut](items=[to_out(e) for e in rows], total=total, page=page, size=size)


@router.get("/v1/pipelines/executions/{execution_id}", response_model=ExecutionOut, response_model_by_alias=True)
async def get_execution(execution_id: str, principal: CurrentPrincipal, request: Request) -> Response:
    # The hottest read (clients poll it). A per-process cache answers repeated polls without the database;
    # a miss reads the row (refreshing it from Airflow when stale) in the thread pool, serialised once.
    key = (principal.tenant_id, execution_id)
    status_cache = request.app.state.status_cache
    body = status_cache.get(key)
    if body is None:
        async with session_slot(request):
            body, ttl = await run_in_threadpool(_status_json, request, principal.tenant_id, execution_id)
        status_cache.put(key, body, ttl)
    return Response(body, media_type="application/json")


def _status_json(request: Request, tenant_id: str, execution_id: str) -> tuple[bytes, float]:
    state = request.app.state
    out, stale = _read_status(request, tenant_id, execution_id)
    if stale and state.status_refresh.refresh_active(state.airflow):
        out, _ = _read_status(request, tenant_id, execution_id)  # in a new transaction: the batch committed
    ttl = state.settings.status_cache_seconds if out.status in TERMINAL else state.settings.status_max_age_seconds
    return out.model_dump_json(by_alias=True).encode(), ttl


def _read_status(request: Request, tenant_id: str, execution_id: str) -> tuple[ExecutionOut, bool]:
    """The execution as stored, and whether it is too old to answer with (StatusRefresh.stale)."""
    state = request.app.state
    with session_scope(state.sessions) as session:
        ex = repository.get_or_404(session, tenant_id, execution_id)
        return to_out(ex), state.status_refresh.stale(ex, state.settings.status_max_age_seconds)


@router.post(
    "/v1/pipelines/executions/{execution_id}/cancel", response_model=ExecutionOut, response_model_by_alias=True
)
def cancel_execution(
    execution_id: str, principal: CurrentPrincipal, session: DbSession, airflow: Airflow, request: Request
) -> ExecutionOut:
    ex = repository.get_or_404(session, principal.tenant_id, execution_id)
    refresh(ex, airflow)
    service.cancel(ex, airflow, principal)
    request.app.state.status_cache.drop((principal.tenant_id, ex.id))
    return to_out(ex)


@router.post("/v1/pipelines/executions/{execution_id}/retry", response_model=ExecutionOut, response_model_by_alias=True)
def retry_execution(
    execution_id: str, principal: CurrentPrincipal, session: DbSession, airflow: Airflow, request: Request
) -> ExecutionOut:
    ex = repository.get_or_404(session, principal.tenant_id, execution_id)
    try:
        refresh(ex, airflow, reopen=True)  # it may have been re-run in Airflow already
    except AirflowUnavailable:
        pass
    service.retry(session, ex, airflow, principal)
    request.app.state.status_cache.drop((principal.tenant_id, ex.id))
    run_after_commit(session, request.app.state.wake_workers)
    return to_out(ex)


@router.get(
    "/v1/pipelines/executions/{execution_id}/logs",
    response_model=LogsOut,
    response_model_by_alias=True,
    responses={200: {"content": {"text/event-stream": {}}, "description": "with follow=true: `log` events, `end`"}},
)
def execution_logs(
    execution_id: str,
    principal: CurrentPrincipal,
    session: DbSession,
    airflow: Airflow,
    task: Annotated[
        str | None, Query(description="task id, e.g. 'sinks.daily_transactions' or 'daily_transactions'")
    ] = None,
    lines: Annotated[int, Query(ge=1, le=10_000)] = 100,
    follow: Annotated[bool, Query(description="stream new lines as Server-Sent Events until the task ends")] = False,
) -> Any:
    ex = repository.get_or_404(session, principal.tenant_id, execution_id)
    if follow:
        if task and ex.submitted:
            streams.check_task(ex, airflow, task)  # a wrong name is a 404/400 now, not inside the stream
        stream = streams.follow_logs(airflow, ex, task, lines, POLL_SECONDS)
        return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)
    return LogsOut(execution_id=ex.id, task=task, lines=streams.logs(ex, airflow, task, lines))


@router.get(
    "/v1/pipelines/executions/{execution_id}/events",
    responses={200: {"content": {"text/event-stream": {}}, "description": "`run.updated`, `log`, `end` events"}},
)
def execution_events(
    execution_id: str, principal: CurrentPrincipal, session: DbSession, airflow: Airflow, request: Request
) -> StreamingResponse:
    ex = repository.get_or_404(session, principal.tenant_id, execution_id)
    stream = streams.execution_events(
        request.app.state.sessions,
        airflow,
        request.app.state.status_refresh,
        ex.id,
        request.app.state.settings.status_max_age_seconds,
        POLL_SECONDS,
    )
    return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)
