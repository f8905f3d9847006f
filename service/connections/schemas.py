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
    """The fields each type needs are checked by connections.build_spec (errors name the field).

    postgres: host, port, database. jdbc/sql: the same, or `url`. s3: properties.bucket (+ region,
    endpointUrl, prefix). http: host (+ port) or `url`, properties.healthPath/headers."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["postgres", "jdbc", "sql", "s3", "http"]
    host: str | None = Field(default=None, min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:-]+$")
    port: int | None = Field(default=None, ge=1, le=65535)
    database: str | None = Field(default=None, min_length=1, max_length=255)
    url: str | None = Field(default=None, min_length=1, max_length=2000)
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


class StageOut(ApiModel):
    name: Literal["credentials", "dns", "tcp", "tls", "authentication", "privilege"]
    ok: bool
    ms: int
    message: str


class ConnectionTestOut(ApiModel):
    """A failed test is still a 200: the request was fine, the connection is not."""

    connected: bool
    latency_ms: int
    version: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    stages: list[StageOut]
    failed_stage: str | None = None
    hint: str | None = None
