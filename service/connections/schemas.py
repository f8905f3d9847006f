from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, SecretStr, field_validator

from connections.types import PlainStr, no_control_characters
from service.naming import NAME_PATTERN
from service.schemas import ApiModel

MAX_PASSWORD = 1024


class CredentialsIn(ApiModel):
    model_config = ConfigDict(extra="forbid")

    username: PlainStr = Field(min_length=1, max_length=200)
    # Bounded: a 1,000,000-character password was stored (and sent to Airflow) as it came.
    password: SecretStr | None = Field(default=None, max_length=MAX_PASSWORD)

    @field_validator("password")
    @classmethod
    def _printable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            no_control_characters(value.get_secret_value())
        return value


class ConnectionIn(ApiModel):
    """The fields each type needs are checked by connections.build_spec (errors name the field).

    postgres: host, port, database. jdbc/sql: the same, or `url`. s3: properties.bucket (+ region,
    endpointUrl, prefix). http: host (+ port) or `url`, properties.healthPath/headers."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    type: Literal["postgres", "jdbc", "sql", "s3", "http"]
    host: str | None = Field(default=None, min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:-]+$")
    port: int | None = Field(default=None, ge=1, le=65535)
    database: PlainStr | None = Field(default=None, min_length=1, max_length=255)
    url: PlainStr | None = Field(default=None, min_length=1, max_length=2000)
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
    properties: dict[str, Any] = Field(description="an http connection's header values are masked ('********')")
    airflow_connection_id: str
    airflow_sync: Literal["SYNCED", "PENDING"] = Field(
        description="SYNCED: Airflow has the connection as stored; PENDING: the last change is on its way "
        "(Airflow did not answer in time; the service retries, and executions that use it wait)"
    )
    airflow_sync_error: str | None = Field(None, description="why the last attempt to reach Airflow failed")
    created_at: datetime
    updated_at: datetime


class StageOut(ApiModel):
    name: Literal["credentials", "dns", "network", "tcp", "tls", "authentication", "privilege"]
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
