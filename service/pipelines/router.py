from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict

from service.auth import CurrentPrincipal
from service.db import DbSession, run_after_commit
from service.errors import NotFound, ValidationFailed
from service.merge_patch import PATCH_OPENAPI, MergePatch
from service.pipelines import repository, service
from service.pipelines.schemas import PipelineIn, PipelineOut, PipelineVersionOut
from service.schemas import Page, PageNumber, PageSize

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"])


def _templates(request: Request) -> service.TemplateLink:
    """The templates feature, handed in by service/main.py (templates build on pipelines)."""
    templates: service.TemplateLink = request.app.state.template_link
    return templates


Templates = Annotated[service.TemplateLink, Depends(_templates)]


class ValidateIn(BaseModel):
    """The body of a create (only `definition` is checked), so a document can be validated as it will be sent."""

    model_config = ConfigDict(extra="allow")

    definition: dict[str, Any]


# Fixed paths come before `/{pipeline_id}`, which would otherwise take them for a pipeline id.
@router.get("/schema")
def definition_schema(principal: CurrentPrincipal) -> dict[str, Any]:
    """The JSON Schema of `definition` (the same pydantic models validate it)."""
    return service.definition_schema()


@router.post("/validate")
def validate_pipeline(body: ValidateIn, principal: CurrentPrincipal, session: DbSession) -> dict[str, bool]:
    """Checks a definition as a create would (connections included) without saving it: 400 lists every error."""
    service.validate(session, principal.tenant_id, body.definition)
    return {"valid": True}


@router.post("", status_code=201, response_model=PipelineOut, response_model_by_alias=True)
def create_pipeline(
    body: PipelineIn, principal: CurrentPrincipal, session: DbSession, request: Request, templates: Templates
) -> PipelineOut:
    pipeline = service.create(session, principal, body)
    run_after_commit(session, request.app.state.wake_workers)
    return service.to_out(session, pipeline, templates=templates)


@router.get("", response_model=Page[PipelineOut], response_model_by_alias=True, response_model_exclude_none=False)
def list_pipelines(
    principal: CurrentPrincipal,
    session: DbSession,
    templates: Templates,
    tags: Annotated[str | None, Query(description="comma-separated; a pipeline must carry all of them")] = None,
    status: Annotated[str | None, Query()] = None,
    page: PageNumber = 0,
    size: PageSize = 20,
) -> Page[PipelineOut]:
    if status is not None and status not in service.STATUSES:
        raise ValidationFailed(
            f"status must be one of {', '.join(service.STATUSES)}",
            details=[{"path": "status", "message": "unknown status"}],
        )
    wanted = [t.strip() for t in (tags or "").split(",") if t.strip()]
    rows, total = repository.list_page(
        session, principal.tenant_id, status=status, tags=wanted, offset=page * size, limit=size
    )
    items = [service.to_out(session, p, with_definition=False, templates=templates) for p in rows]
    return Page[PipelineOut](items=items, total=total, page=page, size=size)


@router.get("/{pipeline_id}", response_model=PipelineOut, response_model_by_alias=True)
def get_pipeline(
    pipeline_id: str, principal: CurrentPrincipal, session: DbSession, templates: Templates
) -> PipelineOut:
    return service.to_out(session, service.get_or_404(session, principal.tenant_id, pipeline_id), templates=templates)


@router.put("/{pipeline_id}", response_model=PipelineOut, response_model_by_alias=True)
def update_pipeline(
    pipeline_id: str,
    body: PipelineIn,
    principal: CurrentPrincipal,
    session: DbSession,
    request: Request,
    templates: Templates,
) -> PipelineOut:
    pipeline = service.update(session, principal, pipeline_id, body, templates=templates)
    run_after_commit(session, request.app.state.wake_workers)
    return service.to_out(session, pipeline, templates=templates)


@router.patch("/{pipeline_id}", response_model=PipelineOut, response_model_by_alias=True, openapi_extra=PATCH_OPENAPI)
def patch_pipeline(
    pipeline_id: str,
    body: MergePatch,
    principal: CurrentPrincipal,
    session: DbSession,
    request: Request,
    templates: Templates,
) -> PipelineOut:
    """JSON Merge Patch of the PUT body (description, tags, any part of the definition); stored as a PUT."""
    pipeline = service.patch(session, principal, pipeline_id, body, templates=templates)
    run_after_commit(session, request.app.state.wake_workers)
    return service.to_out(session, pipeline, templates=templates)


@router.delete("/{pipeline_id}", status_code=204)
def delete_pipeline(pipeline_id: str, principal: CurrentPrincipal, session: DbSession, request: Request) -> Response:
    dag_id = service.delete(session, principal, pipeline_id).dag_id
    # The DAG file goes only once the row is really gone.
    run_after_commit(session, lambda: request.app.state.publisher.remove(dag_id))
    return Response(status_code=204)


@router.get("/{pipeline_id}/versions", response_model=list[PipelineVersionOut], response_model_by_alias=True)
def list_versions(pipeline_id: str, principal: CurrentPrincipal, session: DbSession) -> list[PipelineVersionOut]:
    pipeline = service.get_or_404(session, principal.tenant_id, pipeline_id)
    return [PipelineVersionOut.model_validate(v) for v in repository.versions(session, pipeline.id)]


@router.get("/{pipeline_id}/versions/{revision}", response_model=PipelineVersionOut, response_model_by_alias=True)
def get_version(pipeline_id: str, revision: int, principal: CurrentPrincipal, session: DbSession) -> PipelineVersionOut:
    pipeline = service.get_or_404(session, principal.tenant_id, pipeline_id)
    version = repository.version(session, pipeline.id, revision)
    if version is None:
        raise NotFound(f"pipeline '{pipeline_id}' has no revision {revision}")
    return PipelineVersionOut.model_validate(version)
