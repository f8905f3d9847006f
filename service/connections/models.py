from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, utcnow


class Connection(Base):
    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_connections_tenant_name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(20))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    database: Mapped[str] = mapped_column(String(255))
    credential_secret_ref: Mapped[str | None] = mapped_column(String(200))
    # Inline credentials, Fernet-encrypted JSON {"username", "password"}; never returned.
    credentials_encrypted: Mapped[str | None] = mapped_column(Text)
    # An http connection's header values, Fernet-encrypted JSON {name: value}; `properties.headers` keeps the
    # names with masked values. Never returned.
    headers_encrypted: Mapped[str | None] = mapped_column(Text)
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    airflow_conn_id: Mapped[str] = mapped_column(String(250), unique=True)
    # The Airflow connection is an outbox: every change bumps `airflow_version`; the change is in Airflow
    # once `airflow_synced_version` has caught up (inline when Airflow answers at once, else the
    # connections worker). `airflow_sync_error`: why the last attempt did not get there.
    airflow_version: Mapped[int] = mapped_column(Integer, default=1)
    airflow_synced_version: Mapped[int] = mapped_column(Integer, default=0)
    airflow_sync_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
