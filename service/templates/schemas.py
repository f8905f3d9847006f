from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from service.naming import NAME_PATTERN
from service.pipelines.schemas import Tag
from service.schemas import ApiModel, Prose


class TemplateSummary(ApiModel):
    id: str
    name: str
    industry: str
    version: str
    description: str
    compliance: list[str]
    tags: list[str]
    parameters: list[dict[str, Any]]
    owner: str = Field(description="'shipped' (the catalogue) or 'tenant' (this tenant's own)")


class TemplateOut(TemplateSummary):
    sensitive: dict[str, Any]
    data_subject: dict[str, Any] | None = None
    definition: dict[str, Any]
    versions: list[str] = Field(default_factory=list, description="a tenant template's stored versions")


class CreateFromTemplateIn(ApiModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    pipeline_name: str = Field(pattern=NAME_PATTERN)
    parameters: dict[str, Any] = Field(default_factory=dict)
    customizations: dict[str, Any] = Field(
        default_factory=dict, description="dotted paths into the definition, e.g. orchestration.retries"
    )
    description: Prose | None = Field(default=None, max_length=4000)
    tags: list[Tag] = Field(default_factory=list, max_length=10)


class TemplateDiffOut(ApiModel):
    pipeline_id: str
    template_id: str
    version: str
    latest_version: str | None
    behind: bool
    changes: list[dict[str, Any]] = Field(
        description="JSON-Patch-like ops turning the pipeline's definition into the latest render"
    )
    render_error: list[dict[str, str]] | None = None
