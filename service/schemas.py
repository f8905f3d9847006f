"""Shared request and response shapes: the page envelope and its query parameters, camelCase output."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

T = TypeVar("T")
_CONTROL_BUT_LINE_BREAKS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _prose(value: str) -> str:
    """Free text (a description): line breaks and tabs are legitimate, NUL and other control characters are
    not (PostgreSQL refuses NUL in text; others corrupt logs and terminals)."""
    if _CONTROL_BUT_LINE_BREAKS.search(value):
        raise ValueError("must not contain control characters other than line breaks and tabs")
    return value


# Text fields of requests: bound each with max_length where it is used. One line (names, cron, time zones):
# connections.types.PlainStr; free text: Prose.
Prose = Annotated[str, AfterValidator(_prose)]


class ApiModel(BaseModel):
    """Responses are camelCase like the API reference; requests accept both spellings."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class Page(ApiModel, Generic[T]):
    items: list[T]
    total: int
    page: int = Field(description="0-based page number")
    size: int


# Bounded so that page * size stays far inside a 64-bit SQL integer: an unbounded page made every list a 500.
MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 200
PageNumber = Annotated[int, Query(ge=0, le=MAX_PAGE, description="0-based page number")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="items per page")]


def _as_utc(value: datetime) -> datetime:
    """A time whose UTC instant falls outside datetime's years 1-9999 (0001-01-01T00:00+01:00) is refused here,
    with the parameter named, instead of overflowing at the database (a 500). A naive time is left to the
    endpoint, which decides what it means (the executions list refuses it)."""
    if value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range") from None


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]
