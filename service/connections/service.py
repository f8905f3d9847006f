"""Connections: stored per tenant, materialised as Airflow connections, tested in the service process.

Secrets never leave this module except towards Airflow's connection store (its password field; an http
connection's headers in its extra) and the driver of a connection test; the API returns only whether inline
credentials exist, and an http connection's header names with masked values."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session

from connections import ConnectionSpec, Credentials, InvalidConnection, airflow_connection, build_spec
from connections.network import NetworkDenied, NetworkPolicy, current_policy, policy_of
from connections.testing import Stage, TestResult, check_connection
from connections.types import SQL_TYPES, is_sqlite
from dag_factory.spec.datasets import Endpoint
from service import naming
from service.airflow.client import AirflowClient, AirflowRejected
from service.audit.service import record
from service.auth import Principal
from service.connections import repository
from service.connections.models import Connection
from service.connections.schemas import ConnectionIn, ConnectionOut, ConnectionTestOut, StageOut
from service.errors import AirflowUnavailable, Conflict, NotFound, ServiceError, UpstreamError, ValidationFailed
from service.merge_patch import patched
from service.secrets import SecretsBackend, Vault, resolve

log = logging.getLogger(__name__)

# Names of the tenant's pipelines whose current definition uses connection `name`: (session, tenant_id, name).
# Pipelines build on connections, so this feature is handed the lookup (service/main.py wires
# service.pipelines.service.connection_users) rather than importing pipelines.
ConnectionUsers = Callable[[Session, str, str], list[str]]


def _spec(body: ConnectionIn, policy: NetworkPolicy | None = None) -> ConnectionSpec:
    try:
        spec = build_spec(
            body.type, host=body.host, port=body.port, database=body.database, url=body.url, properties=body.properties
        )
    except InvalidConnection as exc:
        raise ValidationFailed(str(exc), details=exc.errors) from None
    _refuse_denied_host(body, spec, policy or current_policy())
    return spec


def network_policy(settings: Any) -> NetworkPolicy:
    """The network policy of the service: the configured one plus the service's own endpoint and Airflow's
    (whatever the operator listed: a tenant must never make the service call itself or its Airflow)."""
    own = [f"{settings.host}:{settings.port}"]
    airflow = urlsplit(settings.airflow_url or "")
    if airflow.hostname:
        port = airflow.port or (443 if airflow.scheme == "https" else 80)
        own.append(f"[{airflow.hostname}]:{port}" if ":" in airflow.hostname else f"{airflow.hostname}:{port}")
    return policy_of(settings.allowed_networks, ",".join([settings.denied_endpoints, *own]))


def _refuse_denied_host(body: ConnectionIn, spec: ConnectionSpec, policy: NetworkPolicy) -> None:
    """400 when the host is refused whatever DNS says (a literal address, `localhost`, a metadata name);
    other names are checked where they are resolved: by the connection test and on the workers."""
    reason = policy.refusal_without_dns(spec.host, spec.port) if spec.host else None
    if reason is None:
        return
    path = "properties.endpointUrl" if spec.type == "s3" else "url" if body.url else "host"
    denied = NetworkDenied(spec.host, spec.port, reason)
    raise ValidationFailed(str(denied), details=[{"path": path, "message": denied.hint}])


def _new_credentials(body: ConnectionIn, secrets: SecretsBackend, tenant_id: str) -> Credentials | None:
    """The credentials the body gives (inline, or by a ref resolved in the tenant's own scope), or None."""
    if body.credentials is not None and body.credential_secret_ref:
        raise ValidationFailed(
            "give either credentialSecretRef or credentials, not both",
            details=[{"path": "credentials", "message": "conflicts with credentialSecretRef"}],
        )
    if body.credentials is not None:
        pw = body.credentials.password.get_secret_value() if body.credentials.password else None
        return Credentials(username=body.credentials.username, password=pw)
    if body.credential_secret_ref:
        return resolve(secrets, tenant_id, body.credential_secret_ref)
    return None


def _require_credentials(type_: str, creds: Credentials | None) -> None:
    """Databases need a login; s3 too: without keys the workers' own AWS identity would be used, which every
    tenant shares, so a tenant's bucket access is only ever its own connection's credentials."""
    if creds is None and type_ in (*SQL_TYPES, "s3"):
        raise ValidationFailed(
            "credentialSecretRef or credentials is required",
            details=[{"path": "credentialSecretRef", "message": "required (or inline credentials)"}],
        )


# What the API shows for a header value; sent back in a PUT, it keeps the stored value of that header.
HEADER_MASK = "********"


def _apply(conn: Connection, spec: ConnectionSpec, vault: Vault) -> None:
    """Store the spec; an http connection's header values go encrypted, `properties` keeps them masked."""
    headers = _unmasked_headers(conn, spec.properties.get("headers") or {}, vault)
    conn.type, conn.host, conn.port, conn.database = spec.type, spec.host, spec.port, spec.database
    conn.headers_encrypted = vault.seal_headers(headers) if headers else None
    conn.properties = _masked(spec.properties)


def _unmasked_headers(conn: Connection, given: dict[str, str], vault: Vault) -> dict[str, str]:
    """The request's headers, a masked value replaced by the stored one (a GET-edit-PUT round trip)."""
    if HEADER_MASK not in given.values():
        return dict(given)
    try:
        stored = stored_headers(conn, vault)
    except RuntimeError as exc:
        raise ValidationFailed(str(exc), details=[{"path": "properties.headers", "message": str(exc)}]) from None
    unknown = [name for name, value in given.items() if value == HEADER_MASK and name not in stored]
    if unknown:
        message = f"header '{unknown[0]}' has no stored value to keep: give its value"
        raise ValidationFailed(message, details=[{"path": f"properties.headers.{unknown[0]}", "message": message}])
    return {name: stored[name] if value == HEADER_MASK else value for name, value in given.items()}


def _masked(properties: dict[str, Any]) -> dict[str, Any]:
    if not properties.get("headers"):
        return dict(properties)
    return {**properties, "headers": dict.fromkeys(properties["headers"], HEADER_MASK)}


def stored_headers(conn: Connection, vault: Vault) -> dict[str, str]:
    """The real header values (rows stored before they were encrypted still hold them in `properties`)."""
    if conn.headers_encrypted:
        return vault.open_headers(conn.headers_encrypted)
    return {k: v for k, v in (conn.properties.get("headers") or {}).items() if v != HEADER_MASK}


def spec_of(conn: Connection, vault: Vault) -> ConnectionSpec:
    """The connection as Airflow and the connection test need it: header values decrypted."""
    properties = dict(conn.properties)
    if properties.get("headers"):
        properties["headers"] = stored_headers(conn, vault)
    return ConnectionSpec(type=conn.type, host=conn.host, port=conn.port, database=conn.database, properties=properties)


def stored_credentials(conn: Connection, vault: Vault, secrets: SecretsBackend) -> Credentials | None:
    if conn.credentials_encrypted:
        return vault.open(conn.credentials_encrypted)
    if conn.credential_secret_ref:
        return resolve(secrets, conn.tenant_id, conn.credential_secret_ref)
    return None


INLINE_TIMEOUT_SECONDS = 3.0  # a request waits this long for Airflow; then the connections worker carries on


def materialise(
    session: Session, airflow: AirflowClient, conn: Connection, creds: Credentials | None, vault: Vault
) -> None:
    """Record a change of the connection for Airflow (an outbox) and bring Airflow in step at once when it
    answers within INLINE_TIMEOUT_SECONDS. When it does not (down, busy, timed out) the change stays pending:
    the connection is stored, shows `airflowSync: PENDING` with the reason, the connections worker retries
    (sync_pending), and executions of pipelines that use it wait for it. Airflow refusing the content is the
    client's error: 400, and the request stores nothing."""
    conn.airflow_version = (conn.airflow_version or 0) + 1
    session.flush()
    try:
        _upsert(airflow, conn, creds, vault, attempts=1, timeout=INLINE_TIMEOUT_SECONDS)
    except AirflowRejected:
        raise
    except ServiceError as exc:
        log.info("connection %s pending for Airflow: %s", conn.airflow_conn_id, exc.message)
        conn.airflow_sync_error = exc.message
        return
    conn.airflow_synced_version, conn.airflow_sync_error = conn.airflow_version, None


def _upsert(airflow: AirflowClient, conn: Connection, creds: Credentials | None, vault: Vault, **how: Any) -> None:
    try:
        airflow.upsert_connection(airflow_connection(conn.airflow_conn_id, spec_of(conn, vault), creds), **how)
    except AirflowRejected:
        # Airflow's error body could echo the request, password included: say only what failed.
        raise AirflowRejected(f"Airflow refused the connection '{conn.name}'") from None
    except UpstreamError as exc:
        status = re.search(r"HTTP \d{3}", exc.message)  # only the status: the body may echo the password
        raise UpstreamError(f"Airflow answered {status[0] if status else 'an error'} for '{conn.name}'") from None


def sync_pending(session: Session, airflow: AirflowClient, vault: Vault, secrets: SecretsBackend) -> None:
    """The connections worker's step: every connection whose last change is not in Airflow yet, upserted
    (rows another replica holds are skipped). A change made meanwhile stays pending for the next step."""
    pending = session.scalars(
        select(Connection)
        .where(Connection.airflow_synced_version < Connection.airflow_version)
        .with_for_update(skip_locked=True)
    ).all()
    for conn in pending:
        version = conn.airflow_version
        try:
            _upsert(airflow, conn, stored_credentials(conn, vault, secrets), vault)
        except AirflowUnavailable:
            raise  # the others would fail the same way: next step
        except ServiceError as exc:
            conn.airflow_sync_error = exc.message
            continue
        conn.airflow_sync_error = None
        session.execute(
            sql_update(Connection)
            .where(Connection.id == conn.id, Connection.airflow_version == version)
            .values(airflow_synced_version=version)
        )
        log.info("connection %s is in Airflow", conn.airflow_conn_id)


def create(
    session: Session,
    principal: Principal,
    body: ConnectionIn,
    airflow: AirflowClient,
    vault: Vault,
    secrets: SecretsBackend,
    policy: NetworkPolicy | None = None,
) -> Connection:
    spec = _spec(body, policy)
    creds = _new_credentials(body, secrets, principal.tenant_id)
    _require_credentials(spec.type, creds)
    if repository.by_name(session, principal.tenant_id, body.name):
        raise Conflict(
            f"a connection named '{body.name}' already exists", details=[{"path": "name", "message": "duplicate"}]
        )
    conn = Connection(
        id="conn-" + uuid.uuid4().hex[:20],
        tenant_id=principal.tenant_id,
        name=body.name,
        credential_secret_ref=body.credential_secret_ref,
        credentials_encrypted=vault.seal(creds) if body.credentials is not None and creds else None,
        airflow_conn_id=naming.airflow_conn_id(principal.tenant_id, body.name),
    )
    _apply(conn, spec, vault)
    session.add(conn)
    session.flush()
    # Airflow last: if it refuses, the request's transaction rolls back and nothing is half-stored.
    materialise(session, airflow, conn, creds, vault)
    record(session, principal, "create", "connection", conn.id, after=audit_view(conn))
    return conn


def update(
    session: Session,
    principal: Principal,
    connection_id: str,
    body: ConnectionIn,
    airflow: AirflowClient,
    vault: Vault,
    secrets: SecretsBackend,
    policy: NetworkPolicy | None = None,
    *,
    users: ConnectionUsers,
) -> Connection:
    """Replace the connection's settings; without credentials/credentialSecretRef the stored ones stay.

    The Airflow connection keeps its id, so DAGs pick up the change at their next run, unchanged."""
    conn = get_or_404(session, principal.tenant_id, connection_id)
    before = audit_view(conn)
    if body.name != conn.name:
        message = f"a connection cannot be renamed (pipelines refer to '{conn.name}' by name): create a new one"
        raise ValidationFailed(message, details=[{"path": "name", "message": message}])
    spec = _spec(body, policy)
    if (conn.type in SQL_TYPES) != (spec.type in SQL_TYPES):
        in_use = users(session, principal.tenant_id, conn.name)
        if in_use:
            raise Conflict(
                f"connection '{conn.name}' is used by pipeline(s) {', '.join(in_use)} as a database: "
                f"it cannot become type '{spec.type}'",
                details={"pipelines": in_use},
            )
    creds = _new_credentials(body, secrets, principal.tenant_id)
    if body.credentials is not None and creds is not None:
        conn.credentials_encrypted, conn.credential_secret_ref = vault.seal(creds), None
    elif body.credential_secret_ref:
        conn.credentials_encrypted, conn.credential_secret_ref = None, body.credential_secret_ref
    else:
        creds = _stored_or_400(conn, vault, secrets)
    _require_credentials(spec.type, creds)
    _apply(conn, spec, vault)
    session.flush()
    materialise(session, airflow, conn, creds, vault)
    # New credentials leave no other trace in before/after (they are not in it): say that they were replaced.
    replaced = {"credentialsReplaced": body.credentials is not None or bool(body.credential_secret_ref)}
    record(session, principal, "update", "connection", conn.id, before=before, after=audit_view(conn), details=replaced)
    return conn


def audit_view(conn: Connection) -> dict[str, Any]:
    """What the audit log keeps of a connection: its non-secret fields only. No credentials (not even the inline
    username), no header values (masked, as the API shows them), the secret reference's name but never what it
    resolves to."""
    return {
        "name": conn.name,
        "type": conn.type,
        "host": conn.host,
        "port": conn.port,
        "database": conn.database,
        "credentialSecretRef": conn.credential_secret_ref,
        "inlineCredentials": conn.credentials_encrypted is not None,
        "properties": _masked(conn.properties),
    }


def put_body(conn: Connection) -> dict[str, Any]:
    """The PUT body that would leave the connection as it is, secrets left out: what a merge patch applies to.

    Header values stay masked (a PUT keeps the stored value of a masked header). Neither `credentials` nor
    `credentialSecretRef` is in it: as in a PUT, a patch naming neither keeps the stored credentials, and a
    patch naming either replaces them. Only the fields the type takes are given (s3 derives its endpoint from
    properties; a SQLite file is its url)."""
    body: dict[str, Any] = {"name": conn.name, "type": conn.type, "properties": _masked(conn.properties)}
    if is_sqlite(conn.type, conn.port):
        return {**body, "url": f"sqlite:///{conn.database}"}
    if conn.type in SQL_TYPES:
        return {**body, "host": conn.host, "port": conn.port, "database": conn.database}
    if conn.type == "http":
        return {**body, "host": conn.host, "port": conn.port}
    return body


def patch(
    session: Session,
    principal: Principal,
    connection_id: str,
    changes: dict[str, Any],
    airflow: AirflowClient,
    vault: Vault,
    secrets: SecretsBackend,
    policy: NetworkPolicy | None = None,
    *,
    users: ConnectionUsers,
) -> Connection:
    """A merge patch: the merged document goes through `update`, as a PUT body would."""
    body = patched(ConnectionIn, put_body(get_or_404(session, principal.tenant_id, connection_id)), changes)
    return update(session, principal, connection_id, body, airflow, vault, secrets, policy, users=users)


def _stored_or_400(conn: Connection, vault: Vault, secrets: SecretsBackend) -> Credentials | None:
    try:
        return stored_credentials(conn, vault, secrets)
    except RuntimeError as exc:  # undecryptable inline credentials: the user must give new ones
        raise ValidationFailed(str(exc), details=[{"path": "credentials", "message": str(exc)}]) from None


def get_or_404(session: Session, tenant_id: str, connection_id: str) -> Connection:
    conn = repository.get(session, tenant_id, connection_id)
    if conn is None:
        raise NotFound(f"connection '{connection_id}' not found")
    return conn


def delete(
    session: Session, principal: Principal, connection_id: str, airflow: AirflowClient, *, users: ConnectionUsers
) -> None:
    conn = get_or_404(session, principal.tenant_id, connection_id)
    in_use = users(session, principal.tenant_id, conn.name)
    if in_use:
        raise Conflict(
            f"connection '{conn.name}' is used by pipeline(s): {', '.join(in_use)}", details={"pipelines": in_use}
        )
    before = audit_view(conn)
    session.delete(conn)
    session.flush()
    record(session, principal, "delete", "connection", conn.id, before=before)
    airflow.delete_connection(conn.airflow_conn_id)


def check(
    session: Session,
    tenant_id: str,
    connection_id: str,
    vault: Vault,
    secrets: SecretsBackend,
    timeout: float,
    policy: NetworkPolicy | None = None,
    principal: Principal | None = None,
) -> ConnectionTestOut:
    """The staged test with the stored secret (never a masked value). Failing is a result, not an error; with
    `principal` (a request's), the test and its outcome (not its messages) are recorded in the audit log."""
    conn = get_or_404(session, tenant_id, connection_id)
    out = _check(conn, vault, secrets, timeout, policy)
    if principal is not None:
        outcome = {"connected": out.connected, "failedStage": out.failed_stage, "latencyMs": out.latency_ms}
        record(session, principal, "test", "connection", conn.id, details=outcome)
    return out


def _check(
    conn: Connection, vault: Vault, secrets: SecretsBackend, timeout: float, policy: NetworkPolicy | None
) -> ConnectionTestOut:
    t0 = time.monotonic()
    if conn.credential_secret_ref:
        label = secrets.where(conn.tenant_id, conn.credential_secret_ref)
        source = f"credentials from {label}"
    elif conn.credentials_encrypted:
        label = "the connection's inline credentials (PUT the connection with new ones)"
        source = "the connection's inline credentials"
    else:
        label, source = "the connection's credentials (none are set)", "no credentials"
    try:
        creds = stored_credentials(conn, vault, secrets)
        spec = spec_of(conn, vault)
    except (ServiceError, RuntimeError) as exc:
        message = exc.message if isinstance(exc, ServiceError) else str(exc)
        stage = Stage("credentials", False, int((time.monotonic() - t0) * 1000), message)
        result = TestResult(False, stage.ms, [stage], failed_stage="credentials", hint=message)
        return _test_out(result)
    first = Stage("credentials", True, int((time.monotonic() - t0) * 1000), f"using {source}")
    result = check_connection(spec, creds, timeout=timeout, credentials_label=label, policy=policy)
    result.stages.insert(0, first)
    log.info(
        "connection test of %s: %s%s",
        conn.airflow_conn_id,
        "connected" if result.connected else "failed at ",
        "" if result.connected else result.failed_stage,
    )
    return _test_out(result)


def _test_out(result: TestResult) -> ConnectionTestOut:
    return ConnectionTestOut(
        connected=result.connected,
        latency_ms=result.latency_ms,
        version=result.version,
        details=result.details,
        stages=[StageOut(name=s.name, ok=s.ok, ms=s.ms, message=s.message) for s in result.stages],
        failed_stage=result.failed_stage,
        hint=result.hint,
    )


def to_out(conn: Connection) -> ConnectionOut:
    return ConnectionOut(
        connection_id=conn.id,
        name=conn.name,
        type=conn.type,
        host=conn.host,
        port=conn.port,
        database=conn.database,
        credential_secret_ref=conn.credential_secret_ref,
        has_inline_credentials=conn.credentials_encrypted is not None,
        properties=_masked(conn.properties),
        airflow_connection_id=conn.airflow_conn_id,
        airflow_sync="SYNCED" if conn.airflow_synced_version >= conn.airflow_version else "PENDING",
        airflow_sync_error=conn.airflow_sync_error,
        created_at=conn.created_at,
        updated_at=conn.updated_at,
    )


def endpoints(session: Session, tenant_id: str) -> dict[str, Endpoint]:
    """Where each of the tenant's connections points (by name, no credentials): what dataset names and asset
    URIs are made of (dag_factory.spec.datasets), the way the operators name them at run time."""
    out: dict[str, Endpoint] = {}
    for c in repository.list_all(session, tenant_id):
        if c.type == "s3":
            out[c.name] = Endpoint("s3", c.host, c.port, c.database)
        elif c.type == "http":
            out[c.name] = Endpoint("https" if c.port == 443 else "http", c.host, c.port)
        else:
            out[c.name] = Endpoint("postgres" if c.type == "postgres" else c.type, c.host, c.port, c.database)
    return out
