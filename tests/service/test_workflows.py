"""Workflow Management over approval gates (Airflow HITL tasks, faked at the transport): the status shape,
the signal rules (roles 403, one answer per person 409, quorum of distinct approvers, a rejection decides at
once, a decided gate 409), the answer handed to Airflow (or to the outbox worker), waitingFor on the
execution, cancel, and another tenant's workflow a 404."""

from __future__ import annotations

from typing import Any

import pytest

from service.workers import approvals_step
from tests.service.helpers import Api, Service, example, expect_error

GATE = "approvals.steward_review"


def gated(**gate: Any) -> dict[str, Any]:
    body = example("gated-sales")
    body["definition"]["approvals"] = [
        {"name": "steward_review", "before": ["daily_transactions"], "approverRoles": ["admin", "editor"]} | gate
    ]
    return body


def person(svc: Service, subject: str, roles: tuple[str, ...] = ("admin",), tenant: str = "acme") -> Api:
    token = svc.token(tenant, roles, subject=subject)
    return Api(svc.client, tenant, {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant})


@pytest.fixture(autouse=True)
def fresh_reads(svc: Service) -> None:
    svc.settings.status_max_age_seconds = 0
    svc.settings.status_cache_seconds = 0


def waiting(svc: Service, acme: Api, **gate: Any) -> tuple[str, str]:
    """An execution of the gated pipeline whose gate task waits for input: (execution id, dag id)."""
    pipeline = acme.create_pipeline(gated(**gate))
    svc.publish()
    execution_id = acme.execute(pipeline["pipelineId"])["executionId"]
    svc.dispatch()
    dag_id = acme.execution(execution_id)["dagId"]
    svc.fake.wait_for_input(dag_id, execution_id, GATE)
    return execution_id, dag_id


def approve(api: Api, workflow_id: str, approved: bool = True, **data: Any) -> Any:
    body = {"signalName": "approval", "data": {"approved": approved, **data}}
    return api.post(f"/v1/pipelines/workflows/{workflow_id}/signal", json=body)


def test_status_shows_the_waiting_gate_and_the_execution_waits_for_it(svc: Service, acme: Api) -> None:
    wid, _ = waiting(svc, acme, quorum=2, expiresAfterSeconds=3600)
    status = acme.get(f"/v1/pipelines/workflows/{wid}/status")
    assert status.status_code == 200, status.text
    body = status.json()
    assert (body["workflowId"], body["status"], body["waitingFor"]) == (wid, "RUNNING", "steward_review")
    (gate,) = body["gates"]
    assert gate["state"] == "WAITING"
    assert (gate["approverRoles"], gate["quorum"], gate["approvals"], gate["answers"]) == (
        ["admin", "editor"],
        2,
        0,
        [],
    )
    assert gate["deadline"] is not None and gate["onExpiry"] == "reject"
    execution = acme.execution(wid)
    assert (execution["status"], execution["waitingFor"]) == ("RUNNING", "steward_review")


def test_quorum_needs_distinct_approvers_then_airflow_gets_the_answer(svc: Service, acme: Api) -> None:
    wid, dag_id = waiting(svc, acme, quorum=2)
    alice, bob = person(svc, "alice"), person(svc, "bob", ("editor",))
    first = approve(alice, wid, approvedBy="data-steward@acme.com", reason="looks right")
    assert first.status_code == 200, first.text
    gate = first.json()["gates"][0]
    assert (gate["state"], gate["approvals"]) == ("WAITING", 1)
    assert gate["answers"][0]["approver"] == "alice"
    assert gate["answers"][0]["approvedBy"] == "data-steward@acme.com"  # kept as a display note only
    expect_error(approve(alice, wid), 409, "conflict")  # one answer per person
    assert svc.fake.hitl[(dag_id, wid, GATE)]["response_received"] is False
    second = approve(bob, wid)
    assert second.status_code == 200, second.text
    assert second.json()["gates"][0]["state"] == "APPROVED"
    assert second.json()["gates"][0]["airflowAnswered"] is True
    answer = svc.fake.hitl[(dag_id, wid, GATE)]
    assert answer["chosen_options"] == ["Approve"]
    assert answer["params_input"]["approvers"] == "alice, bob"
    expect_error(approve(person(svc, "carol"), wid), 409, "conflict")  # decided (and no longer waiting)


def test_a_rejection_decides_at_once_with_its_reason(svc: Service, acme: Api) -> None:
    wid, dag_id = waiting(svc, acme, quorum=3)
    resp = approve(person(svc, "alice"), wid, approved=False, reason="numbers are off")
    assert resp.status_code == 200, resp.text
    gate = resp.json()["gates"][0]
    assert (gate["state"], gate["reason"]) == ("REJECTED", "numbers are off")
    detail = svc.fake.hitl[(dag_id, wid, GATE)]
    assert detail["chosen_options"] == ["Reject"] and detail["params_input"]["reason"] == "numbers are off"


def test_roles_outside_the_gates_are_refused(svc: Service, acme: Api) -> None:
    wid, _ = waiting(svc, acme, approverRoles=["admin"])
    expect_error(approve(person(svc, "ed", ("editor",)), wid), 403, "forbidden")
    expect_error(approve(person(svc, "vic", ("viewer",)), wid), 403, "forbidden")
    # a viewer reads the status
    assert person(svc, "vic", ("viewer",)).get(f"/v1/pipelines/workflows/{wid}/status").status_code == 200


def test_bad_signals_name_the_field(svc: Service, acme: Api) -> None:
    wid, _ = waiting(svc, acme)
    url = f"/v1/pipelines/workflows/{wid}/signal"
    bad = acme.post(url, json={"signalName": "resume", "data": {"approved": True}})
    expect_error(bad, 400, "validation_error", "signalName")
    expect_error(acme.post(url, json={"signalName": "approval", "data": {}}), 400, "validation_error", "data.approved")
    wrong_type = {"signalName": "approval", "data": {"approved": "yes"}}
    expect_error(acme.post(url, json=wrong_type), 400, "validation_error", "data.approved")
    expect_error(approve(acme, wid, gate="nope"), 400, "validation_error", "data.gate")


def test_no_gate_waiting_is_a_conflict(svc: Service, acme: Api) -> None:
    pipeline = acme.create_pipeline(gated())
    svc.publish()
    wid = acme.execute(pipeline["pipelineId"])["executionId"]
    svc.dispatch()
    expect_error(approve(acme, wid), 409, "conflict")
    status = acme.get(f"/v1/pipelines/workflows/{wid}/status").json()
    assert status["waitingFor"] is None and status["gates"][0]["state"] == "NOT_REACHED"


def test_airflow_not_ready_leaves_the_answer_to_the_worker(svc: Service, acme: Api) -> None:
    wid, dag_id = waiting(svc, acme)
    svc.fake.refuse_hitl = 1  # Airflow fails the first answer (HTTP 503)
    resp = approve(acme, wid)
    gate = resp.json()["gates"][0]
    assert (gate["state"], gate["airflowAnswered"]) == ("APPROVED", False)
    approvals_step(svc.app.state.sessions, svc.app.state.airflow)
    assert svc.fake.hitl[(dag_id, wid, GATE)]["chosen_options"] == ["Approve"]
    assert acme.get(f"/v1/pipelines/workflows/{wid}/status").json()["gates"][0]["airflowAnswered"] is True


def test_a_task_that_just_started_waiting_is_answered_later(svc: Service, acme: Api) -> None:
    wid, dag_id = waiting(svc, acme)
    svc.fake.wait_for_input(dag_id, wid, GATE, since_seconds=0)
    assert approve(acme, wid).json()["gates"][0]["airflowAnswered"] is False
    assert svc.fake.hitl[(dag_id, wid, GATE)]["response_received"] is False


def test_cancel_cancels_the_execution_and_is_audited(svc: Service, acme: Api) -> None:
    wid, _ = waiting(svc, acme)
    resp = acme.post(f"/v1/pipelines/workflows/{wid}/cancel")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "CANCELLED"
    assert acme.execution(wid)["status"] == "CANCELLED"
    expect_error(acme.post(f"/v1/pipelines/workflows/{wid}/cancel"), 409, "conflict")


def test_approvals_are_audited(svc: Service, acme: Api) -> None:
    from sqlalchemy import select

    from service.audit.models import AuditEntry

    wid, _ = waiting(svc, acme)
    approve(person(svc, "alice"), wid, reason="fine")
    with svc.app.state.sessions() as s:
        entries = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "approval", AuditEntry.resource_id == wid)
        ).all()
    assert [(e.actor, e.resource_id, e.details["decision"]) for e in entries] == [("alice", wid, "APPROVED")]


def test_another_tenants_workflow_is_not_found(svc: Service, acme: Api) -> None:
    wid, _ = waiting(svc, acme)
    other = svc.api("globex")
    for method, path, body in [
        ("GET", "status", None),
        ("POST", "signal", {"signalName": "approval", "data": {"approved": True}}),
        ("POST", "cancel", None),
    ]:
        resp = other.request(method, f"/v1/pipelines/workflows/{wid}/{path}", json=body)
        expect_error(resp, 404, "not_found")
    expect_error(acme.get("/v1/pipelines/workflows/nope/status"), 404, "not_found")
    assert acme.execution(wid)["status"] == "RUNNING"
