"""Monthly budgets: one per tenant (`pipeline_id` null) and one per pipeline at most."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, utcnow


def budget_key(tenant_id: str, pipeline_id: str | None) -> str:
    """The budget's primary key: `tenant:<id>` or `pipeline:<id>` (a pipeline id is unique across tenants)."""
    return f"pipeline:{pipeline_id}" if pipeline_id is not None else f"tenant:{tenant_id}"


class Budget(Base):
    __tablename__ = "budgets"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)  # budget_key()
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    pipeline_id: Mapped[str | None] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), index=True)
    monthly_usd: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
