"""Shared by the service's API tests: the example definition, request bodies, clients, error checks."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service import naming
from service.auth import mint_token
from service.config import Settings
from service.workers import connections_step, dispatch_step
from tests.service.fake_airflow import FakeAirflow

EXAMPLE = json.loads((Path(__file__).resolve().parents[2] / "examples" / "daily-sales-etl.json").read_text())
# The password of every connection the tests create: distinctive, so "it is not in there" means something.
CONN_PASSWORD = "pw-Zx81-never-in-files"


def example(name: str = "daily-sales-etl", **fields: Any) -> dict[str, Any]:
    """The example's request body; `fields` replace top-level keys (name, tags, version...)."""
    body = copy.deepcopy(EXAMPLE)
    body.update(name=name, **fields)
    return body


def connection_body(name: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "type": "postgres",
        "host": "127.0.0.1",
        "port": 5432,
        "database": "x",
        "credentials": {"username": "u", "password": CONN_PASSWORD},
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def expect_error(resp: httpx.Response, status: int, code: str, path: str | None = None) -> dict[str, Any]:
    """Check the error envelope {"error": {code, message, details}}; with `path`, that it names the field."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert list(body) == ["error"] and set(body["error"]) == {"code", "message", "details"}, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, error
    if path is not None:
        assert path in [d["path"] for d in error["details"]], error
    return error


@dataclass
class Api:
    """One tenant's user: every request carries the Bearer token and X-Tenant-ID."""

    client: TestClient
    tenant: str
    headers: dict[str, str]

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, url, headers=self.headers, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def patch(self, url: str, changes: Any, content_type: str = "application/merge-patch+json") -> httpx.Response:
        """A JSON Merge Patch (RFC 7396), by default with its own media type."""
        headers = {**self.headers, "Content-Type": content_type}
        return self.client.request("PATCH", url, headers=headers, content=json.dumps(changes))

    def create_connection(self, name: str, **fields: Any) -> dict[str, Any]:
        resp = self.post("/v1/pipelines/connections", json=connection_body(name, **fields))
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    def create_pipeline(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.post("/v1/pipelines", json=body)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    def pipeline(self, pipeline_id: str) -> dict[str, Any]:
        resp = self.get(f"/v1/pipelines/{pipeline_id}")
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def execute(self, pipeline_id: str, **body: Any) -> dict[str, Any]:
        resp = self.post(f"/v1/pipelines/{pipeline_id}/execute", json=body)
        assert resp.status_code == 202, resp.text
        return dict(resp.json())

    def execution(self, execution_id: str) -> dict[str, Any]:
        resp = self.get(f"/v1/pipelines/executions/{execution_id}")
        assert resp.status_code == 200, resp.text
        return dict(resp.json())


@dataclass
class Service:
    """The app under test (lifespan running), its fake Airflow, and deterministic background steps."""

    app: FastAPI
    client: TestClient
    fake: FakeAirflow
    settings: Settings

    def token(self, tenant: str = "acme", roles: tuple[str, ...] = ("admin",), **kwargs: Any) -> str:
        return mint_token(self.settings.resolved_jwt_secret(), tenant=tenant, roles=list(roles), **kwargs)

    def api(self, tenant: str = "acme", roles: tuple[str, ...] = ("admin",)) -> Api:
        headers = {"Authorization": f"Bearer {self.token(tenant, roles)}", "X-Tenant-ID": tenant}
        return Api(self.client, tenant, headers)

    def publish(self) -> int:
        """One pass of the publisher worker."""
        return int(self.app.state.publisher.run_pending())

    def dispatch(self) -> None:
        """One pass of the dispatcher worker (raises AirflowUnavailable when the fake is down)."""
        dispatch_step(self.app.state.sessions, self.app.state.airflow)

    def sync_connections(self) -> None:
        """One pass of the connections worker (raises AirflowUnavailable when the fake is down)."""
        state = self.app.state
        connections_step(state.sessions, state.airflow, state.vault, state.secrets)

    def dag_file(self, dag_id: str) -> Path:
        return Path(self.app.state.publisher.store.folder) / naming.dag_file_name(dag_id)
