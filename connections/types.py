"""Connection types and their materialisation as Airflow connections.

`jdbc` follows the API reference's seed body; today it speaks the PostgreSQL protocol (the only JDBC
database the DAG factory moves data with), so it materialises exactly like `postgres`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CONNECTION_TYPES = ("postgres", "jdbc")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class PostgresProperties(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sslMode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    connectionTimeout: int | None = Field(default=None, ge=1, le=600_000, description="milliseconds")
    applicationName: str | None = Field(default=None, max_length=64)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str | None

    def __repr__(self) -> str:  # never print a password, even in a traceback
        return f"Credentials(username={self.username!r}, password=***)"


@dataclass(frozen=True)
class ConnectionSpec:
    type: str
    host: str
    port: int
    database: str
    properties: dict[str, Any]


def airflow_connection(conn_id: str, spec: ConnectionSpec, creds: Credentials) -> dict[str, Any]:
    """The body of Airflow's POST/PATCH /api/v2/connections for this connection."""
    props = PostgresProperties.model_validate(spec.properties)
    extra: dict[str, Any] = {}
    if props.sslMode:
        extra["sslmode"] = props.sslMode
    if props.connectionTimeout:
        extra["connect_timeout"] = max(1, props.connectionTimeout // 1000)
    if props.applicationName:
        extra["application_name"] = props.applicationName
    return {
        "connection_id": conn_id,
        "conn_type": "postgres",
        "host": spec.host,
        "port": spec.port,
        "schema": spec.database,
        "login": creds.username,
        "password": creds.password or "",
        "extra": json.dumps(extra),
        "description": f"managed by pipeline-service ({spec.type})",
    }
