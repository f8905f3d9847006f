"""The migrations build exactly the tables the models declare (Alembic's autogenerate finds nothing to add)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from service.db import migrate
from service.models import Base
from tests.pg import pg_url

REPO = Path(__file__).resolve().parents[2]


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


def test_replicas_starting_together_migrate_one_at_a_time(make_database) -> None:  # type: ignore[no-untyped-def]
    """Each replica migrates at start-up: three processes at once on a new PostgreSQL database all succeed (an
    advisory lock lets one migrate while the others wait, then find the schema at head)."""
    url = pg_url(make_database("svc_migrate_race")).replace("postgresql://", "postgresql+psycopg://")
    code = f"from service.db import migrate; migrate({url!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stderr=subprocess.PIPE) for _ in range(3)]
    errors = [p.communicate(timeout=300)[1].decode()[-500:] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert _differences(url) == []
