from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from service.auth import CurrentPrincipal
from service.config import RateCard
from service.db import DbSession
from service.errors import NotFound
from service.monitoring import metrics
from service.monitoring.metrics_schemas import PipelineMetricsOut, TenantMetricsOut
from service.pipelines import service as pipelines

router = APIRouter(tags=["monitoring"])
ID_MAX = 64  # pipelines.id


@router.get(
    "/v1/pipelines/monitoring/metrics",
    response_model=PipelineMetricsOut | TenantMetricsOut,
    response_model_by_alias=True,
)
def get_metrics(
    principal: CurrentPrincipal,
    session: DbSession,
    request: Request,
    pipeline_id: Annotated[
        str | None, Query(alias="pipelineId", description="one pipeline's metrics and history; omitted: the tenant's")
    ] = None,
    period: Annotated[str, Query(description="1h, 24h, 7d, 30d or 90d, ending now")] = "7d",
) -> PipelineMetricsOut | TenantMetricsOut:
    """Execution count, success rate, mean and p95 duration, rows, bytes and cost over the period: of one
    pipeline with its daily history, or of the tenant with a report (slowest and most-failing pipelines,
    bottleneck tasks, failures by task, top error messages). Viewers may read it."""
    rates: RateCard = request.app.state.settings.cost_rate_card
    metrics.parse_period(period)  # a bad period is a 400 even for a pipeline that is not there
    if pipeline_id is None:
        return metrics.tenant_metrics(session, principal.tenant_id, period, rates)
    if len(pipeline_id) > ID_MAX or "\x00" in pipeline_id:  # could not be an id (PostgreSQL refuses NUL)
        raise NotFound(f"pipeline '{pipeline_id[:ID_MAX]}' not found")
    pipeline = pipelines.get_or_404(session, principal.tenant_id, pipeline_id)
    return metrics.pipeline_metrics(session, pipeline, period, rates)
