"""Workflow Management: an execution's approval gates (Airflow human-in-the-loop tasks). The workflow id is
the execution id; another tenant's is a 404 like a missing one."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.auth import CurrentPrincipal
from service.db import DbSession
from service.deps import Airflow
from service.errors import AirflowUnavailable
from service.executions import repository as execution_repo
from service.executions import service as executions
from service.executions.models import Execution
from service.executions.sync import refresh
from service.workflows import service
from service.workflows.schemas import SignalIn, WorkflowOut

router = APIRouter(tags=["workflows"])


def _current(ex: Execution, airflow: Airflow) -> None:
    """The run's state as Airflow has it now (the row as stored when Airflow is unreachable)."""
    try:
        refresh(ex, airflow)
    except AirflowUnavailable:
        pass


@router.get("/v1/pipelines/workflows/{execution_id}/status", response_model=WorkflowOut, response_model_by_alias=True)
def workflow_status(
    execution_id: str, principal: CurrentPrincipal, session: DbSession, airflow: Airflow
) -> WorkflowOut:
    """The run's state, its gates: who may answer, the answers so far, the quorum and the deadline."""
    ex = execution_repo.get_or_404(session, principal.tenant_id, execution_id)
    _current(ex, airflow)
    return service.status(session, ex)


@router.post("/v1/pipelines/workflows/{execution_id}/signal", response_model=WorkflowOut, response_model_by_alias=True)
def signal_workflow(
    execution_id: str,
    body: SignalIn,
    principal: CurrentPrincipal,
    session: DbSession,
    airflow: Airflow,
    request: Request,
) -> WorkflowOut:
    """`approval`: the caller's answer to the waiting gate (the approver is the token's subject)."""
    ex = execution_repo.get_or_404(session, principal.tenant_id, execution_id)
    _current(ex, airflow)
    service.signal(session, ex, principal, body.data, airflow)
    request.app.state.status_cache.drop((principal.tenant_id, ex.id))
    return service.status(session, ex)


@router.post("/v1/pipelines/workflows/{execution_id}/cancel", response_model=WorkflowOut, response_model_by_alias=True)
def cancel_workflow(
    execution_id: str, principal: CurrentPrincipal, session: DbSession, airflow: Airflow, request: Request
) -> WorkflowOut:
    """Cancels the execution (as POST /v1/pipelines/executions/{id}/cancel)."""
    ex = execution_repo.get_or_404(session, principal.tenant_id, execution_id)
    _current(ex, airflow)
    executions.cancel(ex, airflow, principal)
    request.app.state.status_cache.drop((principal.tenant_id, ex.id))
    return service.status(session, ex)
