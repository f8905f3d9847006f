"""Schedules API against the fake Airflow: validation naming the field, tenant scoping, the DAG file carrying
the enabled schedules, the trigger endpoint, and scheduled runs recorded as executions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.workers import ClearedRunsWatch
from tests.service.fake_airflow import read_config
from tests.service.helpers import Api, Service, expect_error

URL = "/v1/pipelines/schedules"


def schedule_body(pipeline_id: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pipelineId": pipeline_id,
        "cronExpression": "0 6 * * *",
        "timezone": "America/New_York",
        "parameters": {"start_date": "2026-03-01"},
        "enabled": True,
    }
    body.update(fields)
    return body


def create(api: Api, pipeline_id: str, **fields: Any) -> dict[str, Any]:
    resp = api.post(URL, json=schedule_body(pipeline_id, **fields))
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def dag_schedules(svc: Service, pipeline: dict[str, Any]) -> list[dict[str, Any]]:
    svc.publish()
    return list(read_config(svc.dag_file(pipeline["dagId"])).get("schedules") or [])


def test_create_describes_the_schedule_and_renders_it_into_the_dag(svc: Service, acme: Api, active: dict) -> None:
    created = create(acme, active["pipelineId"])
    assert created["scheduleId"].startswith("sch-")
    assert created["description"] == "At 06:00 (America/New_York)"
    utc = datetime.fromisoformat(created["nextRunAt"].replace("Z", "+00:00"))
    local = datetime.fromisoformat(created["nextRunAtLocal"])
    assert utc == local and utc > datetime.now(UTC)
    assert (local.hour, local.minute) == (6, 0)
    assert local.utcoffset() in {timedelta(hours=-5), timedelta(hours=-4)}  # EST or EDT
    # The pipeline is republished with the schedule in its DAG file.
    assert acme.pipeline(active["pipelineId"])["status"] == "CREATED"
    [entry] = dag_schedules(svc, active)
    assert acme.pipeline(active["pipelineId"])["status"] == "ACTIVE"
    assert entry["id"] == created["scheduleId"]
    assert (entry["cron"], entry["timezone"], entry["parameters"]) == (
        "0 6 * * *",
        "America/New_York",
        {"start_date": "2026-03-01"},
    )
    assert acme.get(f"{URL}/{created['scheduleId']}").json() == created


def test_several_schedules_disabled_ones_stay_out_of_the_dag(svc: Service, acme: Api, active: dict) -> None:
    a = create(acme, active["pipelineId"], cronExpression="*/5 * * * *", timezone="UTC")
    b = create(acme, active["pipelineId"], cronExpression="@daily", timezone="Europe/Berlin", parameters={})
    off = create(acme, active["pipelineId"], enabled=False)
    assert b["cronExpression"] == "0 0 * * *"
    assert off["nextRunAt"] is None and off["nextRunAtLocal"] is None
    assert [e["id"] for e in dag_schedules(svc, active)] == [a["scheduleId"], b["scheduleId"]]
    # Disabling the others: none enabled, no schedule in the DAG (manual runs only).
    for s in (a, b):
        resp = acme.put(f"{URL}/{s['scheduleId']}", json=schedule_body(active["pipelineId"], enabled=False))
        assert resp.status_code == 200, resp.text
    assert dag_schedules(svc, active) == []
    listed = acme.get(URL, params={"pipelineId": active["pipelineId"], "size": 2}).json()
    assert (listed["total"], len(listed["items"]), listed["page"], listed["size"]) == (3, 2, 0, 2)
    assert acme.delete(f"{URL}/{off['scheduleId']}").status_code == 204
    assert acme.get(f"{URL}/{off['scheduleId']}").status_code == 404
    assert acme.get(URL, params={"pipelineId": active["pipelineId"]}).json()["total"] == 2


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"cronExpression": "61 * * * *"}, "cronExpression"),
        ({"cronExpression": "* * * * * *"}, "cronExpression"),
        ({"cronExpression": "every day"}, "cronExpression"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "localtime"}, "timezone"),
        ({"parameters": {"lookback_days": 1}}, "parameters.lookback_days"),
        ({"parameters": {"start_date": "not-a-date"}}, "parameters.start_date"),
        ({"enabled": "sometimes"}, "enabled"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(acme: Api, active: dict, fields: dict, path: str) -> None:
    expect_error(acme.post(URL, json=schedule_body(active["pipelineId"], **fields)), 400, "validation_error", path)
    existing = create(acme, active["pipelineId"])
    resp = acme.put(f"{URL}/{existing['scheduleId']}", json=schedule_body(active["pipelineId"], **fields))
    expect_error(resp, 400, "validation_error", path)
    assert acme.get(f"{URL}/{existing['scheduleId']}").json() == existing  # nothing half-written


def test_every_problem_is_listed_at_once(acme: Api, active: dict) -> None:
    body = schedule_body(active["pipelineId"], cronExpression="bad", timezone="Nowhere/City", parameters={"x": 1})
    error = expect_error(acme.post(URL, json=body), 400, "validation_error")
    assert {d["path"] for d in error["details"]} == {"cronExpression", "timezone", "parameters.x"}
    assert acme.get(URL).json()["total"] == 0


def test_tenant_scoping_and_roles(svc: Service, acme: Api, active: dict) -> None:
    mine = create(acme, active["pipelineId"])
    other = svc.api("globex")
    sid = mine["scheduleId"]
    for method, url in (("GET", f"{URL}/{sid}"), ("DELETE", f"{URL}/{sid}"), ("POST", f"{URL}/{sid}/trigger")):
        expect_error(other.request(method, url), 404, "not_found")
    expect_error(other.put(f"{URL}/{sid}", json=schedule_body(active["pipelineId"])), 404, "not_found")
    expect_error(other.post(URL, json=schedule_body(active["pipelineId"])), 404, "not_found", "pipelineId")
    assert other.get(URL).json()["total"] == 0
    viewer = svc.api("acme", roles=("viewer",))
    assert viewer.get(f"{URL}/{sid}").status_code == 200
    expect_error(viewer.post(URL, json=schedule_body(active["pipelineId"])), 403, "forbidden")
    expect_error(viewer.post(f"{URL}/{sid}/trigger"), 403, "forbidden")
    expect_error(viewer.delete(f"{URL}/{sid}"), 403, "forbidden")
    resp = acme.put(f"{URL}/{sid}", json=schedule_body("pl-elsewhere"))
    expect_error(resp, 400, "validation_error", "pipelineId")


def test_deleting_the_pipeline_deletes_its_schedules(acme: Api, active: dict) -> None:
    sid = create(acme, active["pipelineId"])["scheduleId"]
    assert acme.delete(f"/v1/pipelines/{active['pipelineId']}").status_code == 204
    assert acme.get(f"{URL}/{sid}").status_code == 404


def test_trigger_is_an_ordinary_execution_with_the_schedules_parameters(svc: Service, acme: Api, active: dict) -> None:
    sid = create(acme, active["pipelineId"], parameters={"start_date": "2026-02-05"})["scheduleId"]
    svc.publish()
    resp = acme.post(f"{URL}/{sid}/trigger")
    assert resp.status_code == 202, resp.text
    ex = resp.json()
    assert ex["scheduleId"] == sid and ex["status"] == "QUEUED"
    assert ex["parameters"] == {"start_date": "2026-02-05", "end_date": "2026-02-12"}
    svc.dispatch()
    run = svc.fake.runs[(active["dagId"], ex["executionId"])]
    assert run["conf"] == ex["parameters"]
    assert acme.execution(ex["executionId"])["scheduleId"] == sid
    listed = acme.get("/v1/pipelines/executions", params={"scheduleId": sid}).json()
    assert [e["executionId"] for e in listed["items"]] == [ex["executionId"]]
    assert acme.post(f"/v1/pipelines/executions/{ex['executionId']}/cancel").status_code == 200
    plain = acme.execute(active["pipelineId"])
    assert plain["scheduleId"] is None


def test_scheduled_runs_become_executions(svc: Service, acme: Api, active: dict) -> None:
    """Runs Airflow's scheduler started (also while the service was down) are recorded once, with the
    schedule's parameters; manual runs made in Airflow are not executions of the service."""
    sid = create(acme, active["pipelineId"], parameters={"end_date": "2026-02-20"})["scheduleId"]
    svc.publish()
    dag_id = active["dagId"]
    run_id = f"scheduled__{sid}__2026-11-26T11:00:00+00:00"
    svc.fake.start_scheduled_run(dag_id, run_id)
    svc.fake.set_run(dag_id, run_id, "running", {"prepare_staging": "success"})
    manual = acme.post(f"/v1/airflow/dags/{dag_id}/trigger", json={"conf": {}})
    assert manual.status_code == 201, manual.text
    watch = ClearedRunsWatch(svc.app.state.sessions, svc.app.state.airflow)
    watch.step()
    watch.step()  # idempotent
    listed = acme.get("/v1/pipelines/executions", params={"pipelineId": active["pipelineId"]}).json()
    assert [e["executionId"] for e in listed["items"]] == [run_id]
    ex = acme.execution(run_id)
    assert ex["scheduleId"] == sid and ex["status"] == "RUNNING"
    assert ex["parameters"] == {"start_date": "2026-02-01", "end_date": "2026-02-20"}
    svc.fake.set_run(dag_id, run_id, "success")
    assert acme.get("/v1/pipelines/executions", params={"scheduleId": sid}).json()["total"] == 1
    # A run whose id Airflow made from the DAG's previous version: its logical date names the schedule.
    # A winter day of its own (the PostgreSQL database outlives a test session): 06:00 in New York is 11:00 UTC.
    day = f"{2030 + uuid.uuid4().int % 60}-01-{10 + uuid.uuid4().int % 18}"
    legacy = f"scheduled__{day}T11:00:00+00:00"
    svc.fake.start_scheduled_run(dag_id, legacy)
    svc.fake.runs[(dag_id, legacy)]["logical_date"] = f"{day}T11:00:00Z"  # 06:00 in New York
    ClearedRunsWatch(svc.app.state.sessions, svc.app.state.airflow).step()
    assert acme.execution(legacy)["scheduleId"] == sid
