"""End-to-end helpers. The session fixtures (`running`, `tenant`, the example databases) are in fixtures.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.e2e import harness
from tests.e2e.fixtures import connection_body  # noqa: F401  (re-exported for the tests)
from tests.pg import pg_url

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((REPO / "examples" / "daily-sales-etl.json").read_text())
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def query(database: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url(database)) as conn:
        return conn.execute(sql, args).fetchall()


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
