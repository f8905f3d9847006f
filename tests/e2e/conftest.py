"""End-to-end fixtures: one real Airflow + service for the whole session, real PostgreSQL databases."""

from __future__ import annotations

import copy
import json
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
EXAMPLE = json.loads((REPO / "examples" / "daily-sales-etl.json").read_text())
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


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


def query(database: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url(database)) as conn:
        return conn.execute(sql, args).fetchall()


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


def example(name: str, table: str, **changes: Any) -> dict[str, Any]:
    """The shared example definition under another name and target table."""
    body = copy.deepcopy(EXAMPLE)
    body["name"] = name
    body["definition"]["sinks"]["daily_transactions"]["table"] = table
    body["definition"]["orchestration"]["retries"] = 0
    for key, value in changes.items():
        body["definition"][key] = value
    return body


def wait_status(api: httpx.Client, pipeline_id: str, statuses: set[str], timeout: float = 120) -> dict[str, Any]:
    got = harness.wait_for(
        lambda: api.get(f"/v1/pipelines/{pipeline_id}").json(), lambda p: p["status"] in statuses, timeout
    )
    return dict(got)


def create_active(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.post("/v1/pipelines", json=body)
    assert resp.status_code == 201, resp.text
    pipeline = wait_status(api, resp.json()["pipelineId"], {"ACTIVE", "INVALID"})
    assert pipeline["status"] == "ACTIVE", f"{pipeline['name']}: {pipeline['status']}: {pipeline.get('statusDetail')}"
    return pipeline


def run_to_end(
    api: httpx.Client, pipeline_id: str, parameters: dict[str, Any] | None = None, timeout: float = 180
) -> dict[str, Any]:
    resp = api.post(f"/v1/pipelines/{pipeline_id}/execute", json={"parameters": parameters or {}})
    assert resp.status_code == 202, resp.text
    execution_id = resp.json()["executionId"]
    done = harness.wait_for(
        lambda: api.get(f"/v1/pipelines/executions/{execution_id}").json(),
        lambda e: e["status"] in TERMINAL,
        timeout,
        1.0,
    )
    return dict(done)
