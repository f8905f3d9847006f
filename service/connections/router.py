from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from connections.network import NetworkPolicy
from service.auth import CurrentPrincipal
from service.connections import repository, service
from service.connections.models import Connection
from service.connections.schemas import ConnectionIn, ConnectionOut, ConnectionTestOut
from service.db import DbSession, run_after_commit
from service.deps import Airflow, VaultDep
from service.merge_patch import PATCH_OPENAPI, MergePatch
from service.schemas import Page, PageNumber, PageSize
from service.secrets import SecretsBackend

router = APIRouter(prefix="/v1/pipelines/connections", tags=["connections"])


def _secrets(request: Request) -> SecretsBackend:
    return request.app.state.secrets  # type: ignore[no-any-return]


Secrets = Annotated[SecretsBackend, Depends(_secrets)]


def _policy(request: Request) -> NetworkPolicy:
    return service.network_policy(request.app.state.settings)


Policy = Annotated[NetworkPolicy, Depends(_policy)]


def _users(request: Request) -> service.ConnectionUsers:
    """Which pipelines use a connection: handed in by service/main.py (pipelines build on connections)."""
    users: service.ConnectionUsers = request.app.state.connection_users
    return users


Users = Annotated[service.ConnectionUsers, Depends(_users)]


@router.post("", status_code=201, response_model=ConnectionOut, response_model_by_alias=True)
def create_connection(
    body: ConnectionIn,
    principal: CurrentPrincipal,
    session: DbSession,
    airflow: Airflow,
    vault: VaultDep,
    secrets: Secrets,
    policy: Policy,
    request: Request,
) -> ConnectionOut:
    return _out(request, session, service.create(session, principal, body, airflow, vault, secrets, policy))


def _out(request: Request, session: DbSession, conn: Connection) -> ConnectionOut:
    """The stored connection; when Airflow did not take it in time, the connections worker is woken (after
    the commit) to carry on."""
    out = service.to_out(conn)
    if out.airflow_sync == "PENDING":
        run_after_commit(session, request.app.state.wake_workers)
    return out


@router.get("", response_model=Page[ConnectionOut], response_model_by_alias=True)
def list_connections(
    principal: CurrentPrincipal,
    session: DbSession,
    page: PageNumber = 0,
    size: PageSize = 20,
) -> Page[ConnectionOut]:
    rows, total = repository.list_page(session, principal.tenant_id, offset=page * size, limit=size)
    return Page[ConnectionOut](items=[service.to_out(c) for c in rows], total=total, page=page, size=size)


@router.get("/{connection_id}", response_model=ConnectionOut, response_model_by_alias=True)
def get_connection(connection_id: str, principal: CurrentPrincipal, session: DbSession) -> ConnectionOut:
    return service.to_out(service.get_or_404(session, principal.tenant_id, connection_id))


@router.put("/{connection_id}", response_model=ConnectionOut, response_model_by_alias=True)
def update_connection(
    connection_id: str,
    body: ConnectionIn,
    principal: CurrentPrincipal,
    session: DbSession,
    airflow: Airflow,
    vault: VaultDep,
    secrets: Secrets,
    policy: Policy,
    users: Users,
    request: Request,
) -> ConnectionOut:
    conn = service.update(session, principal, connection_id, body, airflow, vault, secrets, policy, users=users)
    return _out(request, session, conn)


@router.patch(
    "/{connection_id}", response_model=ConnectionOut, response_model_by_alias=True, openapi_extra=PATCH_OPENAPI
)
def patch_connection(
    connection_id: str,
    body: MergePatch,
    principal: CurrentPrincipal,
    session: DbSession,
    airflow: Airflow,
    vault: VaultDep,
    secrets: Secrets,
    policy: Policy,
    users: Users,
    request: Request,
) -> ConnectionOut:
    """JSON Merge Patch of the PUT body without secrets: credentials stay unless the patch names them."""
    conn = service.patch(session, principal, connection_id, body, airflow, vault, secrets, policy, users=users)
    return _out(request, session, conn)


@router.post("/{connection_id}/test", response_model=ConnectionTestOut, response_model_by_alias=True)
def test_connection(
    connection_id: str,
    request: Request,
    principal: CurrentPrincipal,
    session: DbSession,
    vault: VaultDep,
    secrets: Secrets,
    policy: Policy,
) -> ConnectionTestOut:
    timeout = request.app.state.settings.connection_test_timeout_seconds
    return service.check(session, principal.tenant_id, connection_id, vault, secrets, timeout, policy, principal)


@router.delete("/{connection_id}", status_code=204)
def delete_connection(
    connection_id: str, principal: CurrentPrincipal, session: DbSession, airflow: Airflow, users: Users
) -> Response:
    service.delete(session, principal, connection_id, airflow, users=users)
    return Response(status_code=204)
