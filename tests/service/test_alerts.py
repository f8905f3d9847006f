"""Alerts: raised by the service (run failed, warn checks, duration anomaly, SLA, budgets), one unresolved per
condition, resolved when the condition clears; listed with filters and pages, acknowledged by editors and
admins (audit-logged), invisible to other tenants."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from service.audit.models import AuditEntry
from service.config import RateCard
from service.db import utcnow
from service.executions import events
from service.executions.models import Execution
from service.monitoring import repository
from service.monitoring import service as alerts
from service.monitoring.models import Alert
from service.workers import reconcile_step
from tests.service.fake_airflow import task_ids
from tests.service.helpers import EXAMPLE, Api, Service, example, expect_error

ALERTS = "/v1/pipelines/monitoring/alerts"
TASKS = task_ids(EXAMPLE["definition"])


@pytest.fixture(autouse=True)
def clean(svc: Service) -> None:
    """The PostgreSQL database is shared by the module: no webhook, budget or alert of an earlier test."""
    svc.settings.status_max_age_seconds = 0
    svc.settings.status_cache_seconds = 0
    with svc.app.state.engine.begin() as conn:
        for table in ("alert_deliveries", "alert_webhooks", "alerts", "budgets"):
            conn.execute(text(f"DELETE FROM {table}"))


def run(svc: Service, api: Api, pipeline: dict[str, Any], state: str, tasks: dict[str, str | None]) -> str:
    """Execute the pipeline, have the fake Airflow end the run in `state`, reconcile: the execution id."""
    execution = api.execute(pipeline["pipelineId"])
    svc.dispatch()
    svc.fake.set_run(execution["dagId"], execution["executionId"], state, tasks)
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)
    return str(execution["executionId"])


def fail(svc: Service, api: Api, pipeline: dict[str, Any]) -> str:
    tasks: dict[str, str | None] = dict.fromkeys(TASKS[:5], "success")
    tasks["sinks.daily_transactions"] = "failed"
    return run(svc, api, pipeline, "failed", tasks)


def succeed(svc: Service, api: Api, pipeline: dict[str, Any]) -> str:
    return run(svc, api, pipeline, "success", dict.fromkeys(TASKS, "success"))


def listed(api: Api, **params: Any) -> list[dict[str, Any]]:
    resp = api.get(ALERTS, params=params)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["items"])


def add_execution(
    svc: Service, pipeline: dict[str, Any], *, status: str, seconds: float, ago: timedelta, **fields: Any
) -> Execution:
    """A finished execution row as sync leaves it (`ago` before now), not yet passed to the hooks."""
    finished = utcnow() - ago
    ex = Execution(
        id="exec-" + uuid.uuid4().hex[:24],
        tenant_id="acme",
        pipeline_id=pipeline["pipelineId"],
        pipeline_revision=1,
        dag_id=pipeline["dagId"],
        status=status,
        parameters={},
        submitted=True,
        progress=fields.pop("progress", {}),
        submitted_at=finished - timedelta(seconds=seconds + 1),
        started_at=finished - timedelta(seconds=seconds),
        finished_at=finished,
        **fields,
    )
    with svc.app.state.sessions.begin() as s:
        s.add(ex)
    return ex


def finish(svc: Service, ex: Execution, previous: str = "RUNNING") -> None:
    """What sync does when it sees the run end: the hooks, in a transaction."""
    with svc.app.state.sessions.begin() as s:
        events.finished(s, s.merge(ex), previous)


# -- run failed -------------------------------------------------------------------------------------------
def test_a_failed_run_raises_one_open_critical_alert(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    first = fail(svc, acme, active)
    fail(svc, acme, active)  # the same condition again: still one alert
    items = listed(acme)
    assert len(items) == 1, items
    alert = items[0]
    assert (alert["type"], alert["severity"], alert["status"]) == ("RUN_FAILED", "CRITICAL", "OPEN")
    assert (alert["pipelineId"], alert["executionId"]) == (active["pipelineId"], first)
    assert "sinks.daily_transactions" in alert["message"]
    assert alert["acknowledgedBy"] is None and alert["resolvedAt"] is None
    assert acme.get(f"{ALERTS}/{alert['alertId']}").json() == alert


def test_the_next_successful_run_resolves_it_and_a_new_failure_raises_a_new_one(
    svc: Service, acme: Api, active: dict[str, Any]
) -> None:
    fail(svc, acme, active)
    succeed(svc, acme, active)
    [resolved] = listed(acme)
    assert resolved["status"] == "RESOLVED" and resolved["resolvedAt"] is not None
    fail(svc, acme, active)
    statuses = sorted(a["status"] for a in listed(acme))
    assert statuses == ["OPEN", "RESOLVED"]


def test_a_duplicate_raise_never_breaks_the_transaction_it_rides_in(
    svc: Service, active: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs: dict[str, Any] = {
        "tenant_id": "acme",
        "alert_type": "RUN_FAILED",
        "condition_key": "RUN_FAILED:x",
        "severity": "CRITICAL",
        "message": "m",
    }
    with svc.app.state.sessions.begin() as s:
        assert alerts.raise_alert(s, **kwargs) is not None
        assert alerts.raise_alert(s, **kwargs) is None
    # A concurrent raise whose check saw nothing: the partial unique index refuses the insert in its savepoint,
    # and the transaction it rides in goes on.
    monkeypatch.setattr(repository, "open_alert", lambda *_: None)
    with svc.app.state.sessions.begin() as s:
        assert alerts.raise_alert(s, **kwargs) is None
        s.add(Execution(**_row(active)))
    with svc.app.state.sessions() as s:
        assert len(s.scalars(select(Alert).where(Alert.condition_key == "RUN_FAILED:x")).all()) == 1
        assert s.get(Execution, "exec-after-duplicate") is not None


def _row(pipeline: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "exec-after-duplicate",
        "tenant_id": "acme",
        "pipeline_id": pipeline["pipelineId"],
        "pipeline_revision": 1,
        "dag_id": pipeline["dagId"],
        "status": "QUEUED",
        "parameters": {},
    }


# -- quality, duration -------------------------------------------------------------------------------------
def test_a_failed_warn_check_raises_a_quality_warning_resolved_by_a_clean_run(
    svc: Service, acme: Api, active: dict[str, Any]
) -> None:
    checks = [
        {"name": "amount_positive", "severity": "warn", "success": False},
        {"name": "not_null", "severity": "error", "success": True},
    ]
    ex = add_execution(svc, active, status="COMPLETED", seconds=60, ago=timedelta(minutes=5), quality_results=checks)
    finish(svc, ex)
    [alert] = listed(acme, type="QUALITY_WARNING")
    assert (alert["severity"], alert["status"], alert["executionId"]) == ("WARNING", "OPEN", ex.id)
    assert "amount_positive" in alert["message"]
    failed_error_only = [{"name": "not_null", "severity": "error", "success": False}]
    finish(
        svc,
        add_execution(
            svc, active, status="FAILED", seconds=60, ago=timedelta(minutes=4), quality_results=failed_error_only
        ),
    )
    assert listed(acme, type="QUALITY_WARNING")[0]["status"] == "OPEN"  # a failed run is no all-clear
    passed = [{"name": "amount_positive", "severity": "warn", "success": True}]
    finish(
        svc,
        add_execution(svc, active, status="COMPLETED", seconds=60, ago=timedelta(minutes=3), quality_results=passed),
    )
    assert listed(acme, type="QUALITY_WARNING")[0]["status"] == "RESOLVED"


def test_anomaly_bound_is_median_plus_three_mad_with_a_floor() -> None:
    assert alerts.anomaly_bound([60.0] * 4) is None  # fewer than 5 runs: no judgement
    assert alerts.anomaly_bound([50, 55, 60, 65, 70]) == 60 + 3 * 5
    assert alerts.anomaly_bound([60.0] * 5) == pytest.approx(60 + 3 * 3.0)  # MAD 0: 5 % of the median


def test_a_run_much_slower_than_its_history_raises_a_duration_anomaly(
    svc: Service, acme: Api, active: dict[str, Any]
) -> None:
    for i, seconds in enumerate([58, 60, 61, 59, 62, 60]):
        finish(svc, add_execution(svc, active, status="COMPLETED", seconds=seconds, ago=timedelta(hours=10 - i)))
    assert listed(acme) == []  # within the bound each time (or too little history)
    slow = add_execution(svc, active, status="COMPLETED", seconds=300, ago=timedelta(hours=2))
    finish(svc, slow)
    [alert] = listed(acme, type="DURATION_ANOMALY")
    assert (alert["severity"], alert["status"], alert["executionId"]) == ("WARNING", "OPEN", slow.id)
    assert "300.0 s" in alert["message"]
    finish(svc, add_execution(svc, active, status="COMPLETED", seconds=61, ago=timedelta(hours=1)))
    assert listed(acme, type="DURATION_ANOMALY")[0]["status"] == "RESOLVED"


# -- SLA, budgets ------------------------------------------------------------------------------------------
def test_an_unfinished_run_past_its_sla_raises_sla_missed_until_it_finishes(svc: Service, acme: Api) -> None:
    body = example("sla-pipe")
    body["definition"]["orchestration"]["sla_seconds"] = 600
    created = acme.create_pipeline(body)
    svc.publish()
    execution = acme.execute(created["pipelineId"])
    svc.dispatch()
    with svc.app.state.sessions.begin() as s:
        assert alerts.sla_step(s, utcnow() + timedelta(seconds=599)) == 0
    with svc.app.state.sessions.begin() as s:
        assert alerts.sla_step(s, utcnow() + timedelta(seconds=601)) == 1
    with svc.app.state.sessions.begin() as s:
        assert alerts.sla_step(s, utcnow() + timedelta(seconds=700)) == 0  # deduplicated
    [alert] = listed(acme, type="SLA_MISSED")
    assert (alert["severity"], alert["executionId"]) == ("CRITICAL", execution["executionId"])
    svc.fake.set_run(execution["dagId"], execution["executionId"], "success", dict.fromkeys(TASKS, "success"))
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)
    assert listed(acme, type="SLA_MISSED")[0]["status"] == "RESOLVED"


def test_budgets_at_80_and_100_percent_raise_and_resolve_when_raised_or_removed(
    svc: Service, acme: Api, active: dict[str, Any]
) -> None:
    rates = RateCard(compute_usd_per_task_second=0.001)
    task = {"task_id": "t", "state": "success", "duration_ms": 1_000_000}  # 1000 s: 1 USD
    add_execution(svc, active, status="COMPLETED", seconds=10, ago=timedelta(seconds=1), progress={"tasks": [task]})

    def check() -> None:
        with svc.app.state.sessions.begin() as s:
            alerts.budget_step(s, rates)

    assert acme.put("/v1/cost/budget", json={"monthlyUsd": 1.2}).status_code == 200
    check()
    assert [(a["type"], a["severity"], a["status"]) for a in listed(acme)] == [("BUDGET_80", "WARNING", "OPEN")]
    pipe = f"/v1/pipelines/{active['pipelineId']}/budget"
    assert acme.put(pipe, json={"monthlyUsd": 0.5}).status_code == 200
    check()
    check()  # deduplicated
    pipeline_alerts = listed(acme, pipelineId=active["pipelineId"])
    assert sorted((a["type"], a["severity"]) for a in pipeline_alerts) == [
        ("BUDGET_100", "CRITICAL"),
        ("BUDGET_80", "WARNING"),
    ]
    assert acme.put(pipe, json={"monthlyUsd": None}).status_code == 200  # removed
    assert acme.put("/v1/cost/budget", json={"monthlyUsd": 10}).status_code == 200  # raised above the spend
    check()
    assert {a["status"] for a in listed(acme)} == {"RESOLVED"}
    assert len(listed(acme)) == 3


def test_a_new_month_resolves_last_months_budget_alerts(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    assert acme.put("/v1/cost/budget", json={"monthlyUsd": 0}).status_code == 200
    rates = RateCard()
    with svc.app.state.sessions.begin() as s:
        alerts.budget_step(s, rates)
    assert len(listed(acme, status="OPEN")) == 2
    with svc.app.state.sessions.begin() as s:
        alerts.budget_step(s, rates, utcnow() + timedelta(days=32))
    keys = {a["status"]: a for a in listed(acme)}
    assert set(keys) == {"OPEN", "RESOLVED"}
    assert len(listed(acme, status="RESOLVED")) == 2 and len(listed(acme, status="OPEN")) == 2  # the new month's


# -- the API ----------------------------------------------------------------------------------------------
def test_filters_and_pages(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    fail(svc, acme, active)
    checks = [{"name": "w", "severity": "warn", "success": False}]
    finish(svc, add_execution(svc, active, status="COMPLETED", seconds=5, ago=timedelta(0), quality_results=checks))
    # The completed run resolved RUN_FAILED; QUALITY_WARNING is open.
    assert [a["type"] for a in listed(acme, severity="WARNING")] == ["QUALITY_WARNING"]
    assert [a["type"] for a in listed(acme, status="RESOLVED")] == ["RUN_FAILED"]
    assert [a["type"] for a in listed(acme, type="RUN_FAILED", status="OPEN")] == []
    assert len(listed(acme, pipelineId=active["pipelineId"])) == 2
    assert listed(acme, pipelineId="pl-unknown") == []
    page = acme.get(ALERTS, params={"size": 1, "page": 1}).json()
    assert (page["total"], page["page"], page["size"], len(page["items"])) == (2, 1, 1, 1)
    assert page["items"][0]["type"] == "RUN_FAILED"  # newest first: the quality warning is page 0


@pytest.mark.parametrize(
    ("param", "value"),
    [("severity", "LOUD"), ("status", "open"), ("type", "DISK_FULL"), ("size", "0"), ("page", "-1")],
)
def test_bad_filters_are_400_naming_the_parameter(acme: Api, param: str, value: str) -> None:
    expect_error(acme.get(ALERTS, params={param: value}), 400, "validation_error", param)


def test_acknowledge_records_who_and_is_audited(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    fail(svc, acme, active)
    [alert] = listed(acme)
    editor = svc.api("acme", ("editor",))
    token = svc.token("acme", ("editor",), subject="erin")
    editor.headers["Authorization"] = f"Bearer {token}"
    resp = editor.post(f"{ALERTS}/{alert['alertId']}/acknowledge", json={"note": "looking into it"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["status"], body["acknowledgedBy"], body["acknowledgedNote"]) == (
        "ACKNOWLEDGED",
        "erin",
        "looking into it",
    )
    assert body["acknowledgedAt"] is not None
    with svc.app.state.sessions() as s:
        [entry] = s.scalars(
            select(AuditEntry).where(AuditEntry.resource_type == "alert", AuditEntry.resource_id == alert["alertId"])
        ).all()
    assert (entry.actor, entry.action, entry.tenant_id) == ("erin", "acknowledge", "acme")
    assert entry.after is not None and entry.after["note"] == "looking into it"
    # Still the one unresolved alert of the condition: another failure does not raise a second.
    fail(svc, acme, active)
    assert [a["status"] for a in listed(acme)] == ["ACKNOWLEDGED"]
    succeed(svc, acme, active)
    assert listed(acme)[0]["status"] == "RESOLVED"


def test_a_viewer_reads_but_cannot_acknowledge(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    fail(svc, acme, active)
    viewer = svc.api("acme", ("viewer",))
    [alert] = listed(viewer)
    expect_error(viewer.post(f"{ALERTS}/{alert['alertId']}/acknowledge", json={}), 403, "forbidden")
    assert listed(acme)[0]["status"] == "OPEN"


def test_acknowledging_a_resolved_alert_is_409(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    fail(svc, acme, active)
    succeed(svc, acme, active)
    [alert] = listed(acme)
    expect_error(acme.post(f"{ALERTS}/{alert['alertId']}/acknowledge"), 409, "conflict")


def test_acknowledge_body_is_checked(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    fail(svc, acme, active)
    [alert] = listed(acme)
    url = f"{ALERTS}/{alert['alertId']}/acknowledge"
    expect_error(acme.post(url, json={"note": "x" * 2001}), 400, "validation_error", "note")
    expect_error(acme.post(url, json={"notes": "x"}), 400, "validation_error", "notes")
    expect_error(acme.post(url, json={"note": 5}), 400, "validation_error", "note")


def test_another_tenant_sees_no_alert(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    fail(svc, acme, active)
    [alert] = listed(acme)
    other = svc.api("globex")
    assert other.get(ALERTS).json()["items"] == []
    assert other.get(ALERTS, params={"pipelineId": active["pipelineId"]}).json()["total"] == 0
    expect_error(other.get(f"{ALERTS}/{alert['alertId']}"), 404, "not_found")
    expect_error(other.post(f"{ALERTS}/{alert['alertId']}/acknowledge", json={}), 404, "not_found")
    expect_error(acme.get(f"{ALERTS}/alert-missing"), 404, "not_found")
    assert listed(acme)[0]["status"] == "OPEN"


def test_odd_ids_are_4xx_never_500(acme: Api) -> None:
    for value in ("a\x00b", "x" * 500, "ü%2F.."):
        assert acme.get(ALERTS, params={"pipelineId": value}).status_code in (200, 400), value
    for path in ("a%00b", "x" * 300, "%F0%9F%98%80"):
        assert acme.get(f"{ALERTS}/{path}").status_code in (400, 404), path
        assert acme.post(f"{ALERTS}/{path}/acknowledge", json={}).status_code in (400, 404), path
        assert acme.get(f"/v1/pipelines/monitoring/webhooks/{path}").status_code in (400, 404), path
