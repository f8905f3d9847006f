"""Alerts through a real Airflow: a run that divides by zero raises one OPEN RUN_FAILED alert, delivered signed
to a webhook receiver on this machine within seconds of Airflow marking the run failed; acknowledged through
the API (delivered again as alert.acknowledged), resolved by the next successful run of the fixed pipeline.
A viewer reads the alert but cannot acknowledge it; another tenant sees nothing."""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from service.monitoring.delivery import verify
from tests.e2e import harness
from tests.e2e.conftest import create_active, example, run_to_end

pytestmark = pytest.mark.e2e

ALERTS = "/v1/pipelines/monitoring/alerts"
SECRET = "e2e-webhook-secret-" + uuid.uuid4().hex
DIVIDE_BY_ZERO = (
    "SELECT id AS transaction_id, product_id, amount / (amount - amount) AS amount, created_at::date AS sale_date "
    "FROM raw_transactions WHERE amount > 0"
)


class Receiver:
    """A webhook receiver on 127.0.0.1 (allowed by the harness's network policy): what it got, and when."""

    def __init__(self) -> None:
        self.got: list[tuple[float, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.got.append((time.time(), dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self) -> list[str]:
        return [json.loads(body)["event"] for _, _, body in self.got]

    def wait(self, count: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.got) >= count, self.events()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.close()


def test_failed_run_alert_is_delivered_acknowledged_and_resolved(
    tenant: httpx.Client, running: harness.Running, receiver: Receiver
) -> None:
    tenant_id = tenant.headers["X-Tenant-ID"]
    hook = tenant.post("/v1/pipelines/monitoring/webhooks", json={"name": "e2e", "url": receiver.url, "secret": SECRET})
    assert hook.status_code == 201, hook.text
    assert SECRET not in hook.text

    body = example("alerting", "qa.alerting", quality_checks=[])
    good_transformations = copy.deepcopy(body["definition"]["transformations"])
    body["definition"]["transformations"][0]["sql"] = DIVIDE_BY_ZERO
    pipeline = create_active(tenant, body)
    pid = pipeline["pipelineId"]

    # Executed, then not polled: the reconciler alone must notice the failure.
    resp = tenant.post(f"/v1/pipelines/{pid}/execute", json={})
    assert resp.status_code == 202, resp.text
    eid = resp.json()["executionId"]
    receiver.wait(1)
    received_at, headers, raw = receiver.got[0]
    assert verify(SECRET, raw, headers["X-Pipeline-Signature"]), headers
    delivered = json.loads(raw)
    assert delivered["event"] == "alert.raised" and headers["X-Pipeline-Event"] == "alert.raised"
    assert (delivered["alert"]["type"], delivered["alert"]["executionId"]) == ("RUN_FAILED", eid)

    run = running.airflow().get(f"/dags/{pipeline['dagId']}/dagRuns/{eid}").json()
    assert run["state"] == "failed", run
    latency = received_at - datetime.fromisoformat(run["end_date"]).timestamp()
    print(f"\nalert delivery latency (Airflow run end_date -> receiver): {latency:.2f} s")
    assert latency < 5, latency

    execution = tenant.get(f"/v1/pipelines/executions/{eid}").json()
    assert execution["status"] == "FAILED" and "division by zero" in (execution["errorMessage"] or ""), execution
    items = tenant.get(ALERTS, params={"pipelineId": pid}).json()["items"]
    assert len(items) == 1, items
    alert = items[0]
    assert (alert["type"], alert["severity"], alert["status"]) == ("RUN_FAILED", "CRITICAL", "OPEN")

    viewer = running.client(tenant=tenant_id, roles=("viewer",), subject="vera")
    assert viewer.get(f"{ALERTS}/{alert['alertId']}").json()["status"] == "OPEN"
    assert viewer.post(f"{ALERTS}/{alert['alertId']}/acknowledge", json={"note": "no"}).status_code == 403
    other = running.client(tenant="t" + uuid.uuid4().hex[:10])
    assert other.get(ALERTS).json()["items"] == []
    assert other.get(f"{ALERTS}/{alert['alertId']}").status_code == 404

    acked = tenant.post(f"{ALERTS}/{alert['alertId']}/acknowledge", json={"note": "on it"})
    assert acked.status_code == 200, acked.text
    assert (acked.json()["status"], acked.json()["acknowledgedBy"], acked.json()["acknowledgedNote"]) == (
        "ACKNOWLEDGED",
        "tester",
        "on it",
    )
    receiver.wait(2, timeout=10)
    assert receiver.events()[:2] == ["alert.raised", "alert.acknowledged"]
    assert verify(SECRET, receiver.got[1][2], receiver.got[1][1]["X-Pipeline-Signature"])

    # The fixed definition runs to the end: the alert resolves, and the receiver hears of it.
    fixed = tenant.request(
        "PATCH",
        f"/v1/pipelines/{pid}",
        content=json.dumps({"definition": {"transformations": good_transformations}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert fixed.status_code == 200, fixed.text
    harness.wait_for(
        lambda: tenant.get(f"/v1/pipelines/{pid}").json(),
        lambda p: p["status"] == "ACTIVE" and p["deployedAt"] != pipeline["deployedAt"],
        120,
    )
    done = run_to_end(tenant, pid)
    assert done["status"] == "COMPLETED", done
    resolved = tenant.get(f"{ALERTS}/{alert['alertId']}").json()
    assert resolved["status"] == "RESOLVED" and resolved["resolvedAt"] is not None, resolved
    assert tenant.get(ALERTS, params={"status": "OPEN"}).json()["total"] == 0
    receiver.wait(3, timeout=10)
    assert receiver.events() == ["alert.raised", "alert.acknowledged", "alert.resolved"]
