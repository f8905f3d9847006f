"""Airflow assets and data schedules through a real Airflow: the example's sink is an asset in Airflow's REST
API (the tenant's own), a pipeline scheduled on it (`schedule.onDatasets`) runs by itself once the example
ran, and that run is an execution of its data schedule; another tenant can neither name the dataset without
writing it nor be triggered by the first tenant's write of the same table."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.conftest import EXAMPLE, TERMINAL, create_active, query, run_to_end
from tests.e2e.fixtures import connection_body

pytestmark = pytest.mark.e2e
EXECUTIONS = "/v1/pipelines/executions"
SCHEDULES = "/v1/pipelines/schedules"
SINK_TABLE = "analytics.daily_transactions"
WAIT = 180  # two cores shared with other engineers' Airflows


def summary(name: str, fqn: str, table: str) -> dict[str, Any]:
    """Reads the example's sink table, writes one row per category; runs when `fqn` has been written."""
    return {
        "name": name,
        "version": "1.0.0",
        "definition": {
            "sources": {"daily": {"type": "postgres", "connection": "warehouse", "table": SINK_TABLE}},
            "transformations": [{"name": "by_category", "type": "aggregate", "input": "daily", "group_by": ["category"],
                                 "aggregates": {"total": {"function": "sum", "column": "amount"}}}],
            "sinks": {"out": {"type": "postgres", "connection": "warehouse", "table": table, "input": "by_category",
                              "mode": "overwrite"}},
            "orchestration": {"retries": 1, "retry_delay_seconds": 5},
            "schedule": {"onDatasets": [fqn]},
        },
    }  # fmt: skip


def etl(name: str) -> dict[str, Any]:
    body = {**EXAMPLE, "name": name}
    body["definition"] = {**EXAMPLE["definition"], "orchestration": {"retries": 1, "retry_delay_seconds": 5}}
    return body


def executions_of(api: httpx.Client, pipeline_id: str) -> list[dict[str, Any]]:
    resp = api.get(EXECUTIONS, params={"pipelineId": pipeline_id})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["items"])


def runs_of(airflow: httpx.Client, dag_id: str) -> list[dict[str, Any]]:
    return list(airflow.get(f"/dags/{dag_id}/dagRuns").json().get("dag_runs", []))


def assets_named(airflow: httpx.Client, table: str) -> list[dict[str, Any]]:
    resp = airflow.get("/assets", params={"uri_pattern": table, "limit": 100})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["assets"])


def second_tenant(running: harness.Running, sales_db: str, warehouse_db: str) -> httpx.Client:
    api = running.client(tenant="t" + uuid.uuid4().hex[:10])
    for name, db in (("sales-database", sales_db), ("warehouse", warehouse_db)):
        resp = api.post("/v1/pipelines/connections", json=connection_body(name, db))
        assert resp.status_code == 201, resp.text
    return api


def test_a_pipeline_scheduled_on_the_examples_sink_runs_after_it(
    running: harness.Running, tenant: httpx.Client, sales_db: str, warehouse_db: str
) -> None:
    api, airflow = tenant, running.airflow()
    fqn = f"{warehouse_db}.analytics.daily_transactions"
    writer = create_active(api, etl("daily-sales-etl"))
    reader = create_active(api, summary("sales-by-category", fqn, "analytics.sales_by_category"))
    listed = api.get(SCHEDULES, params={"pipelineId": reader["pipelineId"]}).json()
    [entry] = listed["items"]
    assert (entry["type"], entry["onDatasets"]) == ("datasets", [fqn])
    assert entry["scheduleId"] == f"data-{reader['pipelineId']}"

    done = run_to_end(api, writer["pipelineId"])
    assert done["status"] == "COMPLETED", done

    # The reader runs by itself: Airflow's scheduler starts it on the asset event of the writer's sink task,
    # and the service records the run as an execution of the data schedule.
    runs = harness.wait_for(
        lambda: executions_of(api, reader["pipelineId"]), lambda ex: any(e["status"] in TERMINAL for e in ex), WAIT, 1.0
    )
    assert runs, f"no execution of the reader; Airflow runs: {runs_of(airflow, reader['dagId'])}"
    [run] = runs
    assert run["status"] == "COMPLETED", run
    assert run["executionId"].startswith("asset_triggered__") and run["scheduleId"] == entry["scheduleId"]
    # The asset event comes when the sink task succeeds (the writer's checks and teardown may still run).
    sink_ti = airflow.get(
        f"/dags/{writer['dagId']}/dagRuns/{done['executionId']}/taskInstances/sinks.daily_transactions"
    )
    [reader_run] = runs_of(airflow, reader["dagId"])
    written = datetime.fromisoformat(sink_ti.json()["end_date"])
    lag = (datetime.fromisoformat(reader_run["queued_at"]) - written).total_seconds()
    took = (datetime.fromisoformat(reader_run["end_date"]) - written).total_seconds()
    print(f"\nassets: reader run queued {lag:.1f} s, finished {took:.1f} s after the writer's sink task")
    rows = query(warehouse_db, "SELECT category, total FROM analytics.sales_by_category ORDER BY category")
    expected = query(
        warehouse_db, "SELECT category, sum(amount) FROM analytics.daily_transactions GROUP BY category ORDER BY 1"
    )
    assert rows == expected and rows

    # Airflow's Assets view shows the sink: the tenant's asset, written by the writer, scheduling the reader.
    tenant_id = api.headers["X-Tenant-ID"]
    uri = f"postgres://127.0.0.1:5432/{warehouse_db}/analytics/daily_transactions?tenant={tenant_id}"
    [asset] = [a for a in assets_named(airflow, "daily_transactions") if a["uri"] == uri]
    assert asset["name"] == f"{tenant_id}:postgres://127.0.0.1:5432/{fqn}"
    assert writer["dagId"] in {t["dag_id"] for t in asset["producing_tasks"]}
    assert reader["dagId"] in {d["dag_id"] for d in asset["scheduled_dags"]}
    events = airflow.get("/assets/events", params={"asset_id": asset["id"]}).json()["asset_events"]
    sources = [(e["source_dag_id"], e["source_task_id"]) for e in events]
    assert sources == [(writer["dagId"], "sinks.daily_transactions")]
    # ...and the sources as inlets of their tasks.
    raw = [a for a in assets_named(airflow, "raw_transactions") if a["uri"].endswith(f"?tenant={tenant_id}")]
    assert [t["dag_id"] for t in raw[0]["consuming_tasks"]] == [writer["dagId"]]

    # A cron schedule too: Airflow's AssetOrTimeSchedule around the pipeline's own timetable (the plugin's),
    # whose runs are still named after the schedule and recorded as its executions.
    cron = api.post(SCHEDULES, json={"pipelineId": reader["pipelineId"], "cronExpression": "* * * * *"})
    assert cron.status_code == 201, cron.text
    harness.wait_for(lambda: api.get(f"/v1/pipelines/{reader['pipelineId']}").json()["status"], "ACTIVE".__eq__, 60)
    dag = airflow.get(f"/dags/{reader['dagId']}/details").json()
    assert dag["timetable_description"].startswith("Triggered by assets or"), dag
    cron_id = cron.json()["scheduleId"]
    scheduled = harness.wait_for(
        lambda: api.get(EXECUTIONS, params={"scheduleId": cron_id}).json()["items"],
        lambda ex: any(e["status"] in TERMINAL for e in ex),
        WAIT,
        2.0,
    )
    assert scheduled and scheduled[0]["status"] == "COMPLETED", scheduled
    assert scheduled[0]["executionId"].startswith("scheduled__")
    listed = api.get(SCHEDULES, params={"pipelineId": reader["pipelineId"]}).json()["items"]
    assert [s["type"] for s in listed] == ["cron", "datasets"]
    assert api.patch(f"{SCHEDULES}/{cron_id}", json={"enabled": False}).status_code == 200  # quiet for the rest


def test_another_tenant_is_never_triggered_by_the_first_tenants_write(
    running: harness.Running, tenant: httpx.Client, sales_db: str, warehouse_db: str
) -> None:
    a, airflow = tenant, running.airflow()
    b = second_tenant(running, sales_db, warehouse_db)
    fqn = f"{warehouse_db}.analytics.daily_transactions"
    # B may not name a dataset none of its pipelines writes, even though A's does (same database, same table).
    a_writer = create_active(a, etl("daily-sales-etl"))
    resp = b.post("/v1/pipelines", json=summary("b-reader", fqn, "analytics.b_by_category"))
    assert resp.status_code == 400, resp.text
    assert [d["path"] for d in resp.json()["error"]["details"]] == ["definition.schedule.onDatasets[0]"]
    # Once B has a pipeline writing the same table through its own connection, B may; B's writer never runs.
    b_writer = create_active(b, etl("daily-sales-etl"))
    b_reader = create_active(b, summary("b-reader", fqn, "analytics.b_by_category"))
    a_reader = create_active(a, summary("a-reader", fqn, "analytics.a_by_category"))

    assert run_to_end(a, a_writer["pipelineId"])["status"] == "COMPLETED"
    a_runs = harness.wait_for(
        lambda: executions_of(a, a_reader["pipelineId"]), lambda ex: any(e["status"] in TERMINAL for e in ex), WAIT, 1.0
    )
    assert [e["status"] for e in a_runs] == ["COMPLETED"], a_runs
    # By now Airflow's scheduler has handled A's asset event (it started A's reader): B's reader, scheduled on
    # B's asset of the same table, did not run, in Airflow or in the service.
    assert runs_of(airflow, b_reader["dagId"]) == [] and runs_of(airflow, b_writer["dagId"]) == []
    assert executions_of(b, b_reader["pipelineId"]) == []
    # Both tenants' assets of the table are active (in the Assets view, no asset-conflict warning).
    uris = {a_["uri"] for a_ in assets_named(airflow, f"{warehouse_db}/analytics/daily_transactions")}
    for api in (a, b):
        assert f"postgres://127.0.0.1:5432/{fqn.replace('.', '/')}?tenant={api.headers['X-Tenant-ID']}" in uris
    for dag_id in (a_reader["dagId"], b_reader["dagId"], a_writer["dagId"], b_writer["dagId"]):
        warnings = airflow.get("/dagWarnings", params={"dag_id": dag_id}).json()["dag_warnings"]
        assert warnings == [], warnings
    # B sees nothing of A's: A's reader's execution is not B's.
    assert b.get(f"{EXECUTIONS}/{a_runs[0]['executionId']}").status_code == 404
    assert b.get(SCHEDULES, params={"pipelineId": a_reader["pipelineId"]}).json()["items"] == []
