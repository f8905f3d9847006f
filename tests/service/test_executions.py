"""Executions: accepted first (202 QUEUED), submitted by the dispatcher as an Airflow run whose run_id is the
execution id, then mapped from the fake's run and task-instance states."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from service.errors import AirflowUnavailable
from service.executions.models import Execution
from service.workers import ClearedRunsWatch, reconcile_step
from tests.service.fake_airflow import task_ids
from tests.service.helpers import EXAMPLE, Api, Service, example, expect_error

DEFAULTS = {"start_date": "2026-02-01", "end_date": "2026-02-12"}
TASKS = task_ids(EXAMPLE["definition"])
EXECUTIONS = "/v1/pipelines/executions"


@pytest.fixture(autouse=True)
def uncached(svc: Service) -> None:
    """Every read sees the fake's latest state: these tests move it between two reads."""
    svc.settings.status_max_age_seconds = 0
    svc.settings.status_cache_seconds = 0


@pytest.fixture
def submitted(svc: Service, acme: Api, active: dict[str, Any]) -> dict[str, Any]:
    """An execution of the active example pipeline that the dispatcher has handed to Airflow."""
    execution = acme.execute(active["pipelineId"])
    svc.dispatch()
    return execution


def advance(svc: Service, execution: dict[str, Any], state: str, tasks: dict[str, str | None]) -> None:
    svc.fake.set_run(execution["dagId"], execution["executionId"], state, tasks)


def test_execute_is_202_queued(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    resp = acme.post(f"/v1/pipelines/{active['pipelineId']}/execute", json={"parameters": {"start_date": "2026-03-01"}})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["executionId"].startswith("exec-")
    assert (body["status"], body["engine"], body["priority"]) == ("QUEUED", "airflow", "NORMAL")
    assert datetime.fromisoformat(body["submittedAt"]).tzinfo is not None
    assert body["parameters"] == {**DEFAULTS, "start_date": "2026-03-01"}
    assert (body["pipelineId"], body["pipelineRevision"], body["dagId"]) == (
        active["pipelineId"],
        1,
        active["dagId"],
    )
    assert body["errorMessage"] is None
    assert svc.fake.runs == {}  # submission is the dispatcher's job


def test_execute_without_a_body_uses_the_defaults(acme: Api, active: dict[str, Any]) -> None:
    resp = acme.post(f"/v1/pipelines/{active['pipelineId']}/execute")
    assert resp.status_code == 202, resp.text
    assert resp.json()["parameters"] == DEFAULTS


def test_dispatch_creates_one_run_named_after_the_execution(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    execution = acme.execute(active["pipelineId"], parameters={"end_date": "2026-02-28"}, priority="HIGH")
    svc.dispatch()

    run = svc.fake.runs[(active["dagId"], execution["executionId"])]
    assert run["dag_run_id"] == execution["executionId"]
    assert run["conf"] == {"start_date": "2026-02-01", "end_date": "2026-02-28"}
    assert execution["executionId"] in run["note"]
    assert acme.execution(execution["executionId"])["priority"] == "HIGH"

    svc.dispatch()
    assert len(svc.fake.runs) == 1
    assert len(svc.fake.calls("POST", r"/api/v2/dags/[^/]+/dagRuns")) == 1


def test_a_repeated_submission_never_makes_a_second_run(svc: Service, submitted: dict[str, Any]) -> None:
    # The service lost track of the submission (e.g. it died before committing): it submits again.
    with svc.app.state.sessions.begin() as s:
        s.get(Execution, submitted["executionId"]).submitted = False
    svc.dispatch()

    assert len(svc.fake.calls("POST", r"/api/v2/dags/[^/]+/dagRuns")) == 2
    assert len(svc.fake.runs) == 1  # Airflow answered 409: the run exists already
    svc.dispatch()
    assert len(svc.fake.calls("POST", r"/api/v2/dags/[^/]+/dagRuns")) == 2


@pytest.mark.parametrize(
    "parameters, path",
    [({"start_date": "yesterday"}, "parameters.start_date"), ({"colour": "red"}, "parameters.colour")],
    ids=["not a date", "unknown parameter"],
)
def test_bad_parameters_are_400_naming_the_parameter(
    acme: Api, active: dict[str, Any], parameters: dict[str, Any], path: str
) -> None:
    resp = acme.post(f"/v1/pipelines/{active['pipelineId']}/execute", json={"parameters": parameters})
    error = expect_error(resp, 400, "validation_error", path=path)
    assert error["message"].startswith(path)
    assert acme.get(EXECUTIONS).json()["total"] == 0


def test_engine_override_must_be_airflow(acme: Api, active: dict[str, Any]) -> None:
    url = f"/v1/pipelines/{active['pipelineId']}/execute"
    error = expect_error(acme.post(url, json={"engine_override": "spark"}), 400, "validation_error", "engine_override")
    assert "spark" in error["message"] and "airflow" in error["message"]
    assert acme.post(url, json={"engine_override": "airflow"}).status_code == 202


def test_priority_must_be_known(acme: Api, active: dict[str, Any]) -> None:
    resp = acme.post(f"/v1/pipelines/{active['pipelineId']}/execute", json={"priority": "URGENT"})
    expect_error(resp, 400, "validation_error", path="priority")


def test_execute_of_an_unknown_pipeline_is_404(acme: Api) -> None:
    expect_error(acme.post("/v1/pipelines/pl-nope/execute", json={}), 404, "not_found")


def test_accepted_while_airflow_is_down_and_submitted_when_it_is_back(
    svc: Service, acme: Api, active: dict[str, Any]
) -> None:
    svc.fake.down = True
    execution = acme.execute(active["pipelineId"])
    assert execution["status"] == "QUEUED"
    with pytest.raises(AirflowUnavailable):
        svc.dispatch()
    waiting = acme.execution(execution["executionId"])
    assert waiting["status"] == "QUEUED" and "not yet submitted" in waiting["errorMessage"]

    svc.fake.down = False
    svc.dispatch()
    assert (active["dagId"], execution["executionId"]) in svc.fake.runs
    assert acme.execution(execution["executionId"])["status"] == "QUEUED"  # Airflow's run is queued too


def test_waits_for_the_pipeline_to_be_published(svc: Service, acme: Api) -> None:
    pipeline = acme.create_pipeline(example())
    execution = acme.execute(pipeline["pipelineId"])
    svc.dispatch()
    assert svc.fake.runs == {}

    svc.publish()
    svc.dispatch()
    assert (pipeline["dagId"], execution["executionId"]) in svc.fake.runs


def test_running_run_reports_progress(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    advance(
        svc,
        submitted,
        "running",
        {"prepare_staging": "success", "sources.products": "success", "sources.raw_transactions": "running"},
    )
    body = acme.execution(submitted["executionId"])
    assert body["status"] == "RUNNING"
    assert body["progress"] == {
        "totalTasks": 8,
        "completedTasks": 2,
        "currentTask": "sources.raw_transactions",
        "percentage": 25,
    }
    assert body["startedAt"] is not None and body["finishedAt"] is None
    assert sorted(t["taskId"] for t in body["tasks"]) == sorted(TASKS)
    assert {t["taskId"]: t["state"] for t in body["tasks"]}["sources.raw_transactions"] == "running"


def test_successful_run_is_completed(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    advance(svc, submitted, "success", dict.fromkeys(TASKS, "success"))
    body = acme.execution(submitted["executionId"])
    assert body["status"] == "COMPLETED"
    assert body["progress"] == {"totalTasks": 8, "completedTasks": 8, "currentTask": None, "percentage": 100}
    assert body["finishedAt"] is not None and body["errorMessage"] is None
    assert body["tasks"][0]["durationMs"] == 1500


def test_failed_run_names_the_failed_task(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    tasks = dict.fromkeys(TASKS[:5], "success")
    tasks.update(
        {
            "sinks.daily_transactions": "failed",
            "quality.daily_transactions": "upstream_failed",
            "cleanup_staging": "success",
        }
    )
    advance(svc, submitted, "failed", tasks)
    svc.fake.add_log(
        submitted["dagId"],
        submitted["executionId"],
        "sinks.daily_transactions",
        {"timestamp": "2026-02-13T10:00:01.000000Z", "level": "info", "event": "loading"},
        {"timestamp": "2026-02-13T10:00:02.000000Z", "level": "error", "event": "relation does not exist"},
    )

    body = acme.execution(submitted["executionId"])
    assert body["status"] == "FAILED"
    assert "sinks.daily_transactions" in body["errorMessage"]
    assert "relation does not exist" in body["errorMessage"]
    assert body["progress"]["completedTasks"] == 8


def test_reconciler_updates_the_stored_status(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    advance(svc, submitted, "success", dict.fromkeys(TASKS, "success"))
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)
    listed = acme.get(EXECUTIONS, params={"status": "COMPLETED"}).json()
    assert [e["executionId"] for e in listed["items"]] == [submitted["executionId"]]


def test_list_filters_by_pipeline_and_status_and_pages(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    other = acme.create_pipeline(example("other"))
    first = acme.execute(active["pipelineId"])
    svc.dispatch()
    advance(svc, first, "success", dict.fromkeys(TASKS, "success"))
    acme.execution(first["executionId"])
    second = acme.execute(active["pipelineId"])  # max_active_runs 1: only after the first has finished
    third = acme.execute(other["pipelineId"])
    svc.publish()
    svc.dispatch()

    def ids(**params: Any) -> list[str]:
        return [e["executionId"] for e in acme.get(EXECUTIONS, params=params).json()["items"]]

    assert ids() == [third["executionId"], second["executionId"], first["executionId"]]  # newest first
    assert ids(pipelineId=active["pipelineId"]) == [second["executionId"], first["executionId"]]
    assert ids(status="COMPLETED") == [first["executionId"]]
    assert ids(pipelineId=active["pipelineId"], status="QUEUED") == [second["executionId"]]
    page = acme.get(EXECUTIONS, params={"page": 1, "size": 1}).json()
    assert (page["total"], page["page"], page["size"]) == (3, 1, 1)
    assert [e["executionId"] for e in page["items"]] == [second["executionId"]]
    expect_error(acme.get(EXECUTIONS, params={"status": "DONE"}), 400, "validation_error", path="status")


def test_cancel_a_running_execution(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    advance(svc, submitted, "running", {"prepare_staging": "success", "sources.products": "running"})
    resp = acme.post(f"{EXECUTIONS}/{submitted['executionId']}/cancel")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "CANCELLED"
    assert resp.json()["finishedAt"] is not None

    # Airflow stops the run: unfinished tasks are failed, except the teardown that drops the staging schema.
    tis = svc.fake.task_instances[(submitted["dagId"], submitted["executionId"])]
    states = {task_id: ti["state"] for task_id, ti in tis.items()}
    assert states.pop("prepare_staging") == "success" and states.pop("cleanup_staging") is None
    assert set(states.values()) == {"failed"}
    assert acme.execution(submitted["executionId"])["status"] == "CANCELLED"
    expect_error(acme.post(f"{EXECUTIONS}/{submitted['executionId']}/cancel"), 409, "conflict")


def test_cancel_a_finished_execution_is_409(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    advance(svc, submitted, "success", dict.fromkeys(TASKS, "success"))
    error = expect_error(acme.post(f"{EXECUTIONS}/{submitted['executionId']}/cancel"), 409, "conflict")
    assert "COMPLETED" in error["message"]
    assert svc.fake.runs[(submitted["dagId"], submitted["executionId"])]["state"] == "success"


def test_cancel_before_submission_never_reaches_airflow(svc: Service, acme: Api) -> None:
    pipeline = acme.create_pipeline(example())
    execution = acme.execute(pipeline["pipelineId"])
    assert acme.post(f"{EXECUTIONS}/{execution['executionId']}/cancel").json()["status"] == "CANCELLED"
    svc.publish()
    svc.dispatch()
    assert svc.fake.runs == {}


def test_logs_render_airflow_events_as_lines(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    advance(svc, submitted, "running", {"prepare_staging": "success", "sources.raw_transactions": "running"})
    dag_id, run_id = submitted["dagId"], submitted["executionId"]
    svc.fake.add_log(
        dag_id,
        run_id,
        "prepare_staging",
        {"timestamp": "2026-02-13T10:00:00.000000Z", "event": "::group::Log message source details"},
        {"timestamp": "2026-02-13T10:00:00.000000Z", "event": "::endgroup::"},
        {"timestamp": "2026-02-13T10:00:00.123456Z", "level": "info", "event": "staging schema created"},
        {"timestamp": "2026-02-13T10:00:00.200000Z", "level": "info", "event": ""},
    )
    svc.fake.add_log(
        dag_id,
        run_id,
        "sources.raw_transactions",
        {"timestamp": "2026-02-13T10:00:01.000000Z", "level": "info", "event": "extracting"},
        {"timestamp": "2026-02-13T10:00:02.500000Z", "level": "warning", "event": "slow query"},
        {"timestamp": "2026-02-13T10:00:03.000000Z", "level": "info", "event": "42 rows"},
    )
    url = f"{EXECUTIONS}/{run_id}/logs"

    body = acme.get(url).json()
    assert body["executionId"] == run_id and body["task"] is None
    assert body["lines"] == [
        "[prepare_staging] 2026-02-13 10:00:00.123 INFO staging schema created",
        "[sources.raw_transactions] 2026-02-13 10:00:01.000 INFO extracting",
        "[sources.raw_transactions] 2026-02-13 10:00:02.500 WARNING slow query",
        "[sources.raw_transactions] 2026-02-13 10:00:03.000 INFO 42 rows",
    ]
    assert acme.get(url, params={"lines": 2}).json()["lines"] == body["lines"][-2:]
    assert acme.get(url, params={"task": "raw_transactions", "lines": 1}).json()["lines"] == [
        "2026-02-13 10:00:03.000 INFO 42 rows"
    ]
    error = expect_error(acme.get(url, params={"task": "nope"}), 404, "not_found")
    assert "'nope'" in error["message"] and "sources.raw_transactions" in error["message"]


def test_another_tenants_execution_is_404(svc: Service, submitted: dict[str, Any]) -> None:
    globex = svc.api("globex")
    url = f"{EXECUTIONS}/{submitted['executionId']}"
    expect_error(globex.get(url), 404, "not_found")
    expect_error(globex.get(f"{url}/logs"), 404, "not_found")
    expect_error(globex.post(f"{url}/cancel"), 404, "not_found")
    expect_error(globex.post(f"/v1/pipelines/{submitted['pipelineId']}/execute", json={}), 404, "not_found")
    assert globex.get(EXECUTIONS).json()["total"] == 0
    assert svc.fake.runs[(submitted["dagId"], submitted["executionId"])]["state"] == "queued"


def test_a_run_deleted_in_airflow_fails_the_execution(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    del svc.fake.runs[(submitted["dagId"], submitted["executionId"])]
    body = acme.execution(submitted["executionId"])
    assert body["status"] == "FAILED"
    assert "no longer exists" in body["errorMessage"]


def test_logs_of_a_short_task_name_are_not_mixed_up(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    advance(
        svc,
        submitted,
        "running",
        {"sinks.daily_transactions": "success", "quality.daily_transactions": "running"},
    )
    dag_id, run_id = submitted["dagId"], submitted["executionId"]
    svc.fake.add_log(dag_id, run_id, "sinks.daily_transactions", {"level": "info", "event": "merged 42 rows"})
    svc.fake.add_log(dag_id, run_id, "quality.daily_transactions", {"level": "info", "event": "2 checks"})

    resp = acme.get(f"{EXECUTIONS}/{run_id}/logs", params={"task": "daily_transactions"})
    assert resp.status_code == 400, resp.text
    assert "sinks.daily_transactions" in resp.json()["error"]["message"]
    assert "quality.daily_transactions" in resp.json()["error"]["message"]
    lines = acme.get(f"{EXECUTIONS}/{run_id}/logs", params={"task": "sinks.daily_transactions"}).json()["lines"]
    assert lines == ["INFO merged 42 rows"]


def test_execution_of_a_pipeline_that_turns_invalid_does_not_stay_queued(svc: Service, acme: Api) -> None:
    pipeline = acme.create_pipeline(example())
    execution = acme.execute(pipeline["pipelineId"])
    svc.fake.broken[svc.dag_file(pipeline["dagId"]).name] = "SyntaxError: boom"
    svc.publish()
    svc.dispatch()
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)

    body = acme.execution(execution["executionId"])
    assert body["status"] == "FAILED", body
    assert "INVALID" in body["errorMessage"]


# -- issue 4: priority, estimate, concurrency, rate limit ----------------------------------------------------
def _with_orchestration(name: str, **orchestration: Any) -> dict[str, Any]:
    body = example(name)
    body["definition"]["orchestration"].update(orchestration)
    return body


def _finish(svc: Service, acme: Api, execution: dict[str, Any], state: str = "success") -> dict[str, Any]:
    svc.dispatch()
    tasks = dict.fromkeys(TASKS, "success" if state == "success" else None)
    if state == "failed":
        tasks.update({"prepare_staging": "success", "sources.raw_transactions": "failed"})
    advance(svc, execution, state, tasks)
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)
    return acme.execution(execution["executionId"])


def test_a_second_execution_beyond_max_active_runs_is_409(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    first = acme.execute(active["pipelineId"])
    error = expect_error(acme.post(f"/v1/pipelines/{active['pipelineId']}/execute", json={}), 409, "conflict")
    assert "max_active_runs" in error["message"] and error["details"] == {"activeExecutions": 1, "maxActiveRuns": 1}
    _finish(svc, acme, first)
    assert acme.post(f"/v1/pipelines/{active['pipelineId']}/execute", json={}).status_code == 202


def test_max_active_runs_above_one_admits_that_many(svc: Service, acme: Api) -> None:
    pipeline = acme.create_pipeline(_with_orchestration("two-at-a-time", max_active_runs=2))
    url = f"/v1/pipelines/{pipeline['pipelineId']}/execute"
    assert [acme.post(url, json={}).status_code for _ in range(3)] == [202, 202, 409]


def test_rate_limit_is_429_with_retry_after(svc: Service, acme: Api) -> None:
    svc.settings.execute_rate_per_minute = 2
    pipeline = acme.create_pipeline(_with_orchestration("busy", max_active_runs=10))
    url = f"/v1/pipelines/{pipeline['pipelineId']}/execute"
    assert [acme.post(url, json={}).status_code for _ in range(2)] == [202, 202]
    resp = acme.post(url, json={})
    error = expect_error(resp, 429, "rate_limited")
    assert 1 <= int(resp.headers["Retry-After"]) <= 60 and error["details"]["limit"] == 2
    assert svc.api("globex").post(url, json={}).status_code == 404  # another tenant has its own budget


def test_rate_limit_counts_in_the_database(svc: Service, acme: Api) -> None:
    """Executions recorded by another replica count too: the window is read from the executions table."""
    svc.settings.execute_rate_per_minute = 1
    pipeline = acme.create_pipeline(_with_orchestration("shared", max_active_runs=10))
    acme.execute(pipeline["pipelineId"])
    with svc.app.state.sessions.begin() as s:  # as if another replica had accepted it a while ago
        ex = s.scalars(select(Execution)).one()
        ex.submitted_at = ex.submitted_at - timedelta(seconds=61)
    assert acme.post(f"/v1/pipelines/{pipeline['pipelineId']}/execute", json={}).status_code == 202


def test_estimated_duration_is_the_median_of_recent_successes(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    first = acme.execute(active["pipelineId"])
    assert first["estimatedDurationMs"] is None  # no history
    for seconds in (10, 30, 20):
        done = _finish(svc, acme, acme.execute(active["pipelineId"]) if seconds != 10 else first)
        with svc.app.state.sessions.begin() as s:
            ex = s.get(Execution, done["executionId"])
            ex.finished_at = ex.started_at + timedelta(seconds=seconds)
    failed = _finish(svc, acme, acme.execute(active["pipelineId"]), "failed")
    assert failed["status"] == "FAILED"
    nxt = acme.execute(active["pipelineId"])
    assert nxt["estimatedDurationMs"] == 20_000
    assert acme.execution(nxt["executionId"])["estimatedDurationMs"] == 20_000


def test_queued_executions_are_submitted_by_priority(svc: Service, acme: Api) -> None:
    pipeline = acme.create_pipeline(_with_orchestration("prio", max_active_runs=10))
    order = ["LOW", "NORMAL", "CRITICAL", "HIGH"]
    ids = {acme.execute(pipeline["pipelineId"], priority=p)["executionId"]: p for p in order}
    svc.publish()
    svc.dispatch()
    triggered = [r["dag_run_id"] for r in svc.fake.runs.values()]
    assert [ids[t] for t in triggered] == ["CRITICAL", "HIGH", "NORMAL", "LOW"]


# -- issue 4: status, metrics, caching ---------------------------------------------------------------------
def test_status_reads_no_xcom_for_metrics(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    """Rows and bytes come from the run's OpenLineage events (tests/service/test_lineage_receiver.py): a status
    read never asks Airflow for a task's XCom for them; only the quality tasks' results are read, once."""
    dag_id, run_id = submitted["dagId"], submitted["executionId"]
    svc.fake.xcoms[(dag_id, run_id, "sources.raw_transactions")] = {"dataset": "raw_transactions", "rows": 120}
    advance(svc, submitted, "running", {"prepare_staging": "success", "sources.raw_transactions": "success"})
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)
    running = acme.execution(run_id)["metrics"]
    assert running["rowsProcessed"] is None and running["elapsedMs"] >= 0  # no event reported rows yet
    advance(svc, submitted, "success", dict.fromkeys(TASKS, "success"))
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)
    acme.execution(run_id)
    xcom_calls = svc.fake.calls("GET", r".*/xcomEntries/return_value")
    assert xcom_calls and all("/taskInstances/quality." in c for c in xcom_calls), xcom_calls


def test_a_fresh_status_is_served_from_the_database(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    svc.settings.status_max_age_seconds = 60
    acme.execution(submitted["executionId"])  # stale (never refreshed): refreshed inline
    before = len(svc.fake.requests)
    for _ in range(5):
        acme.execution(submitted["executionId"])
    assert len(svc.fake.requests) == before  # no Airflow call while the row is fresh
    svc.settings.status_max_age_seconds = 0
    svc.app.state.status_cache.drop(("acme", submitted["executionId"]))  # the body cached for the old max age
    acme.execution(submitted["executionId"])
    assert len(svc.fake.requests) > before


def test_status_reads_refresh_every_active_execution_in_one_batch(svc: Service, acme: Api) -> None:
    pipeline = acme.create_pipeline(_with_orchestration("batch", max_active_runs=10))
    ids = [acme.execute(pipeline["pipelineId"])["executionId"] for _ in range(6)]
    svc.publish()
    svc.dispatch()
    dag_id = pipeline["dagId"]
    svc.fake.set_run(dag_id, ids[0], "running", {"prepare_staging": "success", "sources.products": "running"})
    svc.fake.set_run(dag_id, ids[1], "success", dict.fromkeys(TASKS, "success"))
    before = len(svc.fake.requests)
    acme.execution(ids[2])  # stale: one batch refreshes all six
    batch = svc.fake.requests[before:]
    assert batch.count(("GET", "/api/v2/dags/~/dagRuns")) == 1  # every active run at once
    # The finished run left the active list: read on its own (run, task instances); the running one and the
    # queued ones never seen before have their task instances read. Other calls are only the XComs of the
    # finished run's quality tasks (their results): rows and bytes come from OpenLineage events, not XComs.
    per_run = [p for _, p in batch if "/dags/~/" not in p and not p.endswith("/xcomEntries/return_value")]
    run = f"/api/v2/dags/{dag_id}/dagRuns/"
    assert sorted(per_run) == sorted([run + ids[1]] + [run + i + "/taskInstances" for i in ids])
    xcoms = [p for _, p in batch if p.endswith("/xcomEntries/return_value")]
    quality = [t for t in TASKS if t.startswith("quality.")]
    assert sorted(xcoms) == sorted(f"{run}{ids[1]}/taskInstances/{t}/xcomEntries/return_value" for t in quality)

    svc.settings.status_max_age_seconds = 60
    before = len(svc.fake.requests)
    bodies = {i: acme.execution(i) for i in ids}  # fresh: answered from the rows, no Airflow call
    assert len(svc.fake.requests) == before
    assert bodies[ids[0]]["status"] == "RUNNING" and bodies[ids[0]]["progress"]["completedTasks"] == 1
    assert bodies[ids[1]]["status"] == "COMPLETED"
    assert {bodies[i]["status"] for i in ids[2:]} == {"QUEUED"}
    assert all(len(bodies[i]["tasks"]) == len(TASKS) for i in ids)  # queued runs list their tasks too


def test_a_status_read_answers_from_the_row_when_airflow_fails(
    svc: Service, acme: Api, submitted: dict[str, Any]
) -> None:
    advance(svc, submitted, "running", {"prepare_staging": "running"})
    assert acme.execution(submitted["executionId"])["status"] == "RUNNING"
    advance(svc, submitted, "success", dict.fromkeys(TASKS, "success"))
    svc.fake.fail_next = [500]  # its metadata database busy: the batch fails
    assert acme.execution(submitted["executionId"])["status"] == "RUNNING"  # 200, as last seen
    svc.fake.down = True
    assert acme.execution(submitted["executionId"])["status"] == "RUNNING"
    svc.fake.down = False
    assert acme.execution(submitted["executionId"])["status"] == "COMPLETED"


def test_a_queued_run_that_has_not_changed_costs_one_call_per_batch(svc: Service, acme: Api) -> None:
    pipeline = acme.create_pipeline(_with_orchestration("quiet", max_active_runs=10))
    ids = [acme.execute(pipeline["pipelineId"])["executionId"] for _ in range(3)]
    svc.publish()
    svc.dispatch()
    svc.app.state.status_refresh.refresh_active(svc.app.state.airflow)  # sees them queued
    before = len(svc.fake.requests)
    assert svc.app.state.status_refresh.refresh_active(svc.app.state.airflow)
    assert svc.fake.requests[before:] == [("GET", "/api/v2/dags/~/dagRuns")]
    svc.fake.set_run(pipeline["dagId"], ids[0], "running", {"prepare_staging": "running"})
    assert svc.app.state.status_refresh.refresh_active(svc.app.state.airflow)
    assert acme.execution(ids[0])["progress"]["currentTask"] == "prepare_staging"


def test_list_filters_by_submission_time(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    first = _finish(svc, acme, acme.execute(active["pipelineId"]))
    second = acme.execute(active["pipelineId"])
    cut = datetime.fromisoformat(second["submittedAt"])

    def ids(**params: Any) -> list[str]:
        resp = acme.get(EXECUTIONS, params=params)
        assert resp.status_code == 200, resp.text
        return [e["executionId"] for e in resp.json()["items"]]

    assert ids(**{"from": cut.isoformat()}) == [second["executionId"]]
    assert ids(to=cut.isoformat()) == [first["executionId"]]
    assert ids(**{"from": (cut - timedelta(hours=1)).isoformat(), "to": (cut + timedelta(hours=1)).isoformat()}) == [
        second["executionId"],
        first["executionId"],
    ]
    expect_error(acme.get(EXECUTIONS, params={"from": "yesterday"}), 400, "validation_error", path="from")
    expect_error(acme.get(EXECUTIONS, params={"from": "2026-02-12T00:00:00"}), 400, "validation_error", path="from")
    bad = {"from": "2026-02-12T00:00:00Z", "to": "2026-02-11T00:00:00Z"}
    expect_error(acme.get(EXECUTIONS, params=bad), 400, "validation_error", path="from")


# -- issue 4: retry ----------------------------------------------------------------------------------------
def test_retry_clears_the_failed_tasks_and_keeps_the_execution(
    svc: Service, acme: Api, submitted: dict[str, Any]
) -> None:
    failed = _finish(svc, acme, submitted, "failed")
    assert failed["status"] == "FAILED"
    resp = acme.post(f"{EXECUTIONS}/{submitted['executionId']}/retry")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["executionId"], body["status"], body["finishedAt"], body["errorMessage"]) == (
        submitted["executionId"],
        "QUEUED",
        None,
        None,
    )
    [clear] = svc.fake.cleared
    assert clear["dag_run_id"] == submitted["executionId"] and clear["dry_run"] is False
    # a source failed: the staging side is rebuilt (the teardown dropped it); sinks are not in there twice
    assert set(clear["task_ids"]) == {t for t in TASKS if not t.startswith(("sinks.", "quality."))}
    assert svc.fake.runs[(submitted["dagId"], submitted["executionId"])]["state"] == "queued"

    advance(svc, submitted, "success", dict.fromkeys(TASKS, "success"))
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)
    assert acme.execution(submitted["executionId"])["status"] == "COMPLETED"
    assert len(svc.fake.runs) == 1


def test_retry_of_a_failed_quality_check_reruns_only_the_check(
    svc: Service, acme: Api, submitted: dict[str, Any]
) -> None:
    tasks = dict.fromkeys(TASKS, "success")
    tasks["quality.daily_transactions"] = "failed"
    svc.dispatch()
    advance(svc, submitted, "failed", tasks)
    assert acme.execution(submitted["executionId"])["status"] == "FAILED"
    assert acme.post(f"{EXECUTIONS}/{submitted['executionId']}/retry").status_code == 200
    assert svc.fake.cleared[0]["task_ids"] == ["quality.daily_transactions", "cleanup_staging"]


def test_retry_set_rebuilds_the_staging_for_a_check_of_staged_data() -> None:
    from service.airflow.models import TaskInstance
    from service.executions.service import retry_set, table_check_tasks

    definition = {
        "sinks": {"t": {"type": "postgres"}, "f": {"type": "file"}},
        "quality_checks": [{"dataset": "t"}, {"dataset": "f"}, {"dataset": "raw"}],
    }
    assert table_check_tasks(definition) == {"quality.t"}
    states = {
        "prepare_staging": "success",
        "sources.raw": "success",
        "sinks.t": "success",
        "cleanup_staging": "success",
    }
    for failed, rebuilt in (("quality.t", False), ("quality.f", True), ("quality.raw", True)):
        tis = [TaskInstance(task_id=t, state=s) for t, s in {**states, failed: "failed"}.items()]
        chosen = retry_set(tis, table_check_tasks(definition))
        assert failed in chosen and "cleanup_staging" in chosen and "sinks.t" not in chosen
        assert ("sources.raw" in chosen) is rebuilt, (failed, chosen)


def test_a_retry_counts_against_max_active_runs(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    failed = _finish(svc, acme, acme.execute(active["pipelineId"]), state="failed")
    running = acme.execute(active["pipelineId"])  # max_active_runs is 1: this one takes the slot
    retry = f"{EXECUTIONS}/{failed['executionId']}/retry"
    error = expect_error(acme.post(retry), 409, "conflict")
    assert "max_active_runs" in error["message"] and error["details"] == {"activeExecutions": 1, "maxActiveRuns": 1}
    assert acme.execution(failed["executionId"])["status"] == "FAILED" and not svc.fake.cleared
    _finish(svc, acme, running)
    assert acme.post(retry).status_code == 200
    assert acme.execution(failed["executionId"])["status"] == "QUEUED"


def test_retry_of_an_execution_that_has_not_failed_is_409(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    error = expect_error(acme.post(f"{EXECUTIONS}/{submitted['executionId']}/retry"), 409, "conflict")
    assert "QUEUED" in error["message"]
    _finish(svc, acme, submitted)
    expect_error(acme.post(f"{EXECUTIONS}/{submitted['executionId']}/retry"), 409, "conflict")
    assert svc.fake.cleared == []
    expect_error(acme.post(f"{EXECUTIONS}/exec-nope/retry"), 404, "not_found")


def test_a_run_cleared_in_airflow_reopens_its_execution(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    watch = ClearedRunsWatch(svc.app.state.sessions, svc.app.state.airflow)
    watch.step()
    assert _finish(svc, acme, submitted, "failed")["status"] == "FAILED"
    watch.step()
    assert acme.execution(submitted["executionId"])["status"] == "FAILED"
    # Someone clears the run in Airflow's UI (or while the service was down): it runs again.
    advance(svc, submitted, "running", {"sources.raw_transactions": "running"})
    watch.step()
    body = acme.execution(submitted["executionId"])
    assert (body["status"], body["finishedAt"], body["errorMessage"]) == ("RUNNING", None, None)


def test_a_new_watch_looks_back_to_the_last_recorded_change(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    """After a restart: the first look starts where the service last wrote execution state."""
    _finish(svc, acme, submitted, "failed")
    advance(svc, submitted, "running", {"sources.raw_transactions": "running"})  # while "down"
    ClearedRunsWatch(svc.app.state.sessions, svc.app.state.airflow).step()
    assert acme.execution(submitted["executionId"])["status"] == "RUNNING"


# -- issue 4: streams --------------------------------------------------------------------------------------
def _events(text: str) -> list[tuple[str, Any]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "event" in lines:
            out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_follow_streams_log_lines_until_the_task_ends(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    dag_id, run_id = submitted["dagId"], submitted["executionId"]
    advance(svc, submitted, "running", {"sources.products": "success"})
    svc.fake.add_log(dag_id, run_id, "sources.products", {"level": "info", "event": "staged 8 rows"})
    resp = acme.get(f"{EXECUTIONS}/{run_id}/logs", params={"task": "sources.products", "follow": "true"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = _events(resp.text)
    assert events[0] == ("log", {"task": "sources.products", "tryNumber": 1, "line": events[0][1]["line"]})
    assert events[0][1]["line"].endswith("INFO staged 8 rows") and events[-1][0] == "end"
    expect_error(acme.get(f"{EXECUTIONS}/{run_id}/logs", params={"task": "nope", "follow": "true"}), 404, "not_found")


def test_events_stream_status_changes_and_logs(svc: Service, acme: Api, submitted: dict[str, Any]) -> None:
    dag_id, run_id = submitted["dagId"], submitted["executionId"]
    advance(svc, submitted, "success", dict.fromkeys(TASKS, "success"))
    svc.fake.add_log(dag_id, run_id, "prepare_staging", {"level": "info", "event": "schema created"})
    resp = acme.get(f"{EXECUTIONS}/{run_id}/events")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = _events(resp.text)
    names = [e for e, _ in events]
    assert names[0] == "run.updated" and events[0][1]["status"] == "COMPLETED"
    assert ("log", {"task": "prepare_staging", "tryNumber": 1, "line": events[1][1]["line"]}) in events
    assert names[-1] == "end" and events[-1][1]["status"] == "COMPLETED"
    expect_error(svc.api("globex").get(f"{EXECUTIONS}/{run_id}/events"), 404, "not_found")


def test_a_finished_status_is_cached_briefly_and_a_retry_drops_it(
    svc: Service, acme: Api, submitted: dict[str, Any]
) -> None:
    svc.settings.status_cache_seconds = 60
    failed = _finish(svc, acme, submitted, "failed")
    with svc.app.state.sessions.begin() as s:  # a change the cache cannot know about
        s.get(Execution, submitted["executionId"]).error_message = "changed behind the cache"
    assert acme.execution(submitted["executionId"]) == failed
    assert acme.post(f"{EXECUTIONS}/{submitted['executionId']}/retry").status_code == 200
    assert acme.execution(submitted["executionId"])["status"] == "QUEUED"
    expect_error(svc.api("globex").get(f"{EXECUTIONS}/{submitted['executionId']}"), 404, "not_found")


def test_a_run_cleared_and_finished_while_the_service_was_down_is_picked_up(
    svc: Service, acme: Api, submitted: dict[str, Any]
) -> None:
    assert _finish(svc, acme, submitted, "failed")["status"] == "FAILED"
    advance(svc, submitted, "success", dict.fromkeys(TASKS, "success"))  # cleared and re-run, all while down
    ClearedRunsWatch(svc.app.state.sessions, svc.app.state.airflow).step()
    body = acme.execution(submitted["executionId"])
    assert (body["status"], body["errorMessage"]) == ("COMPLETED", None)


# -- issue 3: quality results ------------------------------------------------------------------------------
QUALITY_TASK = "quality.daily_transactions"


def _check(name: str, expectation: str, severity: str, success: bool, **result: Any) -> dict[str, Any]:
    """One entry of what QualityCheckOperator returns (and pushes before failing)."""
    return {
        "name": name,
        "dataset": "daily_transactions",
        "table": "analytics.daily_transactions",
        "expectation": expectation,
        "severity": severity,
        "success": success,
        "result": result,
    }


def test_quality_results_of_a_completed_run_include_failed_warn_checks(
    svc: Service, acme: Api, submitted: dict[str, Any]
) -> None:
    dag_id, run_id = submitted["dagId"], submitted["executionId"]
    svc.fake.xcoms[(dag_id, run_id, QUALITY_TASK)] = [
        _check("transaction_id_not_null", "expect_column_values_to_not_be_null", "error", True,
               element_count=10, unexpected_count=0, unexpected_percent=0.0),
        _check("amount_in_range", "expect_column_values_to_be_between", "warn", False,
               element_count=10, unexpected_count=3, unexpected_percent=30.0, partial_unexpected_list=[1e6]),
    ]  # fmt: skip
    advance(svc, submitted, "running", dict.fromkeys(TASKS[:-2], "success") | {QUALITY_TASK: "running"})
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)
    assert acme.execution(run_id)["qualityResults"] == []  # not before the run has finished

    advance(svc, submitted, "success", dict.fromkeys(TASKS, "success"))
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)
    body = acme.execution(run_id)
    assert body["status"] == "COMPLETED"
    passed, warned = body["qualityResults"]
    assert (passed["name"], passed["success"], passed["severity"], passed["unexpectedCount"]) == (
        "transaction_id_not_null",
        True,
        "error",
        0,
    )
    assert (warned["name"], warned["success"], warned["severity"]) == ("amount_in_range", False, "warn")
    assert (warned["dataset"], warned["expectation"]) == ("daily_transactions", "expect_column_values_to_be_between")
    assert (warned["elementCount"], warned["unexpectedCount"], warned["unexpectedPercent"]) == (10, 3, 30.0)
    assert warned["details"]["partial_unexpected_list"] == [1e6] and warned["errors"] == []
    # one XCom read for the quality task, at the end; further reads are served from the database
    acme.execution(run_id)
    assert len(svc.fake.calls("GET", rf".*/taskInstances/{QUALITY_TASK}/xcomEntries/return_value")) == 1


def test_a_failed_error_check_fails_the_execution_and_shows_in_its_results(
    svc: Service, acme: Api, submitted: dict[str, Any]
) -> None:
    dag_id, run_id = submitted["dagId"], submitted["executionId"]
    svc.fake.xcoms[(dag_id, run_id, QUALITY_TASK)] = json.dumps(  # Airflow may hand the value back as JSON text
        [_check("rows", "expect_table_row_count_to_be_between", "error", False, observed_value=0)]
    )
    advance(svc, submitted, "failed", dict.fromkeys(TASKS, "success") | {QUALITY_TASK: "failed"})
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)
    body = acme.execution(run_id)
    assert body["status"] == "FAILED" and QUALITY_TASK in body["errorMessage"]
    [result] = body["qualityResults"]
    assert (result["name"], result["success"], result["observedValue"], result["taskId"]) == (
        "rows",
        False,
        0,
        QUALITY_TASK,
    )
    assert result["unexpectedCount"] is None  # an aggregate expectation counts no unexpected values

    assert acme.post(f"{EXECUTIONS}/{run_id}/retry").status_code == 200
    assert acme.execution(run_id)["qualityResults"] == []  # the retried run's checks have not run yet


def test_no_quality_results_without_checks_or_when_the_checks_never_ran(
    svc: Service, acme: Api, submitted: dict[str, Any]
) -> None:
    # the sink failed: the checks were skipped (upstream_failed) and have no results to read
    tasks = dict.fromkeys(TASKS, "success") | {"sinks.daily_transactions": "failed", QUALITY_TASK: "upstream_failed"}
    advance(svc, submitted, "failed", tasks)
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)
    body = acme.execution(submitted["executionId"])
    assert (body["status"], body["qualityResults"]) == ("FAILED", [])
    assert svc.fake.calls("GET", rf".*/taskInstances/{QUALITY_TASK}/xcomEntries/.*") == []

    no_checks = acme.create_pipeline(example("no-checks", definition={**EXAMPLE["definition"], "quality_checks": []}))
    svc.publish()
    execution = acme.execute(no_checks["pipelineId"])
    svc.dispatch()
    advance(svc, execution, "success", dict.fromkeys(svc.fake.dag_tasks[no_checks["dagId"]], "success"))
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)
    done = acme.execution(execution["executionId"])
    assert (done["status"], done["qualityResults"]) == ("COMPLETED", [])
