"""Airflow's answers read as typed models (service.airflow.models): unknown fields are tolerated, a missing or
mistyped required field is an AirflowError that names the endpoint, not a KeyError inside a caller."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from service.airflow.client import AirflowClient, AirflowError
from service.airflow.models import DagRun, TaskInstance


def client(answer: Callable[[httpx.Request], Any]) -> AirflowClient:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        return httpx.Response(200, content=json.dumps(answer(request)).encode())

    return AirflowClient("http://airflow.test", "admin", lambda: "pw", transport=httpx.MockTransport(handle))


RUN = {
    "dag_id": "acme.x",
    "dag_run_id": "exec-1",
    "state": "running",
    "start_date": "2026-12-02T10:00:00Z",
    "a_field_of_a_later_airflow": {"nested": True},
}


def test_a_run_is_typed_and_unknown_fields_are_tolerated() -> None:
    run = client(lambda _: RUN).get_run("acme.x", "exec-1")
    assert isinstance(run, DagRun)
    assert (run.dag_run_id, run.state) == ("exec-1", "running")
    assert run.start_date == datetime(2026, 12, 2, 10, tzinfo=UTC)


@pytest.mark.parametrize("missing", ["dag_id", "dag_run_id"])
def test_a_run_without_a_required_field_is_an_airflow_error_naming_the_endpoint(missing: str) -> None:
    answer = {k: v for k, v in RUN.items() if k != missing}
    with pytest.raises(AirflowError) as caught:
        client(lambda _: answer).get_run("acme.x", "exec-1")
    assert "GET /dags/acme.x/dagRuns/exec-1" in caught.value.message and missing in caught.value.message
    assert caught.value.status_code == 502


def test_task_instances_default_a_null_try_number_and_reject_a_mistyped_one() -> None:
    tis = client(lambda _: {"task_instances": [{"task_id": "a", "try_number": None}], "total_entries": 1})
    assert tis.task_instances("acme.x", "exec-1") == [TaskInstance(task_id="a", try_number=0)]
    bad = client(lambda _: {"task_instances": [{"task_id": "a", "try_number": "first"}], "total_entries": 1})
    with pytest.raises(AirflowError, match=r"taskInstances.*task_instances\.0\.try_number"):
        bad.task_instances("acme.x", "exec-1")


def test_active_runs_pages_through_every_queued_and_running_run() -> None:
    seen: list[httpx.QueryParams] = []

    def answer(request: httpx.Request) -> Any:
        seen.append(request.url.params)
        offset = int(request.url.params["offset"])
        runs = [{**RUN, "dag_run_id": f"exec-{i}"} for i in range(offset, min(offset + 100, 150))]
        return {"dag_runs": runs, "total_entries": 150}

    runs = client(answer).active_runs()
    assert len(runs) == 150 and runs[("acme.x", "exec-149")].state == "running"
    assert [p["offset"] for p in seen] == ["0", "100"]
    assert all(p.get_list("state") == ["queued", "running"] for p in seen)


def test_dag_tags_are_names() -> None:
    dag = client(lambda _: {"dag_id": "acme.x", "tags": [{"name": "tenant:acme", "dag_id": "acme.x"}]})
    assert dag.get_dag("acme.x").tags == ["tenant:acme"]
