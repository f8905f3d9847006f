"""Executions: accepted first (202 QUEUED), submitted by the dispatcher as an Airflow run whose run_id is the
execution id, then mapped from the fake's run and task-instance states."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from service.errors import AirflowUnavailable
from service.executions.models import Execution
from service.workers import reconcile_step
from tests.service.fake_airflow import task_ids
from tests.service.helpers import EXAMPLE, Api, Service, example, expect_error

DEFAULTS = {"start_date": "2026-02-01", "end_date": "2026-02-12"}
TASKS = task_ids(EXAMPLE["definition"])
EXECUTIONS = "/v1/pipelines/executions"


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
    assert acme.execution(execution["executionId"])["status"] == "QUEUED"

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
    second = acme.execute(active["pipelineId"])
    third = acme.execute(other["pipelineId"])
    svc.publish()
    svc.dispatch()
    advance(svc, first, "success", dict.fromkeys(TASKS, "success"))
    acme.execution(first["executionId"])

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
