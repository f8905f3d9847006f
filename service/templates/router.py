"""Template endpoints. Registered in service/main.py before the pipelines router, whose `/{pipeline_id}`
would otherwise take `/templates` for a pipeline id. Template ids contain a slash (`fintech/payment_processing`),
hence the `path` converters; `/create` is matched first because it is declared first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from service.auth import CurrentPrincipal
from service.db import DbSession, run_after_commit
from service.pipelines import service as pipelines
from service.pipelines.schemas import PipelineOut
from service.schemas import Page, PageNumber, PageSize
from service.templates import compliance
from service.templates import service as templates
from service.templates.schemas import CreateFromTemplateIn, TemplateDiffOut, TemplateOut, TemplateSummary

router = APIRouter(prefix="/v1/pipelines/templates", tags=["templates"])
provenance_router = APIRouter(prefix="/v1/pipelines", tags=["templates"])


@router.get("", response_model=Page[TemplateSummary], response_model_by_alias=True)
def list_templates(
    principal: CurrentPrincipal,
    session: DbSession,
    industry: Annotated[str | None, Query()] = None,
    compliance_: Annotated[str | None, Query(alias="compliance", description="comma-separated; all must apply")] = None,
    q: Annotated[str | None, Query(max_length=200, description="words found in id, name, description, tags")] = None,
    page: PageNumber = 0,
    size: PageSize = 20,
) -> Page[TemplateSummary]:
    found = templates.search(session, principal.tenant_id, industry=industry, compliance=compliance_, q=q)
    return Page[TemplateSummary](items=found[page * size : (page + 1) * size], total=len(found), page=page, size=size)


@router.post("", status_code=201, response_model=TemplateOut, response_model_by_alias=True)
def add_template(
    principal: CurrentPrincipal, session: DbSession, document: Annotated[dict[str, Any], Body()]
) -> TemplateOut:
    """A tenant-private template, or a new version of one (id `<tenant>/<name>` or `custom/<name>`)."""
    template, owner = templates.add_tenant_template(session, principal, document)
    return templates.to_out(session, principal.tenant_id, template, owner)


@router.get("/compliance-packs")
def compliance_packs(principal: CurrentPrincipal) -> list[dict[str, Any]]:
    """The controls each compliance tag adds (documented in service/templates/compliance.py)."""
    return compliance.describe()


@router.post("/{template_id:path}/create", status_code=201, response_model=PipelineOut, response_model_by_alias=True)
def create_from_template(
    template_id: str, body: CreateFromTemplateIn, principal: CurrentPrincipal, session: DbSession, request: Request
) -> PipelineOut:
    pipeline = templates.create_pipeline(session, principal, template_id, body)
    run_after_commit(session, request.app.state.wake_workers)
    return pipelines.to_out(session, pipeline, templates=templates)


@router.get("/{template_id:path}", response_model=TemplateOut, response_model_by_alias=True)
def get_template(
    template_id: str,
    principal: CurrentPrincipal,
    session: DbSession,
    version: Annotated[str | None, Query(description="a stored version of a tenant template")] = None,
) -> TemplateOut:
    template, owner = templates.get(session, principal.tenant_id, template_id, version)
    return templates.to_out(session, principal.tenant_id, template, owner)


@provenance_router.get("/{pipeline_id}/template-diff", response_model=TemplateDiffOut, response_model_by_alias=True)
def template_diff(pipeline_id: str, principal: CurrentPrincipal, session: DbSession) -> TemplateDiffOut:
    """What changes if the pipeline were re-created from its template's newest version (same inputs)."""
    return templates.diff(session, principal.tenant_id, pipeline_id)
