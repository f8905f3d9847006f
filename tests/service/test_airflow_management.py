"""Airflow management under /v1/airflow: Airflow's REST API passed through, scoped to the caller's tenant."""

from __future__ import annotations

from typing import Any

from tests.service.fake_airflow import task_ids
from tests.service.helpers import EXAMPLE, Api, Service, expect_error

DAGS = "/v1/airflow/dags"
TASKS = task_ids(EXAMPLE["definition"])


def _foreign_dag(svc: Service, dag_id: str) -> None:
    """A DAG of someone else that Airflow's substring pattern would also match."""
    svc.fake._add_dag(dag_id, svc.settings.dags_dir / f"{dag_id}.py", ["only_task"])


def test_list_shows_only_the_tenants_dags(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    _foreign_dag(svc, "xacme.lookalike")  # matches Airflow's LIKE '%acme.%', not the prefix
    _foreign_dag(svc, "globex.daily")
    body = acme.get(DAGS).json()
    assert [d["dagId"] for d in body["items"]] == [active["dagId"]] and body["total"] == 1
    assert body["items"][0]["isPaused"] is False
    assert svc.api("globex").get(DAGS).json()["total"] == 1


def test_runs_tasks_and_logs(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    dag_id = active["dagId"]
    run = acme.post(f"{DAGS}/{dag_id}/trigger", json={"conf": {"start_date": "2026-02-03"}})
    assert run.status_code == 201, run.text
    run_id = run.json()["runId"]
    assert svc.fake.runs[(dag_id, run_id)]["conf"] == {"start_date": "2026-02-03"}
    assert _audit(svc, "airflow_dag")[-1:] == [("trigger", dag_id, run_id)]
    svc.fake.set_run(dag_id, run_id, "running", {"prepare_staging": "success"})
    svc.fake.add_log(dag_id, run_id, "prepare_staging", {"level": "info", "event": "schema created"})

    runs = acme.get(f"{DAGS}/{dag_id}/runs", params={"limit": 5}).json()
    assert [r["runId"] for r in runs["runs"]] == [run_id] and runs["runs"][0]["state"] == "running"
    tasks = acme.get(f"{DAGS}/{dag_id}/runs/{run_id}/tasks").json()["tasks"]
    assert sorted(t["taskId"] for t in tasks) == sorted(TASKS)
    prepare = next(t for t in tasks if t["taskId"] == "prepare_staging")
    assert prepare["state"] == "success" and prepare["durationMs"] == 1500
    logs = acme.get(f"{DAGS}/{dag_id}/runs/{run_id}/tasks/prepare_staging/logs").json()
    assert logs["tryNumber"] == 1 and logs["lines"][-1].endswith("INFO schema created")
    expect_error(acme.get(f"{DAGS}/{dag_id}/runs/{run_id}/tasks/nope/logs"), 404, "not_found")
    expect_error(acme.get(f"{DAGS}/{dag_id}/runs/nope/tasks"), 404, "airflow_not_found")
    expect_error(acme.get(f"{DAGS}/{dag_id}/runs", params={"limit": 0}), 400, "validation_error", path="limit")


def test_pause_and_unpause(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    dag_id = active["dagId"]
    assert acme.post(f"{DAGS}/{dag_id}/pause").json()["isPaused"] is True
    assert svc.fake.dags[dag_id]["is_paused"] is True
    assert acme.post(f"{DAGS}/{dag_id}/unpause").json()["isPaused"] is False
    assert svc.fake.dags[dag_id]["is_paused"] is False
    assert _audit(svc, "airflow_dag")[-2:] == [("pause", dag_id, None), ("unpause", dag_id, None)]


def _audit(svc: Service, resource: str) -> list[tuple[str, str, Any]]:
    """The admin's view of the audit log for one resource type (the service is shared by the module's tests),
    oldest first: (action, id, details.runId)."""
    items = svc.api("acme", roles=("admin",)).get("/v1/audit-logs", params={"resource": resource}).json()["items"]
    return [(e["action"], e["resourceId"], (e.get("details") or {}).get("runId")) for e in reversed(items)]


def test_another_tenants_dag_is_404_everywhere(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    recorded = _audit(svc, "airflow_dag")
    _foreign_dag(svc, "globex.daily")
    svc.fake.runs  # noqa: B018 - the foreign DAG exists in Airflow, still a 404 for acme
    for method, path in [
        ("GET", "/globex.daily/runs"),
        ("GET", "/globex.daily/runs/r1/tasks"),
        ("GET", "/globex.daily/runs/r1/tasks/t/logs"),
        ("POST", "/globex.daily/trigger"),
        ("POST", "/globex.daily/pause"),
        ("POST", "/globex.daily/unpause"),
        ("GET", "/acmeish.daily/runs"),
    ]:
        expect_error(acme.request(method, DAGS + path), 404, "not_found")
    assert svc.fake.dags["globex.daily"]["is_paused"] is True
    assert not [k for k in svc.fake.runs if k[0] == "globex.daily"]
    assert _audit(svc, "airflow_dag") == recorded  # refused: nothing recorded


def test_trigger_body_is_checked(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    url = f"{DAGS}/{active['dagId']}/trigger"
    expect_error(acme.post(url, json={"conf": [1, 2]}), 400, "validation_error", path="conf")
    expect_error(acme.post(url, json={"config": {}}), 400, "validation_error", path="config")
    expect_error(acme.post(f"{DAGS}/acme.missing/trigger", json={}), 404, "airflow_not_found")


def test_viewers_read_but_do_not_trigger_or_pause(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    viewer = svc.api("acme", roles=("viewer",))
    assert viewer.get(DAGS).status_code == 200
    expect_error(viewer.post(f"{DAGS}/{active['dagId']}/pause"), 403, "forbidden")
    expect_error(viewer.post(f"{DAGS}/{active['dagId']}/trigger", json={}), 403, "forbidden")


def test_airflow_down_is_503(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    svc.fake.down = True
    expect_error(acme.get(DAGS), 503, "airflow_unavailable")
