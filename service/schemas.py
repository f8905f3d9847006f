"""Shared response shapes: the page envelope and camelCase output."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

T = TypeVar("T")


class ApiModel(BaseModel):
    """Responses are camelCase like the API reference; requests accept both spellings."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class Page(ApiModel, Generic[T]):
    items: list[T]
    total: int
    page: int = Field(description="0-based page number")
    size: int


class PageParams(BaseModel):
    page: int = Field(default=0, ge=0)
    size: int = Field(default=20, ge=1, le=200)

    @property
    def offset(self) -> int:
        return self.page * self.size
