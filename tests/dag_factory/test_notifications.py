"""Failure and SLA notifications: to a webhook URL or through an http connection (URL, headers and basic
auth stay in the connection, out of the definition and the DAG file). A local HTTP server receives them."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from dag_factory import build_dag
from dag_factory.callbacks import deadline_missed, post_summary
from tests.dag_factory.test_definition_language import CONNS, definition, errors

TOKEN = "hook-t0ken-8c1f"


class Received(BaseHTTPRequestHandler):
    got: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Received.got.append({"path": self.path, "headers": dict(self.headers), "body": body})
        self.send_response(500 if "/broken" in self.path else 204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = HTTPServer(("127.0.0.1", 0), Received)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Received.got = []
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


@pytest.fixture
def hook_conn(server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Airflow http connection as the service writes it: the whole base URL in host, headers in extra."""
    conn = {
        "conn_type": "http",
        "host": f"{server}/hooks",
        "login": "ops",
        "password": TOKEN,
        "extra": {"X-Team": "data"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_ACME_ALERTS", json.dumps(conn))
    return "acme_alerts"


def test_on_failure_names_exactly_one_target():
    for on_failure in ({}, {"webhook": "http://h/x", "connection": "alerts"}, {"webhook": "http://h/x", "path": "/p"}):
        assert [p for p, _ in errors(definition(on_failure=on_failure))] == ["orchestration.on_failure"], on_failure


def test_a_connection_target_puts_only_its_id_in_the_dag():
    conns = {**CONNS, "alerts": "acme.alerts"}
    dag = build_dag(
        definition(on_failure={"connection": "alerts", "path": "/failed"}, sla_seconds=60),
        dag_id="a.x",
        connections=conns,
    )
    notifier = dag.on_failure_callback[0] if isinstance(dag.on_failure_callback, list) else dag.on_failure_callback
    assert (notifier.url, notifier.conn_id, notifier.path) == (None, "acme.alerts", "/failed")
    deadline = dag.deadline[0] if isinstance(dag.deadline, list) else dag.deadline
    assert deadline.callback.kwargs == {"dag_id": "a.x", "sla_seconds": 60, "conn_id": "acme.alerts", "path": "/failed"}


def test_posting_through_a_connection_uses_its_url_headers_and_auth(hook_conn: str):
    post_summary({"event": "pipeline_run_failed", "dag_id": "a.x"}, conn_id=hook_conn, path="/failed")
    [got] = Received.got
    assert got["path"] == "/hooks/failed" and got["body"] == {"event": "pipeline_run_failed", "dag_id": "a.x"}
    assert got["headers"]["X-Team"] == "data"
    assert got["headers"]["Authorization"] == "Basic " + base64.b64encode(f"ops:{TOKEN}".encode()).decode()


def test_an_undelivered_notification_is_logged_without_the_url(hook_conn: str, server: str, caplog):
    post_summary({"dag_id": "a.x"}, conn_id=hook_conn, path="/broken")  # 500: logged, not raised
    post_summary({"dag_id": "a.x"}, url=f"{server}/broken?token={TOKEN}")
    post_summary({"dag_id": "a.x"}, conn_id="acme.missing")
    assert len(Received.got) == 2
    logged = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(logged) == 3 and not any(TOKEN in m or "127.0.0.1" in m for m in logged), logged


def test_a_missed_sla_posts_through_the_connection(hook_conn: str):
    asyncio.run(deadline_missed(dag_id="a.x", sla_seconds=60, conn_id=hook_conn, path="/sla", context={}))
    [got] = Received.got
    assert got["path"] == "/hooks/sla" and got["body"]["event"] == "pipeline_sla_missed"
    assert got["body"]["sla_seconds"] == 60
