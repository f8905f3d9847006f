from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from service.naming import NAME_PATTERN
from service.schemas import ApiModel, Prose

SEMVER = r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$"
Tag = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,49}$")]


class PipelineIn(ApiModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(default="1.0.0", pattern=SEMVER)
    description: Prose | None = Field(default=None, max_length=4000)
    definition: dict[str, Any]
    tags: list[Tag] = Field(default_factory=list, max_length=20)


class PipelineOut(ApiModel):
    pipeline_id: str
    name: str
    version: str
    revision: int
    description: str | None
    tags: list[str]
    status: str
    status_detail: str | None
    dag_id: str
    definition: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime
    deployed_at: datetime | None
    # Created from a template: {id, version, latestVersion, behind} (service/templates); null otherwise.
    template: dict[str, Any] | None = None


class PipelineVersionOut(ApiModel):
    revision: int
    version: str
    description: str | None
    tags: list[str]
    definition: dict[str, Any]
    created_by: str | None
    created_at: datetime
