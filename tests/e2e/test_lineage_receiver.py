"""The OpenLineage receiver through a real Airflow with its openlineage provider switched on: the example's run
posts its DAG and task events to POST /api/v1/lineage, the service stores them under the run's execution and
tenant, sums the rows and bytes into the execution's metrics, and forwards every event unchanged to a second
OpenLineage receiver."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from service.lineage.models import LineageDataset, LineageEvent
from tests.e2e import harness
from tests.e2e.conftest import create_active, example, query, run_to_end

pytestmark = pytest.mark.e2e


def _events(running: harness.Running, execution_id: str) -> list[LineageEvent]:
    with running.app.state.sessions() as s:
        return list(s.scalars(select(LineageEvent).where(LineageEvent.execution_id == execution_id)))


def _datasets(running: harness.Running, execution_id: str) -> list[LineageDataset]:
    with running.app.state.sessions() as s:
        return list(s.scalars(select(LineageDataset).where(LineageDataset.execution_id == execution_id)))


def _execution(api: httpx.Client, execution_id: str) -> dict[str, Any]:
    return dict(api.get(f"/v1/pipelines/executions/{execution_id}").json())


def _dag_complete(running: harness.Running, execution_id: str) -> list[LineageEvent]:
    """The run's events once the DAG-level COMPLETE (the scheduler's, after the run ended) has arrived."""
    return list(
        harness.wait_for(
            lambda: _events(running, execution_id),
            lambda evs: any(e.task_id is None and e.event_type == "COMPLETE" for e in evs),
            timeout=60,
        )
    )


def test_the_example_run_reports_its_events_rows_and_bytes(running, tenant, sales_db, warehouse_db):
    table = f"lineage_{uuid.uuid4().hex[:6]}.daily_transactions"
    pipeline = create_active(tenant, example("lineage-example", table))
    done = run_to_end(tenant, pipeline["pipelineId"])
    assert done["status"] == "COMPLETED", done
    execution_id, tenant_id = done["executionId"], tenant.headers["X-Tenant-ID"]

    events = _dag_complete(running, execution_id)
    if os.environ.get("LINEAGE_CAPTURE"):  # real events, for reading (and for the bench's shapes)
        with open(os.environ["LINEAGE_CAPTURE"], "w") as f:
            json.dump([json.loads(e.payload) for e in events], f, indent=1)
    assert {e.tenant_id for e in events} == {tenant_id} and {e.pipeline_id for e in events} == {pipeline["pipelineId"]}
    dag_events = sorted(e.event_type for e in events if e.task_id is None)
    assert dag_events == ["COMPLETE", "START"], dag_events
    assert all(e.job_name == f"{tenant_id}.lineage-example" for e in events if e.task_id is None)
    by_task: dict[str, set[str]] = {}
    for e in events:
        if e.task_id is not None:
            assert e.job_name == f"{tenant_id}.lineage-example.{e.task_id}"
            by_task.setdefault(e.task_id, set()).add(e.event_type)
    succeeded = {t["taskId"] for t in done["tasks"] if t["state"] == "success"}
    assert {"sources.raw_transactions", "sources.products", "sinks.daily_transactions"} <= succeeded
    for task in succeeded:
        assert {"START", "COMPLETE"} <= by_task.get(task, set()), (task, by_task)
    # Stored once each: the dedup key of every stored event is distinct (the unique index holds it anyway).
    assert len({e.dedup_key for e in events}) == len(events)

    # Rows: the sources staged what the warehouse query selects; the sink landed what the table holds.
    params = {"start": "2026-02-01", "end": "2026-02-12"}
    staged = (
        query(
            sales_db,
            "SELECT count(*) FROM raw_transactions WHERE created_at >= %s AND created_at < %s",
            params["start"],
            params["end"],
        )[0][0]
        + query(sales_db, "SELECT count(*) FROM products")[0][0]
    )
    landed = query(warehouse_db, f"SELECT count(*) FROM {table}")[0][0]
    assert landed > 0
    metrics = harness.wait_for(
        lambda: _execution(tenant, execution_id)["metrics"], lambda m: m["rowsWritten"] is not None, timeout=30
    )
    assert (metrics["rowsProcessed"], metrics["rowsWritten"]) == (staged, landed), metrics
    assert metrics["bytesProcessed"] and metrics["bytesProcessed"] > 0, metrics

    # The datasets of the sink task's COMPLETE: the warehouse table named the OpenLineage way, with its rows.
    (sink_done,) = [e.id for e in events if e.task_id == "sinks.daily_transactions" and e.event_type == "COMPLETE"]
    outputs = [d for d in _datasets(running, execution_id) if d.event_id == sink_done and d.direction == "output"]
    assert [(d.namespace, d.name, d.rows) for d in outputs] == [
        ("postgres://127.0.0.1:5432", f"{warehouse_db}.{table}", landed)
    ], outputs
    inputs = {(d.namespace, d.name) for d in _datasets(running, execution_id) if d.direction == "input"}
    assert ("postgres://127.0.0.1:5432", f"{sales_db}.public.raw_transactions") in inputs, inputs

    # Another tenant's pipeline of the same name: none of these events is stored under it.
    other = running.client(tenant="t" + uuid.uuid4().hex[:10])
    assert other.get(f"/v1/pipelines/executions/{execution_id}").status_code == 404
    with running.app.state.sessions() as s:
        theirs = s.scalars(select(LineageEvent.id).where(LineageEvent.tenant_id == other.headers["X-Tenant-ID"]))
        assert list(theirs) == []


def test_a_wrong_key_is_refused_by_the_running_service(running):
    event = {"eventTime": "2026-01-01T00:00:00Z", "producer": "x", "eventType": "START",
             "run": {"runId": str(uuid.uuid4())}, "job": {"namespace": "n", "name": "j"}}  # fmt: skip
    resp = httpx.post(running.url + "/api/v1/lineage", json=event, headers={"Authorization": "Bearer wrong"})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized", resp.text


class _Receiver(BaseHTTPRequestHandler):
    got: list[tuple[str, dict[str, str], bytes]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.got.append((self.path, dict(self.headers), body))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def second_receiver() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    """A second OpenLineage backend: a tiny HTTP server recording what it is posted."""
    got: list[tuple[str, dict[str, str], bytes]] = []
    handler = type("Handler", (_Receiver,), {"got": got})
    server = ThreadingHTTPServer(("127.0.0.1", harness.free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", got
    server.shutdown()
    server.server_close()


def test_every_event_is_forwarded_unchanged_to_a_second_receiver(running, tenant, second_receiver):
    url, got = second_receiver
    settings = running.settings
    settings.openlineage_forward_url, settings.openlineage_forward_api_key = url, "fwd-key-e2e"
    try:
        table = f"lineage_{uuid.uuid4().hex[:6]}.daily_transactions"
        pipeline = create_active(tenant, example("lineage-forward", table))
        done = run_to_end(tenant, pipeline["pipelineId"])
        assert done["status"] == "COMPLETED", done
        stored = _dag_complete(running, done["executionId"])

        def forwarded() -> list[bytes]:
            return [body for _, _, body in got if done["executionId"].encode() in body]

        bodies = harness.wait_for(forwarded, lambda b: len(b) >= len(stored), timeout=60)
    finally:
        settings.openlineage_forward_url, settings.openlineage_forward_api_key = None, None
    assert sorted(bodies) == sorted(e.payload.encode() for e in stored)  # the same events, byte for byte
    mine = [(path, headers) for path, headers, body in got if done["executionId"].encode() in body]
    assert {path for path, _ in mine} == {"/api/v1/lineage"}
    assert {h.get("Authorization") for _, h in mine} == {"Bearer fwd-key-e2e"}
    assert {h.get("Content-Type") for _, h in mine} == {"application/json"}
    with running.app.state.sessions() as s:
        pending = s.scalars(
            select(LineageEvent.id).where(
                LineageEvent.execution_id == done["executionId"], LineageEvent.forward_pending.is_(True)
            )
        )
        assert list(pending) == []
