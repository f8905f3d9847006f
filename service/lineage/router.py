"""Lineage read side: GET /v1/pipelines/{pipelineId}/lineage and GET /v1/lineage/datasets?fqn=."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from service.auth import CurrentPrincipal
from service.db import DbSession
from service.errors import ValidationFailed
from service.lineage import service
from service.lineage.schemas import DatasetImpactOut, PipelineLineageOut
from service.pipelines.assets import file_root

router = APIRouter(tags=["lineage"])


@router.get("/v1/pipelines/{pipeline_id}/lineage", response_model=PipelineLineageOut, response_model_by_alias=True)
def pipeline_lineage(
    pipeline_id: str, principal: CurrentPrincipal, session: DbSession, request: Request
) -> PipelineLineageOut:
    """Sources, sinks, transformations and column-level lineage of a pipeline: from the events of its latest
    execution that reached its sinks, else from its definition (`origin` says which)."""
    root = file_root(request.app.state.settings)
    return service.pipeline_lineage(session, principal.tenant_id, pipeline_id, root=root)


@router.get("/v1/lineage/datasets", response_model=DatasetImpactOut, response_model_by_alias=True)
def dataset_impact(
    principal: CurrentPrincipal,
    session: DbSession,
    request: Request,
    fqn: Annotated[
        str,
        Query(
            max_length=1000,
            description="`database.schema.table`, a file's absolute path, or `s3://bucket/prefix` (as in lineage)",
        ),
    ],
    namespace: Annotated[
        str | None, Query(max_length=500, description="only the dataset of this OpenLineage namespace")
    ] = None,
    depth: Annotated[
        int, Query(ge=1, le=service.MAX_DEPTH, description="how many pipeline levels downstream to follow")
    ] = service.DEFAULT_DEPTH,
) -> DatasetImpactOut:
    """Which of the tenant's pipelines read and write a dataset, and what is downstream of it, transitively.
    A dataset no pipeline of the tenant knows answers 200 with empty lists."""
    if not fqn.strip():
        raise ValidationFailed("fqn: must not be empty", details=[{"path": "fqn", "message": "must not be empty"}])
    root = file_root(request.app.state.settings)
    return service.dataset_impact(
        session, principal.tenant_id, fqn.strip(), namespace=namespace, max_depth=depth, root=root
    )
