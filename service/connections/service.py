"""Connections: stored per tenant, materialised as Airflow connections; secrets never leave this module
except towards Airflow's connection store."""

from __future__ import annotations

import uuid

from pydantic import ValidationError
from sqlalchemy.orm import Session

from connections import ConnectionSpec, Credentials, airflow_connection
from connections.types import PostgresProperties
from dag_factory.spec import json_path
from service import naming
from service.airflow.client import AirflowClient
from service.auth import Principal
from service.connections import repository
from service.connections.models import Connection
from service.connections.schemas import ConnectionIn, ConnectionOut
from service.errors import Conflict, NotFound, UpstreamError, ValidationFailed
from service.pipelines import repository as pipeline_repo
from service.secrets import Vault, resolve_secret_ref


def _validate_properties(body: ConnectionIn) -> None:
    try:
        PostgresProperties.model_validate(body.properties)
    except ValidationError as exc:
        details = [{"path": json_path(["properties", *e["loc"]]), "message": e["msg"]} for e in exc.errors()]
        raise ValidationFailed(f"{details[0]['path']}: {details[0]['message']}", details=details) from None


def _credentials(body: ConnectionIn) -> Credentials:
    if body.credentials is not None and body.credential_secret_ref:
        raise ValidationFailed(
            "give either credentialSecretRef or credentials, not both",
            details=[{"path": "credentials", "message": "conflicts with credentialSecretRef"}],
        )
    if body.credentials is not None:
        pw = body.credentials.password.get_secret_value() if body.credentials.password else None
        return Credentials(username=body.credentials.username, password=pw)
    if body.credential_secret_ref:
        return resolve_secret_ref(body.credential_secret_ref)
    raise ValidationFailed(
        "credentialSecretRef or credentials is required",
        details=[{"path": "credentialSecretRef", "message": "required (or inline credentials)"}],
    )


def materialise(airflow: AirflowClient, conn: Connection, creds: Credentials) -> None:
    spec = ConnectionSpec(
        type=conn.type, host=conn.host, port=conn.port, database=conn.database, properties=conn.properties
    )
    try:
        airflow.upsert_connection(airflow_connection(conn.airflow_conn_id, spec, creds))
    except UpstreamError:
        # Airflow's error body could echo the request, password included: say only what failed.
        raise UpstreamError(f"Airflow refused the connection '{conn.name}'") from None


def create(
    session: Session, principal: Principal, body: ConnectionIn, airflow: AirflowClient, vault: Vault
) -> Connection:
    _validate_properties(body)
    creds = _credentials(body)
    if repository.by_name(session, principal.tenant_id, body.name):
        raise Conflict(
            f"a connection named '{body.name}' already exists", details=[{"path": "name", "message": "duplicate"}]
        )
    conn = Connection(
        id="conn-" + uuid.uuid4().hex[:20],
        tenant_id=principal.tenant_id,
        name=body.name,
        type=body.type,
        host=body.host,
        port=body.port,
        database=body.database,
        credential_secret_ref=body.credential_secret_ref,
        credentials_encrypted=vault.seal(creds) if body.credentials is not None else None,
        properties=body.properties,
        airflow_conn_id=naming.airflow_conn_id(principal.tenant_id, body.name),
    )
    session.add(conn)
    session.flush()
    # Airflow last: if it fails, the request's transaction rolls back and nothing is half-stored.
    materialise(airflow, conn, creds)
    return conn


def get_or_404(session: Session, tenant_id: str, connection_id: str) -> Connection:
    conn = repository.get(session, tenant_id, connection_id)
    if conn is None:
        raise NotFound(f"connection '{connection_id}' not found")
    return conn


def users(session: Session, tenant_id: str, name: str) -> list[str]:
    """Names of the tenant's pipelines whose current definition uses connection `name`."""
    found = []
    for pipeline, definition in pipeline_repo.tenant_definitions(session, tenant_id):
        groups = [*definition.get("sources", {}).values(), *definition.get("sinks", {}).values()]
        used = {g.get("connection") for g in groups} | {definition.get("orchestration", {}).get("staging_connection")}
        if name in used:
            found.append(pipeline.name)
    return sorted(found)


def delete(session: Session, principal: Principal, connection_id: str, airflow: AirflowClient) -> None:
    conn = get_or_404(session, principal.tenant_id, connection_id)
    in_use = users(session, principal.tenant_id, conn.name)
    if in_use:
        raise Conflict(
            f"connection '{conn.name}' is used by pipeline(s): {', '.join(in_use)}", details={"pipelines": in_use}
        )
    session.delete(conn)
    session.flush()
    airflow.delete_connection(conn.airflow_conn_id)


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
        properties=conn.properties,
        airflow_connection_id=conn.airflow_conn_id,
        created_at=conn.created_at,
        updated_at=conn.updated_at,
    )
