from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, SecretStr

from service.naming import NAME_PATTERN
from service.schemas import ApiModel


class CredentialsIn(ApiModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=200)
    password: SecretStr | None = None


class ConnectionIn(ApiModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["postgres", "jdbc"]
    host: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:-]+$")
    port: int = Field(default=5432, ge=1, le=65535)
    database: str = Field(min_length=1, max_length=255)
    credential_secret_ref: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
    credentials: CredentialsIn | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class ConnectionOut(ApiModel):
    connection_id: str
    name: str
    type: str
    host: str
    port: int
    database: str
    credential_secret_ref: str | None
    has_inline_credentials: bool
    properties: dict[str, Any]
    airflow_connection_id: str
    created_at: datetime
    updated_at: datetime
