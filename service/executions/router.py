from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from service.auth import CurrentPrincipal
from service.db import DbSession, run_after_commit
from service.deps import Airflow
from service.errors import AirflowUnavailable, ValidationFailed
from service.executions import service
from service.executions.schemas import ExecuteIn, ExecutionOut, LogsOut
from service.schemas import Page

router = APIRouter(tags=["executions"])


@router.post(
    "/v1/pipelines/{pipeline_id}/execute", status_code=202, response_model=ExecutionOut, response_model_by_alias=True
)
def execute_pipeline(
    pipeline_id: str, principal: CurrentPrincipal, session: DbSession, request: Request, body: ExecuteIn | None = None
) -> ExecutionOut:
    ex = service.execute(session, principal, pipeline_id, body or ExecuteIn())
    # Submission happens after the commit (outbox): an accepted execution exists even if Airflow is down.
    run_after_commit(session, request.app.state.wake_workers)
    return service.to_out(ex)


@router.get("/v1/pipelines/executions", response_model=Page[ExecutionOut], response_model_by_alias=True)
def list_executions(
    principal: CurrentPrincipal,
    session: DbSession,
    pipeline_id: Annotated[str | None, Query(alias="pipelineId")] = None,
    status: Annotated[str | None, Query()] = None,
    page: Annotated[int, Query(ge=0)] = 0,
    size: Annotated[int, Query(ge=1, le=200)] = 20,
) -> Page[ExecutionOut]:
    if status is not None and status not in service.STATUSES:
        raise ValidationFailed(
            f"status must be one of {', '.join(service.STATUSES)}",
            details=[{"path": "status", "message": "unknown status"}],
        )
    rows, total = service.list_page(
        session, principal.tenant_id, pipeline_id=pipeline_id, status=status, offset=page * size, limit=size
    )
    return Page[ExecutionOut](items=[service.to_out(e) for e in rows], total=total, page=page, size=size)


@router.get("/v1/pipelines/executions/{execution_id}", response_model=ExecutionOut, response_model_by_alias=True)
def get_execution(execution_id: str, principal: CurrentPrincipal, session: DbSession, airflow: Airflow) -> ExecutionOut:
    ex = service.get_or_404(session, principal.tenant_id, execution_id)
    try:
        service.refresh(ex, airflow)
    except AirflowUnavailable:
        pass  # the stored state is still the best answer; the reconciler catches up later
    return service.to_out(ex)


@router.post(
    "/v1/pipelines/executions/{execution_id}/cancel", response_model=ExecutionOut, response_model_by_alias=True
)
def cancel_execution(
    execution_id: str, principal: CurrentPrincipal, session: DbSession, airflow: Airflow
) -> ExecutionOut:
    ex = service.get_or_404(session, principal.tenant_id, execution_id)
    service.refresh(ex, airflow)
    service.cancel(ex, airflow)
    return service.to_out(ex)


@router.get("/v1/pipelines/executions/{execution_id}/logs", response_model=LogsOut, response_model_by_alias=True)
def execution_logs(
    execution_id: str,
    principal: CurrentPrincipal,
    session: DbSession,
    airflow: Airflow,
    task: Annotated[
        str | None, Query(description="task id, e.g. 'sinks.daily_transactions' or 'daily_transactions'")
    ] = None,
    lines: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> LogsOut:
    ex = service.get_or_404(session, principal.tenant_id, execution_id)
    return LogsOut(execution_id=ex.id, task=task, lines=service.logs(ex, airflow, task, lines))
