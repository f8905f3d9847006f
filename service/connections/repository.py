from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from service.connections.models import Connection
from service.db import page


def get(session: Session, tenant_id: str, connection_id: str) -> Connection | None:
    stmt = select(Connection).where(Connection.tenant_id == tenant_id, Connection.id == connection_id)
    return session.scalars(stmt).one_or_none()


def by_name(session: Session, tenant_id: str, name: str) -> Connection | None:
    stmt = select(Connection).where(Connection.tenant_id == tenant_id, Connection.name == name)
    return session.scalars(stmt).one_or_none()


def _of_tenant(tenant_id: str) -> Select[Connection]:
    return select(Connection).where(Connection.tenant_id == tenant_id).order_by(Connection.created_at, Connection.id)


def list_all(session: Session, tenant_id: str) -> Sequence[Connection]:
    return session.scalars(_of_tenant(tenant_id)).all()


def list_page(session: Session, tenant_id: str, *, offset: int, limit: int) -> tuple[Sequence[Connection], int]:
    return page(session, _of_tenant(tenant_id), offset=offset, limit=limit)


def not_in_airflow(session: Session, tenant_id: str, names: Collection[str]) -> list[Connection]:
    """Those of the tenant's connections named `names` whose last change has not reached Airflow yet."""
    if not names:
        return []
    return list(
        session.scalars(
            _of_tenant(tenant_id).where(
                Connection.name.in_(list(names)), Connection.airflow_synced_version < Connection.airflow_version
            )
        )
    )
