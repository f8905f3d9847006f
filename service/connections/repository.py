from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.connections.models import Connection


def get(session: Session, tenant_id: str, connection_id: str) -> Connection | None:
    stmt = select(Connection).where(Connection.tenant_id == tenant_id, Connection.id == connection_id)
    return session.scalars(stmt).one_or_none()


def by_name(session: Session, tenant_id: str, name: str) -> Connection | None:
    stmt = select(Connection).where(Connection.tenant_id == tenant_id, Connection.name == name)
    return session.scalars(stmt).one_or_none()


def list_all(session: Session, tenant_id: str) -> Sequence[Connection]:
    stmt = select(Connection).where(Connection.tenant_id == tenant_id).order_by(Connection.created_at, Connection.id)
    return session.scalars(stmt).all()
