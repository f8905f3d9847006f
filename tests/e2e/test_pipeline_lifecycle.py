"""Pipelines and executions through a real Airflow: failures, cancel, update, delete, isolation."""

from __future__ import annotations

import copy

import pytest

from dag_factory.operators.staging import staging_schema
from service.pipelines import dagfile
from tests.e2e import harness
from tests.e2e.conftest import TERMINAL, create_active, example, query, run_to_end, wait_status

pytestmark = pytest.mark.e2e


def test_a_failing_error_check_fails_the_run_and_a_warn_check_does_not(tenant, warehouse_db):
    checks = [
        {
            "name": "amount_small",
            "dataset": "daily_transactions",
            "expectation": "expect_column_values_to_be_between",
            "kwargs": {"column": "amount", "min_value": 0, "max_value": 10},
            "severity": "warn",
        },
    ]
    warned = create_active(tenant, example("warned", "qa.warned", quality_checks=checks))
    done = run_to_end(tenant, warned["pipelineId"])
    assert done["status"] == "COMPLETED", done
    logs = "\n".join(
        tenant.get(
            f"/v1/pipelines/executions/{done['executionId']}/logs",
            params={"task": "quality.daily_transactions", "lines": 1000},
        ).json()["lines"]
    )
    assert "check amount_small" in logs and "FAILED" in logs

    checks[0]["severity"] = "error"
    failing = create_active(tenant, example("failing", "qa.failing", quality_checks=checks))
    done = run_to_end(tenant, failing["pipelineId"])
    assert done["status"] == "FAILED", done
    assert "quality.daily_transactions" in done["errorMessage"] and "amount_small" in done["errorMessage"]
    states = {t["taskId"]: t["state"] for t in done["tasks"]}
    assert states["sinks.daily_transactions"] == "success" and states["quality.daily_transactions"] == "failed"
    assert states["cleanup_staging"] == "success"  # the teardown still dropped the staging schema
    schema = staging_schema(done["executionId"], failing["dagId"])  # this run's (other tests' runs may be going)
    setup_log = tenant.get(
        f"/v1/pipelines/executions/{done['executionId']}/logs", params={"task": "prepare_staging", "lines": 100}
    ).json()["lines"]
    assert any(f"staging schema {schema} ready" in line for line in setup_log), setup_log
    assert query(warehouse_db, f"SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{schema}'") == [
        (0,)
    ]


def test_parameters_reach_the_sql_and_bad_ones_are_refused(tenant, sales_db, warehouse_db):
    p = create_active(tenant, example("params", "qa.params"))
    r = tenant.post(f"/v1/pipelines/{p['pipelineId']}/execute", json={"parameters": {"start_date": "Feb 3"}})
    assert r.status_code == 400 and r.json()["error"]["details"][0]["path"] == "parameters.start_date"
    done = run_to_end(tenant, p["pipelineId"], {"start_date": "2026-02-03", "end_date": "2026-02-04"})
    assert done["status"] == "COMPLETED", done
    expected = query(
        sales_db,
        "SELECT count(*) FROM raw_transactions WHERE created_at >= '2026-02-03' "
        "AND created_at < '2026-02-04' AND amount > 0",
    )[0][0]
    assert query(warehouse_db, "SELECT count(*), min(sale_date)::text, max(sale_date)::text FROM qa.params") == [
        (expected, "2026-02-03", "2026-02-03")
    ]


def test_cancel_stops_a_sleeping_task(tenant, running, warehouse_db):
    body = example("sleepy", "qa.sleepy")
    body["definition"]["transformations"][0]["sql"] = (
        "SELECT id AS transaction_id, product_id, amount, created_at::date AS sale_date "
        "FROM raw_transactions, (SELECT pg_sleep(300)) AS nap WHERE amount > 0"
    )
    p = create_active(tenant, body)
    execution_id = tenant.post(f"/v1/pipelines/{p['pipelineId']}/execute", json={}).json()["executionId"]
    sleeping = harness.wait_for(
        lambda: tenant.get(f"/v1/pipelines/executions/{execution_id}").json(),
        lambda e: e["progress"]["currentTask"] == "transformations.clean_transactions",
        120,
    )
    assert sleeping["status"] == "RUNNING", sleeping
    r = tenant.post(f"/v1/pipelines/executions/{execution_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
    # Airflow stops the sleeping task, runs the teardown (which drops the staging schema), and the run
    # ends failed: the killed task's query must not keep holding locks that would block the teardown.
    af = running.airflow()
    run = harness.wait_for(
        lambda: af.get(f"/dags/{p['dagId']}/dagRuns/{execution_id}").json(), lambda r: r["state"] != "running", 90
    )
    assert run["state"] == "failed"
    tasks = {
        t["task_id"]: t["state"]
        for t in af.get(f"/dags/{p['dagId']}/dagRuns/{execution_id}/taskInstances").json()["task_instances"]
    }
    assert tasks["transformations.clean_transactions"] == "failed" and tasks["cleanup_staging"] == "success"
    assert query(
        warehouse_db,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_sleep(300)%%' AND pid <> pg_backend_pid()",
    ) == [(0,)]
    assert tenant.get(f"/v1/pipelines/executions/{execution_id}").json()["status"] == "CANCELLED"
    r = tenant.post(f"/v1/pipelines/executions/{execution_id}/cancel")
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"


def test_update_redeploys_and_keeps_the_old_version(tenant, running):
    p = create_active(tenant, example("evolving", "qa.evolving"))
    body = example("evolving", "qa.evolving")
    body["version"] = "1.1.0"
    body["definition"]["orchestration"]["max_active_runs"] = 3
    r = tenant.put(f"/v1/pipelines/{p['pipelineId']}", json=body)
    assert r.status_code == 200 and r.json()["revision"] == 2
    updated = wait_status(tenant, p["pipelineId"], {"ACTIVE", "INVALID"})
    assert updated["status"] == "ACTIVE" and updated["version"] == "1.1.0"
    assert running.airflow().get(f"/dags/{p['dagId']}").json()["max_active_runs"] == 3
    old = tenant.get(f"/v1/pipelines/{p['pipelineId']}/versions/1").json()
    assert old["version"] == "1.0.0" and old["definition"]["orchestration"]["max_active_runs"] == 1
    assert run_to_end(tenant, p["pipelineId"])["status"] == "COMPLETED"


def test_airflow_import_error_marks_only_that_pipeline_invalid(tenant, running, monkeypatch):
    healthy = create_active(tenant, example("healthy", "qa.healthy"))
    real_render = dagfile.render

    def broken_render(**kwargs):
        return real_render(**kwargs) + "\nraise RuntimeError('deliberately broken for this test')\n"

    monkeypatch.setattr(dagfile, "render", broken_render)
    r = tenant.post("/v1/pipelines", json=example("broken", "qa.broken"))
    broken = wait_status(tenant, r.json()["pipelineId"], {"ACTIVE", "INVALID"}, timeout=60)
    monkeypatch.undo()
    assert broken["status"] == "INVALID"
    assert "deliberately broken for this test" in broken["statusDetail"]
    r = tenant.post(f"/v1/pipelines/{broken['pipelineId']}/execute", json={})
    assert r.status_code == 409
    assert tenant.get(f"/v1/pipelines/{healthy['pipelineId']}").json()["status"] == "ACTIVE"
    assert run_to_end(tenant, healthy["pipelineId"])["status"] == "COMPLETED"


def test_delete_removes_the_dag_and_connections_in_use_are_protected(tenant, running):
    p = create_active(tenant, example("doomed", "qa.doomed"))
    conns = {c["name"]: c["connectionId"] for c in tenant.get("/v1/pipelines/connections").json()["items"]}
    r = tenant.delete(f"/v1/pipelines/connections/{conns['warehouse']}")
    assert r.status_code == 409 and "doomed" in r.json()["error"]["message"]
    dag_file = running.settings.dags_dir / f"pipeline_{p['dagId']}.py"
    assert dag_file.exists()
    assert tenant.delete(f"/v1/pipelines/{p['pipelineId']}").status_code == 204
    assert tenant.get(f"/v1/pipelines/{p['pipelineId']}").status_code == 404
    assert not dag_file.exists()
    assert running.airflow().get(f"/dags/{p['dagId']}").status_code == 404
    assert tenant.delete(f"/v1/pipelines/connections/{conns['warehouse']}").status_code == 204
    assert running.airflow().get(f"/connections/{tenant.headers['X-Tenant-ID']}.warehouse").status_code == 404


def test_another_tenant_sees_nothing(tenant, running):
    p = create_active(tenant, example("private", "qa.private"))
    done = run_to_end(tenant, p["pipelineId"])
    other = running.client(tenant="intruder")
    assert other.get(f"/v1/pipelines/{p['pipelineId']}").status_code == 404
    assert other.get(f"/v1/pipelines/executions/{done['executionId']}").status_code == 404
    assert other.get(f"/v1/pipelines/executions/{done['executionId']}/logs").status_code == 404
    assert other.post(f"/v1/pipelines/{p['pipelineId']}/execute", json={}).status_code == 404
    assert other.get("/v1/pipelines").json()["total"] == 0
    assert done["status"] in TERMINAL
    viewer = running.client(tenant=tenant.headers["X-Tenant-ID"], roles=("viewer",))
    assert viewer.get(f"/v1/pipelines/{p['pipelineId']}").status_code == 200
    assert viewer.post(f"/v1/pipelines/{p['pipelineId']}/execute", json={}).status_code == 403
    assert copy.deepcopy(done)["pipelineId"] == p["pipelineId"]
