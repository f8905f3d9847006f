"""The migrations build exactly the tables the models declare (Alembic's autogenerate finds nothing to add)."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from service.db import migrate
from service.models import Base
from tests.pg import pg_url


def _differences(url: str) -> list[object]:
    migrate(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


def test_migrations_match_the_models_on_sqlite(tmp_path: Path) -> None:
    assert _differences(f"sqlite:///{tmp_path / 'service.db'}") == []


def test_migrations_match_the_models_on_postgresql(make_database) -> None:  # type: ignore[no-untyped-def]
    assert _differences(pg_url(make_database("svc_migrations"))) == []
