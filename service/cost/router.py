from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from service.auth import CurrentPrincipal
from service.config import RateCard
from service.cost import service
from service.cost.schemas import BudgetIn, BudgetOut, ExecutionCostOut, PipelineCostOut
from service.db import DbSession, utcnow
from service.executions import repository as execution_repo
from service.pipelines import service as pipelines

router = APIRouter(tags=["cost"])


def _rates(request: Request) -> RateCard:
    rates: RateCard = request.app.state.settings.cost_rate_card
    return rates


@router.get("/v1/cost/rate-card", response_model=RateCard, response_model_by_alias=True)
def rate_card(principal: CurrentPrincipal, request: Request) -> RateCard:
    """The rates cost is computed with (PIPELINE_COST_RATE_CARD)."""
    return _rates(request)


@router.get(
    "/v1/pipelines/executions/{execution_id}/cost", response_model=ExecutionCostOut, response_model_by_alias=True
)
def execution_cost(
    execution_id: str, principal: CurrentPrincipal, session: DbSession, request: Request
) -> ExecutionCostOut:
    """What the execution cost, per task; live while it runs (running tasks count up to now)."""
    ex = execution_repo.get_or_404(session, principal.tenant_id, execution_id)
    state = request.app.state
    if state.status_refresh.stale(ex, state.settings.status_max_age_seconds):
        if state.status_refresh.refresh_active(state.airflow):  # the same batched refresh as a status read
            session.refresh(ex)
    now, rates = utcnow(), _rates(request)
    cost = service.cost_of_execution(session, ex, rates, now)
    return service.execution_out(cost, rates, now)


@router.get("/v1/pipelines/{pipeline_id}/cost", response_model=PipelineCostOut, response_model_by_alias=True)
def pipeline_cost(
    pipeline_id: str,
    principal: CurrentPrincipal,
    session: DbSession,
    request: Request,
    period: Annotated[str, Query(description="1d, 7d, 30d or 90d, ending now")] = "30d",
) -> PipelineCostOut:
    service.parse_period(period)  # a bad period is a 400 even for a pipeline that is not there
    pipeline = pipelines.get_or_404(session, principal.tenant_id, pipeline_id)
    return service.pipeline_cost(session, pipeline, period, _rates(request))


@router.get("/v1/pipelines/{pipeline_id}/budget", response_model=BudgetOut, response_model_by_alias=True)
def get_pipeline_budget(
    pipeline_id: str, principal: CurrentPrincipal, session: DbSession, request: Request
) -> BudgetOut:
    pipeline = pipelines.get_or_404(session, principal.tenant_id, pipeline_id)
    return service.budget_out(session, principal.tenant_id, pipeline.id, _rates(request))


@router.put("/v1/pipelines/{pipeline_id}/budget", response_model=BudgetOut, response_model_by_alias=True)
def put_pipeline_budget(
    pipeline_id: str, body: BudgetIn, principal: CurrentPrincipal, session: DbSession, request: Request
) -> BudgetOut:
    """The pipeline's monthly budget (editor or admin); `{"monthlyUsd": null}` removes it."""
    pipeline = pipelines.get_or_404(session, principal.tenant_id, pipeline_id)
    service.set_budget(session, principal, pipeline.id, body.monthly_usd)
    return service.budget_out(session, principal.tenant_id, pipeline.id, _rates(request))


@router.get("/v1/cost/budget", response_model=BudgetOut, response_model_by_alias=True)
def get_tenant_budget(principal: CurrentPrincipal, session: DbSession, request: Request) -> BudgetOut:
    return service.budget_out(session, principal.tenant_id, None, _rates(request))


@router.put("/v1/cost/budget", response_model=BudgetOut, response_model_by_alias=True)
def put_tenant_budget(body: BudgetIn, principal: CurrentPrincipal, session: DbSession, request: Request) -> BudgetOut:
    """The tenant's monthly budget over all its pipelines (editor or admin); `{"monthlyUsd": null}` removes it."""
    service.set_budget(session, principal, None, body.monthly_usd)
    return service.budget_out(session, principal.tenant_id, None, _rates(request))
