"""Executions and Airflow management through a real Airflow: execute (409, 429, estimate, priority), status
with metrics, list filters, retry, log follow and event streams, the /v1/airflow passthrough, an Airflow
outage during submission and a service restart mid-run."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e import harness
from tests.e2e.conftest import TERMINAL, create_active, query
from tests.pg import pg_url

pytestmark = pytest.mark.e2e
EXECUTIONS = "/v1/pipelines/executions"
TIMEOUT = 240  # two cores shared with other engineers' Airflows: be generous


def small(name: str, table: str, source: str = "public.raw_transactions", **orchestration: Any) -> dict[str, Any]:
    """Two work tasks (stage one source, load one sink) plus the staging setup/teardown."""
    return {
        "name": name,
        "version": "1.0.0",
        "definition": {
            "sources": {"raw": {"type": "postgres", "connection": "sales-database", "table": source}},
            "sinks": {"out": {"type": "postgres", "connection": "warehouse", "table": table, "input": "raw"}},
            "orchestration": {"retries": 0, "max_active_runs": 1, **orchestration},
        },
    }


def execute(api: httpx.Client, pipeline_id: str, **body: Any) -> dict[str, Any]:
    resp = api.post(f"/v1/pipelines/{pipeline_id}/execute", json=body)
    assert resp.status_code == 202, resp.text
    return dict(resp.json())


def wait_end(api: httpx.Client, execution_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    done = harness.wait_for(
        lambda: api.get(f"{EXECUTIONS}/{execution_id}").json(), lambda e: e["status"] in TERMINAL, timeout, 1.0
    )
    return dict(done)


def sse_events(resp: httpx.Response) -> list[tuple[str, Any]]:
    events, event = [], None
    for line in resp.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event:
            events.append((event, json.loads(line[6:])))
            if event == "end":
                break
    return events


def test_execute_status_metrics_estimate_and_limits(tenant, running, sales_db):
    p = create_active(tenant, small("metrics", "qa.metrics"))
    first = execute(tenant, p["pipelineId"], priority="CRITICAL")
    assert (first["status"], first["priority"], first["estimatedDurationMs"]) == ("QUEUED", "CRITICAL", None)
    # max_active_runs 1 and one execution in progress: 409
    r = tenant.post(f"/v1/pipelines/{p['pipelineId']}/execute", json={})
    assert r.status_code == 409 and "max_active_runs" in r.json()["error"]["message"], r.text

    done = wait_end(tenant, first["executionId"])
    assert done["status"] == "COMPLETED", done
    source_rows = query(sales_db, "SELECT count(*) FROM raw_transactions")[0][0]
    metrics = done["metrics"]
    assert (metrics["rowsProcessed"], metrics["rowsWritten"]) == (source_rows, source_rows), done
    took = (datetime.fromisoformat(done["finishedAt"]) - datetime.fromisoformat(done["startedAt"])) / timedelta(
        milliseconds=1
    )
    assert metrics["elapsedMs"] == pytest.approx(took, abs=2)
    assert {t["taskId"] for t in done["tasks"]} == {"prepare_staging", "sources.raw", "sinks.out", "cleanup_staging"}

    second = execute(tenant, p["pipelineId"])
    assert second["estimatedDurationMs"] == pytest.approx(took, abs=2)  # the median of one run
    assert wait_end(tenant, second["executionId"])["status"] == "COMPLETED"

    def ids(**params: Any) -> list[str]:
        resp = tenant.get(EXECUTIONS, params=params)
        assert resp.status_code == 200, resp.text
        return [e["executionId"] for e in resp.json()["items"]]

    both = [second["executionId"], first["executionId"]]
    assert ids(pipelineId=p["pipelineId"], status="COMPLETED") == both
    assert ids(pipelineId=p["pipelineId"], **{"from": second["submittedAt"]}) == both[:1]
    assert ids(pipelineId=p["pipelineId"], to=second["submittedAt"]) == both[1:]
    assert ids(pipelineId=p["pipelineId"], size=1, page=1) == both[1:]
    r = tenant.get(EXECUTIONS, params={"from": "not a date"})
    assert r.status_code == 400 and r.json()["error"]["details"][0]["path"] == "from"


def test_execute_rate_is_limited_per_tenant_with_retry_after(tenant, running):
    p = create_active(tenant, small("throttled", "qa.throttled", max_active_runs=5))
    af = running.airflow()
    af.patch(f"/dags/{p['dagId']}", json={"is_paused": True})  # accepted runs wait: this test is about the API
    saved = running.settings.execute_rate_per_minute
    running.settings.execute_rate_per_minute = 2
    try:
        accepted = [execute(tenant, p["pipelineId"]) for _ in range(2)]
        r = tenant.post(f"/v1/pipelines/{p['pipelineId']}/execute", json={})
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited", r.text
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    finally:
        running.settings.execute_rate_per_minute = saved
    for e in accepted:
        assert tenant.post(f"{EXECUTIONS}/{e['executionId']}/cancel").status_code == 200
    af.patch(f"/dags/{p['dagId']}", json={"is_paused": False})


def test_retry_reruns_the_failed_tasks_in_the_same_run(tenant, running, sales_db, warehouse_db):
    table = f"retry_src_{uuid.uuid4().hex[:8]}"
    p = create_active(tenant, small("retried", "qa.retried", source=f"public.{table}"))
    failed = wait_end(tenant, execute(tenant, p["pipelineId"])["executionId"])
    assert failed["status"] == "FAILED" and "sources.raw" in failed["errorMessage"], failed
    with psycopg.connect(pg_url(sales_db), autocommit=True) as conn:  # the missing source appears
        conn.execute(f"CREATE TABLE public.{table} AS SELECT * FROM raw_transactions LIMIT 7")

    r = tenant.post(f"{EXECUTIONS}/{failed['executionId']}/retry")
    assert r.status_code == 200 and r.json()["status"] in ("QUEUED", "RUNNING"), r.text
    done = wait_end(tenant, failed["executionId"])
    assert done["status"] == "COMPLETED", done
    assert done["metrics"]["rowsWritten"] == 7
    assert query(warehouse_db, "SELECT count(*) FROM qa.retried") == [(7,)]
    runs = running.airflow().get(f"/dags/{p['dagId']}/dagRuns").json()
    assert [r["dag_run_id"] for r in runs["dag_runs"]] == [failed["executionId"]]  # the same run

    r = tenant.post(f"{EXECUTIONS}/{failed['executionId']}/retry")
    assert r.status_code == 409 and "COMPLETED" in r.json()["error"]["message"]


def test_events_and_followed_logs_stream_until_the_end(tenant, running):
    p = create_active(tenant, small("streamed", "qa.streamed"))
    execution_id = execute(tenant, p["pipelineId"])["executionId"]
    followed: list[tuple[str, Any]] = []

    def follow() -> None:
        url = f"{EXECUTIONS}/{execution_id}/logs"
        with tenant.stream("GET", url, params={"task": "sinks.out", "follow": "true"}, timeout=TIMEOUT) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            followed.extend(sse_events(resp))

    follower = threading.Thread(target=follow)
    follower.start()
    with tenant.stream("GET", f"{EXECUTIONS}/{execution_id}/events", timeout=TIMEOUT) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(resp)
    follower.join(TIMEOUT)

    statuses = [data["status"] for name, data in events if name == "run.updated"]
    assert statuses[-1] == "COMPLETED" and "RUNNING" in statuses, statuses
    logged = {data["task"] for name, data in events if name == "log"}
    assert {"sources.raw", "sinks.out"} <= logged, logged
    assert events[-1] == ("end", {"executionId": execution_id, "status": "COMPLETED"})
    assert followed[-1][0] == "end" and len(followed) > 1, followed
    assert {data["task"] for name, data in followed if name == "log"} == {"sinks.out"}


def test_airflow_management_is_tenant_scoped(tenant, running):
    p = create_active(tenant, small("managed", "qa.managed"))
    dag_id, dags = p["dagId"], "/v1/airflow/dags"
    listed = tenant.get(dags).json()
    assert [d["dagId"] for d in listed["items"]] == [dag_id] and listed["items"][0]["isPaused"] is False

    r = tenant.post(f"{dags}/{dag_id}/trigger", json={"conf": {}})
    assert r.status_code == 201, r.text
    run_id = r.json()["runId"]
    run = harness.wait_for(
        lambda: tenant.get(f"{dags}/{dag_id}/runs", params={"limit": 5}).json()["runs"][0],
        lambda r: r["state"] in ("success", "failed"),
        TIMEOUT,
        1.0,
    )
    assert (run["runId"], run["state"]) == (run_id, "success"), run
    tasks = {t["taskId"]: t for t in tenant.get(f"{dags}/{dag_id}/runs/{run_id}/tasks").json()["tasks"]}
    assert tasks["sinks.out"]["state"] == "success" and tasks["sinks.out"]["durationMs"] >= 0
    logs = tenant.get(f"{dags}/{dag_id}/runs/{run_id}/tasks/sinks.out/logs", params={"lines": 50}).json()
    assert logs["tryNumber"] == 1 and logs["lines"], logs

    assert tenant.post(f"{dags}/{dag_id}/pause").json()["isPaused"] is True
    assert running.airflow().get(f"/dags/{dag_id}").json()["is_paused"] is True
    assert tenant.post(f"{dags}/{dag_id}/unpause").json()["isPaused"] is False

    stranger = running.client(tenant="x" + tenant.headers["X-Tenant-ID"])  # its LIKE pattern matches ours
    assert stranger.get(dags).json()["total"] == 0
    for method, path in [("GET", f"/{dag_id}/runs"), ("POST", f"/{dag_id}/pause"), ("POST", f"/{dag_id}/trigger")]:
        r = stranger.request(method, dags + path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    assert running.airflow().get(f"/dags/{dag_id}").json()["is_paused"] is False


def test_an_execution_submitted_while_airflow_is_down_runs_once_it_is_back(tenant, running):
    p = create_active(tenant, small("outage", "qa.outage"))
    running.stack.stop_component("api-server")
    try:
        accepted = execute(tenant, p["pipelineId"])
        time.sleep(4)  # a few dispatcher ticks against a dead Airflow
        waiting = tenant.get(f"{EXECUTIONS}/{accepted['executionId']}").json()
        assert waiting["status"] == "QUEUED" and "not yet submitted" in (waiting["errorMessage"] or ""), waiting
    finally:
        running.stack.start_component("api-server")
        running.stack.wait_healthy()
    done = wait_end(tenant, accepted["executionId"])
    assert done["status"] == "COMPLETED", done
    runs = running.airflow().get(f"/dags/{p['dagId']}/dagRuns").json()
    assert runs["total_entries"] == 1 and runs["dag_runs"][0]["dag_run_id"] == accepted["executionId"]


def test_a_run_that_ends_while_the_service_is_down_is_completed_after_restart(tenant, running):
    p = create_active(tenant, small("restarted", "qa.restarted"))
    execution_id = execute(tenant, p["pipelineId"])["executionId"]
    harness.wait_for(lambda: tenant.get(f"{EXECUTIONS}/{execution_id}").json(), lambda e: e["status"] != "QUEUED")
    running.server.should_exit = True
    running.thread.join(timeout=30)
    try:
        af = running.airflow()
        run = harness.wait_for(
            lambda: af.get(f"/dags/{p['dagId']}/dagRuns/{execution_id}").json(),
            lambda r: r["state"] in ("success", "failed"),
            TIMEOUT,
            1.0,
        )
        assert run["state"] == "success", run
    finally:
        running.server, running.thread, running.app = harness.start_service(running.settings)
    # The list is served from the database: COMPLETED there means the reconciler picked the run up at start.
    listed = harness.wait_for(
        lambda: tenant.get(EXECUTIONS, params={"pipelineId": p["pipelineId"]}).json()["items"][0],
        lambda e: e["status"] in TERMINAL,
        60,
        1.0,
    )
    assert (listed["executionId"], listed["status"]) == (execution_id, "COMPLETED"), listed


def test_a_run_cleared_in_airflow_while_the_service_is_down_is_followed_after_restart(tenant, running, sales_db):
    table = f"cleared_src_{uuid.uuid4().hex[:8]}"
    p = create_active(tenant, small("cleared", "qa.cleared", source=f"public.{table}"))
    failed = wait_end(tenant, execute(tenant, p["pipelineId"])["executionId"])
    assert failed["status"] == "FAILED", failed
    running.server.should_exit = True
    running.thread.join(timeout=30)
    try:  # while the service is away, someone fixes the source and clears the run in Airflow
        with psycopg.connect(pg_url(sales_db), autocommit=True) as conn:
            conn.execute(f"CREATE TABLE public.{table} AS SELECT * FROM raw_transactions LIMIT 3")
        tasks = ["prepare_staging", "sources.raw", "sinks.out", "cleanup_staging"]
        body = {"dry_run": False, "dag_run_id": failed["executionId"], "task_ids": tasks, "only_failed": False}
        r = running.airflow().post(f"/dags/{p['dagId']}/clearTaskInstances", json=body)
        assert r.status_code == 200, r.text
    finally:
        running.server, running.thread, running.app = harness.start_service(running.settings)
    done = harness.wait_for(
        lambda: tenant.get(EXECUTIONS, params={"pipelineId": p["pipelineId"]}).json()["items"][0],
        lambda e: e["status"] == "COMPLETED",
        TIMEOUT,
        1.0,
    )
    assert (done["executionId"], done["status"], done["errorMessage"]) == (failed["executionId"], "COMPLETED", None)


def test_runs_with_one_run_id_in_two_dags_stage_apart(tenant, running, sales_db, warehouse_db):
    """Airflow's own run ids (`manual__<time>`, `scheduled__<time>`) repeat across DAGs; two pipelines staging in
    one database must still get a staging schema each (it is named from the DAG and the run)."""
    af = running.airflow()
    pipelines = [create_active(tenant, small(f"twin-{i}", f"qa.twin_{i}")) for i in (1, 2)]
    run_id = f"manual__shared-{uuid.uuid4().hex[:8]}"
    for p in pipelines:  # both at once, straight in Airflow, under the same run id
        r = af.post(f"/dags/{p['dagId']}/dagRuns", json={"dag_run_id": run_id, "logical_date": None})
        assert r.status_code == 200, r.text
    for p in pipelines:
        run = harness.wait_for(
            lambda p=p: af.get(f"/dags/{p['dagId']}/dagRuns/{run_id}").json(),
            lambda r: r["state"] in ("success", "failed"),
            TIMEOUT,
            1.0,
        )
        assert run["state"] == "success", run
    schemas = [
        af.get(f"/dags/{p['dagId']}/dagRuns/{run_id}/taskInstances/prepare_staging/xcomEntries/return_value").json()
        for p in pipelines
    ]
    names = [s["value"] for s in schemas]
    assert names[0] != names[1] and all(str(n).startswith("stg_") for n in names), schemas
    rows = query(warehouse_db, "SELECT (SELECT count(*) FROM qa.twin_1), (SELECT count(*) FROM qa.twin_2)")[0]
    expected = query(sales_db, "SELECT count(*) FROM raw_transactions")[0][0]
    assert rows == (expected, expected), (rows, expected)  # each its own copy, neither doubled nor missing
