"""Connection types: what each accepts (validated, errors naming the field) and how it becomes an Airflow
connection.

- `postgres`: host, port, database.
- `jdbc` / `sql`: the same, or a URL instead (`jdbc:postgresql://h:5432/db`, `postgresql://h/db`,
  SQLAlchemy-style `postgresql+psycopg://h/db`). Those speak the PostgreSQL protocol, so they materialise
  exactly like `postgres`. A `sql` connection may instead be a SQLite file (`sqlite:////dir/file.db`, only
  under PIPELINE_SQLITE_DIRS): stored with port 0, materialised as Airflow conn_type `sqlite` (path in host).
- `s3`: a bucket (and prefix) behind AWS S3 or any S3-compatible endpoint; Airflow conn_type `aws`.
- `http`: an HTTP(S) API (host or URL, a health path, plain headers); Airflow conn_type `http`.

Credentials never live in a URL or a property: they come from `credentialSecretRef` or inline `credentials`
(for s3: access key id / secret access key; for http: basic auth). Every header VALUE of an http connection is
treated as a secret too (a token can hide under any name: X-Vault-Token, Private-Token, …): the service stores
it encrypted and shows only the header names (service/connections).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

CONNECTION_TYPES = ("postgres", "jdbc", "sql", "s3", "http")
SQL_TYPES = ("postgres", "jdbc", "sql")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Headers that carry credentials: properties are returned by the API, so these belong in the secret.
SENSITIVE_HEADERS = {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-auth-token"}
# Always fullmatch: `$` also matches before a final newline, so "Authorization\n" would pass a match().
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")
_HOST = re.compile(r"[A-Za-z0-9._:-]{1,255}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A header value: visible ASCII/Unicode, spaces and tabs (RFC 9110 field-value); no NUL, no line break.
_HEADER_VALUE_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
MAX_HEADERS = 20
# Headers are stored in the Airflow connection's extra, where the http provider reads these names as options:
# a tenant's `proxies`, `srv_lookup` or `allow_redirects` would steer where the workers connect.
HTTP_HOOK_OPTIONS = {
    "stream", "cert", "proxies", "proxy", "timeout", "verify", "verify_ssl", "allow_redirects", "max_redirects",
    "trust_env", "check_response", "srv_lookup",
}  # fmt: skip
MAX_HEADER_VALUE = 4096


def no_control_characters(value: str) -> str:
    """NUL and other control characters end up truncating or splitting a value somewhere downstream (libpq, a
    log line, an HTTP request): refused in every single-line field."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (NUL, line breaks, …)")
    return value


PlainStr = Annotated[str, AfterValidator(no_control_characters)]


class _Props(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PostgresProperties(_Props):
    sslMode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    connectionTimeout: int | None = Field(default=None, ge=1, le=600_000, description="milliseconds")
    applicationName: PlainStr | None = Field(default=None, max_length=64)


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials: use credentialSecretRef or credentials")
    return value.rstrip("/")


class S3Properties(_Props):
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: PlainStr = Field(default="", max_length=1024)
    region: str = Field(default="us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
    endpointUrl: PlainStr | None = Field(default=None, max_length=500, description="S3-compatible endpoint")
    verifyTls: bool = True
    connectionTimeout: int | None = Field(default=None, ge=1, le=600_000, description="milliseconds")

    _endpoint = field_validator("endpointUrl")(_http_url)


class HttpProperties(_Props):
    scheme: Literal["http", "https"] = "https"
    basePath: PlainStr = Field(default="", max_length=250, pattern=r"^(/[^\s?#]*)?$")
    healthPath: PlainStr = Field(default="/", max_length=500, pattern=r"^/[^\s#]*$")
    headers: dict[str, str] = Field(default_factory=dict, max_length=MAX_HEADERS)
    verifyTls: bool = True
    connectionTimeout: int | None = Field(default=None, ge=1, le=600_000, description="milliseconds")

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name[:100]!r} is not a valid header name")
            if name.lower() in SENSITIVE_HEADERS:
                raise ValueError(f"'{name}' carries credentials: put them in credentialSecretRef or credentials")
            if name.lower() in HTTP_HOOK_OPTIONS:
                raise ValueError(f"'{name}' is an option of Airflow's http connection, not a header: refused")
            if _HEADER_VALUE_CONTROL.search(header_value):
                raise ValueError(f"the value of '{name}' contains a control character (NUL, line break, …)")
            if len(header_value) > MAX_HEADER_VALUE:
                raise ValueError(f"the value of '{name}' is longer than {MAX_HEADER_VALUE} characters")
        return value


PROPERTIES: dict[str, type[_Props]] = {
    "postgres": PostgresProperties,
    "jdbc": PostgresProperties,
    "sql": PostgresProperties,
    "s3": S3Properties,
    "http": HttpProperties,
}


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
    database: str  # postgres: the database; s3: the bucket; http: the base path
    properties: dict[str, Any]

    @property
    def timeout_seconds(self) -> float | None:
        ms = self.properties.get("connectionTimeout")
        return ms / 1000 if ms else None


class InvalidConnection(ValueError):
    """The request's fields do not make a connection of this type; `errors` are [{path, message}]."""

    def __init__(self, errors: list[dict[str, str]]):
        super().__init__(f"{errors[0]['path']}: {errors[0]['message']}")
        self.errors = errors


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate_properties(type_: str, properties: dict[str, Any]) -> dict[str, Any]:
    """The properties with defaults filled in (what is stored), or InvalidConnection naming properties.<x>."""
    try:
        model = PROPERTIES[type_].model_validate(properties)
    except ValidationError as exc:
        errors = [{"path": _path(("properties", *e["loc"])), "message": e["msg"]} for e in exc.errors()]
        raise InvalidConnection(errors) from None
    return model.model_dump(exclude_none=True)


_SQL_SCHEMES = ("jdbc:postgresql", "postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
# SQLite (type `sql` only, `sqlite:////absolute/path.db`): a file on the Airflow workers, so only under the
# directories an operator lists in this variable (os.pathsep- or comma-separated). Unset: SQLite is refused,
# because any other path could be a file no tenant may read (Airflow's own metadata database, for one).
SQLITE_DIRS_ENV = "PIPELINE_SQLITE_DIRS"
SQLITE_PORT = 0  # how a stored connection says "SQLite file": a database server never listens on port 0


def is_sqlite(type_: str, port: int | None) -> bool:
    """Whether a stored `sql` connection is a SQLite file (database = its path) rather than a server."""
    return type_ == "sql" and port == SQLITE_PORT


def sqlite_dirs() -> list[str]:
    raw = os.environ.get(SQLITE_DIRS_ENV, "").replace(",", os.pathsep)
    return [os.path.realpath(d.strip()) for d in raw.split(os.pathsep) if d.strip()]


def _parse_sqlite_url(url: str) -> str:
    """`sqlite:////abs/dir/file.db` -> `/abs/dir/file.db`, only inside an allowed directory."""
    path = url.removeprefix("sqlite:///")
    if url == path or "?" in path or "#" in path:
        raise InvalidConnection([{"path": "url", "message": "use sqlite:////absolute/path/to/file.db"}])
    if not os.path.isabs(path) or os.path.normpath(path) != path or len(path) > 255:
        message = "must be an absolute, normalised file path of at most 255 characters (sqlite:////dir/file.db)"
        raise InvalidConnection([{"path": "url", "message": message}])
    allowed = sqlite_dirs()
    real = os.path.realpath(path)
    if not any(os.path.commonpath([real, d]) == d and real != d for d in allowed):
        where = ", ".join(allowed) if allowed else f"none: set {SQLITE_DIRS_ENV} on the service to allow SQLite"
        raise InvalidConnection(
            [{"path": "url", "message": f"SQLite files must be under an allowed directory ({where})"}]
        )
    return path


def _parse_sql_url(url: str) -> tuple[str, int, str]:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in _SQL_SCHEMES:
        message = f"scheme '{scheme}' is not supported: use jdbc:postgresql://host:port/database or postgresql://…"
        raise InvalidConnection([{"path": "url", "message": message}])
    parts = urlsplit(url.removeprefix("jdbc:"))
    if parts.username or parts.password:
        message = "must not contain credentials: use credentialSecretRef or credentials"
        raise InvalidConnection([{"path": "url", "message": message}])
    if parts.query or parts.fragment:
        raise InvalidConnection([{"path": "url", "message": "options go in properties, not in the URL"}])
    try:
        port = parts.port or 5432
    except ValueError:
        raise InvalidConnection([{"path": "url", "message": "the port is not a number in 1-65535"}]) from None
    database = parts.path.lstrip("/")
    if not parts.hostname or not database or "/" in database:
        raise InvalidConnection([{"path": "url", "message": "must name a host and a database: …://host:port/db"}])
    return parts.hostname, port, database


def build_spec(
    type_: str,
    *,
    host: str | None,
    port: int | None,
    database: str | None,
    url: str | None,
    properties: dict[str, Any],
) -> ConnectionSpec:
    """Check the type-specific fields; return the normalised connection (InvalidConnection otherwise)."""
    if type_ not in CONNECTION_TYPES:
        raise InvalidConnection([{"path": "type", "message": f"must be one of {', '.join(CONNECTION_TYPES)}"}])
    props = validate_properties(type_, properties)
    if type_ in SQL_TYPES:
        return _sql_spec(type_, host, port, database, url, props)
    if type_ == "s3":
        return _s3_spec(host, port, database, url, props)
    return _http_spec(host, port, database, url, props)


def _sql_spec(
    type_: str, host: str | None, port: int | None, database: str | None, url: str | None, props: dict[str, Any]
) -> ConnectionSpec:
    if url is not None:
        if type_ == "postgres":
            raise InvalidConnection([{"path": "url", "message": "use host, port and database for postgres"}])
        clash = [f for f, v in (("host", host), ("port", port), ("database", database)) if v is not None]
        if clash:
            raise InvalidConnection([{"path": clash[0], "message": "give either url or host/port/database"}])
        if url.startswith("sqlite:"):
            if type_ != "sql":
                raise InvalidConnection([{"path": "url", "message": "a SQLite file is a connection of type sql"}])
            return ConnectionSpec(type=type_, host="", port=SQLITE_PORT, database=_parse_sqlite_url(url), properties={})
        host, port, database = _parse_sql_url(url)
    missing = [{"path": f, "message": "required"} for f, v in (("host", host), ("database", database)) if not v]
    if missing:
        raise InvalidConnection(missing)
    assert host is not None and database is not None
    if len(database) > 255:
        raise InvalidConnection([{"path": "url" if url else "database", "message": "at most 255 characters"}])
    if _CONTROL.search(database):
        raise InvalidConnection([{"path": "url" if url else "database", "message": "control characters"}])
    if not _HOST.fullmatch(host):
        raise InvalidConnection([{"path": "host", "message": "not a host name or address"}])
    return ConnectionSpec(type=type_, host=host, port=port or 5432, database=database, properties=props)


def _s3_spec(
    host: str | None, port: int | None, database: str | None, url: str | None, props: dict[str, Any]
) -> ConnectionSpec:
    for field, value in (("host", host), ("port", port), ("database", database), ("url", url)):
        if value is not None:
            message = "not used by s3: set properties.bucket (and properties.endpointUrl for S3-compatible stores)"
            raise InvalidConnection([{"path": field, "message": message}])
    endpoint = urlsplit(s3_endpoint(props))
    default_port = 443 if endpoint.scheme == "https" else 80
    return ConnectionSpec(
        type="s3",
        host=endpoint.hostname or "",
        port=endpoint.port or default_port,
        database=props["bucket"],
        properties=props,
    )


def s3_endpoint(props: dict[str, Any]) -> str:
    region = props.get("region", "us-east-1")
    default = "https://s3.amazonaws.com" if region == "us-east-1" else f"https://s3.{region}.amazonaws.com"
    return str(props.get("endpointUrl") or default)


def _http_spec(
    host: str | None, port: int | None, database: str | None, url: str | None, props: dict[str, Any]
) -> ConnectionSpec:
    if database is not None:
        raise InvalidConnection([{"path": "database", "message": "not used by http: use url or properties.basePath"}])
    if url is not None:
        if host is not None or port is not None:
            raise InvalidConnection([{"path": "host" if host else "port", "message": "give either url or host/port"}])
        try:
            _http_url(url)
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidConnection([{"path": "url", "message": str(exc)}]) from None
        if parts.query or parts.fragment:
            raise InvalidConnection([{"path": "url", "message": "must not have a query or fragment"}])
        host = parts.hostname
        props = {**props, "scheme": parts.scheme, "basePath": parts.path.rstrip("/")}
    if not host:
        raise InvalidConnection([{"path": "host", "message": "required (or url)"}])
    if not _HOST.fullmatch(host):
        raise InvalidConnection([{"path": "host", "message": "not a host name or address"}])
    port = port or (443 if props["scheme"] == "https" else 80)
    return ConnectionSpec(type="http", host=host, port=port, database=props.get("basePath") or "/", properties=props)


def http_base_url(spec: ConnectionSpec) -> str:
    props = spec.properties
    default_port = 443 if props["scheme"] == "https" else 80
    netloc = spec.host if spec.port == default_port else f"{spec.host}:{spec.port}"
    if ":" in spec.host and not spec.host.startswith("["):  # an IPv6 literal
        netloc = f"[{spec.host}]" if spec.port == default_port else f"[{spec.host}]:{spec.port}"
    return f"{props['scheme']}://{netloc}{props.get('basePath', '')}"


def airflow_connection(conn_id: str, spec: ConnectionSpec, creds: Credentials | None) -> dict[str, Any]:
    """The body of Airflow's POST/PATCH /api/v2/connections for this connection.

    `extra` holds settings only, never a secret: the password fields are the only secret-bearing ones
    (Airflow encrypts them and masks them in its API and logs)."""
    body: dict[str, Any] = {
        "connection_id": conn_id,
        "login": creds.username if creds else None,
        "password": (creds.password or "") if creds else None,
        "description": f"managed by pipeline-service ({spec.type})",
    }
    if is_sqlite(spec.type, spec.port):
        # The sqlite provider's convention: the file path in `host`. No login: a file has none.
        return {
            **body,
            "login": None,
            "password": None,
            "conn_type": "sqlite",
            "host": spec.database,
            "port": None,
            "schema": None,
            "extra": "{}",
        }
    if spec.type in SQL_TYPES:
        return {**body, **_postgres_fields(spec)}
    if spec.type == "s3":
        props = spec.properties
        extra: dict[str, Any] = {"region_name": props["region"]}
        if props.get("endpointUrl"):
            extra["endpoint_url"] = props["endpointUrl"]
        if not props.get("verifyTls", True):
            extra["verify"] = False
        if props.get("connectionTimeout"):
            extra["config_kwargs"] = {"connect_timeout": max(1, props["connectionTimeout"] // 1000)}
        return {**body, "conn_type": "aws", "host": None, "port": None, "schema": None, "extra": json.dumps(extra)}
    props = spec.properties
    extra = dict(props.get("headers", {}))
    if props.get("connectionTimeout"):
        extra["timeout"] = max(1, props["connectionTimeout"] // 1000)
    if not props.get("verifyTls", True):
        extra["verify"] = False
    # The http provider takes a host holding "://" as the whole base URL: the only way to keep a base path.
    return {
        **body,
        "conn_type": "http",
        "host": http_base_url(spec),
        "port": None,
        "schema": props["scheme"],
        "extra": json.dumps(extra),
    }


def _postgres_fields(spec: ConnectionSpec) -> dict[str, Any]:
    props = spec.properties
    extra: dict[str, Any] = {}
    if props.get("sslMode"):
        extra["sslmode"] = props["sslMode"]
    if props.get("connectionTimeout"):
        extra["connect_timeout"] = max(1, props["connectionTimeout"] // 1000)
    if props.get("applicationName"):
        extra["application_name"] = props["applicationName"]
    return {
        "conn_type": "postgres",
        "host": spec.host,
        "port": spec.port,
        "schema": spec.database,
        "extra": json.dumps(extra),
    }
