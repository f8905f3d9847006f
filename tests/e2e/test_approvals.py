"""Approval gates through a real Airflow (providers-standard HITL tasks): a gated run waits (the workflow status
shows the gate, the execution RUNNING with waitingFor), a viewer's signal is refused, an admin's approval
completes it, a second signal is a conflict; a rejected gate fails the run with the reason; gates that expire
decide as their onExpiry says (approve: the run goes on; reject: it fails, "expired")."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.conftest import TERMINAL, create_active, example

pytestmark = pytest.mark.e2e


def execute(api: httpx.Client, pipeline_id: str) -> str:
    resp = api.post(f"/v1/pipelines/{pipeline_id}/execute", json={})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["executionId"])


def status(api: httpx.Client, workflow_id: str) -> dict[str, Any]:
    resp = api.get(f"/v1/pipelines/workflows/{workflow_id}/status")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def wait_gate(api: httpx.Client, workflow_id: str, gate: str, timeout: float = 180) -> dict[str, Any]:
    got = harness.wait_for(
        lambda: status(api, workflow_id), lambda s: s["waitingFor"] == gate or s["status"] in TERMINAL, timeout, 1.0
    )
    assert got["waitingFor"] == gate, got
    return dict(got)


def wait_end(api: httpx.Client, workflow_id: str, timeout: float = 180) -> dict[str, Any]:
    got = harness.wait_for(
        lambda: api.get(f"/v1/pipelines/executions/{workflow_id}").json(),
        lambda e: e["status"] in TERMINAL,
        timeout,
        1.0,
    )
    return dict(got)


def signal(api: httpx.Client, workflow_id: str, approved: bool, **data: Any) -> httpx.Response:
    body = {"signalName": "approval", "data": {"approved": approved, **data}}
    return api.post(f"/v1/pipelines/workflows/{workflow_id}/signal", json=body)


def test_approve_reject_and_expire(tenant: httpx.Client, running: harness.Running) -> None:
    suffix = uuid.uuid4().hex[:6]
    gate = {"name": "steward_review", "before": ["daily_transactions"], "approverRoles": ["admin"], "quorum": 1}
    gated = create_active(tenant, example(f"gated-{suffix}", f"qa.gated_{suffix}", approvals=[gate]))
    expiring = [
        {"name": "auto_ok", "before": ["enrich_with_products"], "expiresAfterSeconds": 5, "onExpiry": "approve"},
        {"name": "auto_no", "before": ["daily_transactions"], "expiresAfterSeconds": 5, "onExpiry": "reject"},
    ]
    expires = create_active(tenant, example(f"expiring-{suffix}", f"qa.expiring_{suffix}", approvals=expiring))
    expiring_run = execute(tenant, expires["pipelineId"])  # waits in parallel with the gated runs below

    # A gated run waits; the status names the gate, who may answer, the quorum.
    approved_run = execute(tenant, gated["pipelineId"])
    waiting = wait_gate(tenant, approved_run, "steward_review")
    (shown,) = waiting["gates"]
    assert (shown["state"], shown["approverRoles"], shown["quorum"], shown["answers"]) == ("WAITING", ["admin"], 1, [])
    execution = tenant.get(f"/v1/pipelines/executions/{approved_run}").json()
    assert (execution["status"], execution["waitingFor"]) == ("RUNNING", "steward_review"), execution
    tenant_id = tenant.headers["X-Tenant-ID"]
    viewer = running.client(tenant=tenant_id, roles=("viewer",), subject="vera")
    assert signal(viewer, approved_run, True).status_code == 403
    admin = running.client(tenant=tenant_id, roles=("admin",), subject="ada")
    ok = signal(admin, approved_run, True, approvedBy="data-steward@acme.com", reason="reviewed")
    assert ok.status_code == 200, ok.text
    assert ok.json()["gates"][0]["state"] == "APPROVED"
    assert ok.json()["gates"][0]["answers"][0]["approver"] == "ada"
    assert signal(tenant, approved_run, True).status_code == 409  # decided
    done = wait_end(tenant, approved_run)
    assert done["status"] == "COMPLETED", done
    assert done["waitingFor"] is None

    # A rejection fails the run with the reason.
    rejected_run = execute(tenant, gated["pipelineId"])
    wait_gate(tenant, rejected_run, "steward_review")
    no = signal(admin, rejected_run, False, reason="totals do not match the ledger")
    assert no.status_code == 200, no.text
    failed = wait_end(tenant, rejected_run)
    assert failed["status"] == "FAILED", failed
    assert "totals do not match the ledger" in (failed["errorMessage"] or ""), failed
    assert "approvals.steward_review" in failed["errorMessage"], failed

    # Expired gates: the first approves by itself (the transformation ran), the second rejects: FAILED, expired.
    ended = wait_end(tenant, expiring_run, timeout=240)
    assert ended["status"] == "FAILED", ended
    assert "approval gate 'auto_no' expired" in (ended["errorMessage"] or ""), ended
    tasks = {t["taskId"]: t["state"] for t in ended["tasks"]}
    assert tasks["approvals.auto_ok"] == "success" and tasks["transformations.enrich_with_products"] == "success"
    assert tasks["approvals.auto_no"] == "failed" and tasks["sinks.daily_transactions"] == "upstream_failed"
    gates = {g["name"]: g["state"] for g in status(tenant, expiring_run)["gates"]}
    assert gates == {"auto_ok": "EXPIRED", "auto_no": "EXPIRED"}

    # Another tenant: no such workflow.
    stranger = running.client(tenant="t" + uuid.uuid4().hex[:10])
    assert stranger.get(f"/v1/pipelines/workflows/{approved_run}/status").status_code == 404
