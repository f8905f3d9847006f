"""The end-to-end session fixtures: one real Airflow + service for the whole test session (shared by
tests/e2e and tests/security through `pytest_plugins` in tests/conftest.py), real PostgreSQL databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e import harness
from tests.pg import pg_url

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def running(tmp_path_factory: pytest.TempPathFactory, make_database) -> Iterator[harness.Running]:  # type: ignore[no-untyped-def]
    service_db = make_database("svc_e2e")
    run = harness.start(tmp_path_factory.mktemp("e2e"), database_url=pg_url(service_db))
    yield run
    run.stop()


@pytest.fixture(scope="session")
def sales_db(make_database) -> str:  # type: ignore[no-untyped-def]
    name = make_database("sales")
    with psycopg.connect(pg_url(name), autocommit=True) as conn:
        conn.execute((REPO / "examples" / "sales_seed.sql").read_text())
    return name


@pytest.fixture(scope="session")
def warehouse_db(make_database) -> str:  # type: ignore[no-untyped-def]
    return make_database("warehouse")


def connection_body(name: str, database: str, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "type": "postgres", "host": "127.0.0.1", "port": 5432, "database": database}
    body.update(extra or {"credentials": {"username": "postgres", "password": "pw-unused-by-trust"}})
    return body


@pytest.fixture
def tenant(running: harness.Running, sales_db: str, warehouse_db: str) -> httpx.Client:
    """A fresh tenant with the example's two connections."""
    api = running.client(tenant="t" + uuid.uuid4().hex[:10])
    for name, db in (("sales-database", sales_db), ("warehouse", warehouse_db)):
        resp = api.post("/v1/pipelines/connections", json=connection_body(name, db))
        assert resp.status_code == 201, resp.text
    return api
