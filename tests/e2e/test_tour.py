"""The README's API tour, step by step, against a real Airflow and PostgreSQL."""

from __future__ import annotations

import json
import os

import pytest

from tests.e2e import harness
from tests.e2e.conftest import EXAMPLE, REPO, TERMINAL, connection_body, query, wait_status

pytestmark = pytest.mark.e2e

# The tenant of the admin token `make up` prints: the README's exported secret variable names it.
TENANT = "default"
SECRET_VAR = "PIPELINE_SECRET_DEFAULT__SALES_DB_CREDENTIALS"  # as the README exports it, before `make up`

EXPECTED_SQL = """
    SELECT count(*) FROM public.raw_transactions
    WHERE created_at >= %s AND created_at < %s AND amount > 0
"""


def test_tour_runs_the_example_into_the_warehouse(running, sales_db, warehouse_db, monkeypatch):
    assert f"export {SECRET_VAR}=" in (REPO / "README.md").read_text()  # the tour exports what we set here
    api = running.client(tenant=TENANT)
    # Connections: one through a secret reference (environment), one with inline credentials.
    monkeypatch.setenv(SECRET_VAR, json.dumps({"username": "postgres", "password": "s3cr3t-tour"}))
    r = api.post(
        "/v1/pipelines/connections",
        json=connection_body(
            "sales-database", sales_db, credentialSecretRef="sales-db-credentials", properties={"sslMode": "disable"}
        ),
    )
    assert r.status_code == 201, r.text
    assert "s3cr3t" not in r.text and r.json()["credentialSecretRef"] == "sales-db-credentials"
    r = api.post(
        "/v1/pipelines/connections",
        json=connection_body(
            "warehouse", warehouse_db, credentials={"username": "postgres", "password": "inline-s3cr3t"}
        ),
    )
    assert r.status_code == 201 and "inline-s3cr3t" not in r.text
    assert {c["name"] for c in api.get("/v1/pipelines/connections").json()["items"]} == {"sales-database", "warehouse"}

    # Create the example: CREATED at once, ACTIVE when Airflow serves the DAG.
    r = api.post("/v1/pipelines", json=EXAMPLE)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "CREATED" and created["name"] == "daily-sales-etl"
    pipeline = wait_status(api, created["pipelineId"], {"ACTIVE", "INVALID"}, timeout=60)
    assert pipeline["status"] == "ACTIVE", pipeline

    af = running.airflow()
    dag = af.get(f"/dags/{pipeline['dagId']}").json()
    assert dag["is_paused"] is False and dag["max_active_runs"] == 1
    assert pipeline["dagId"] == "default.daily-sales-etl"  # as the README names it in the Airflow UI
    assert {"tenant:default", "pipeline:daily-sales-etl", "sales"} <= {t["name"] for t in dag["tags"]}
    dag_file = (running.settings.dags_dir / "pipeline_default.daily-sales-etl.py").read_text()
    assert "s3cr3t" not in dag_file and "password" not in dag_file

    # Execute with the declared parameters; poll to COMPLETED.
    r = api.post(
        f"/v1/pipelines/{pipeline['pipelineId']}/execute",
        json={"parameters": {"start_date": "2026-02-01", "end_date": "2026-02-12"}, "priority": "NORMAL"},
    )
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status"] == "QUEUED" and accepted["engine"] == "airflow" and accepted["submittedAt"]
    execution_id = accepted["executionId"]
    seen: set[str] = set()

    def fetch():
        body = api.get(f"/v1/pipelines/executions/{execution_id}").json()
        seen.add(body["status"])
        return body

    done = harness.wait_for(fetch, lambda e: e["status"] in TERMINAL, timeout=180, interval=0.5)
    assert done["status"] == "COMPLETED", done
    assert "RUNNING" in seen
    assert done["progress"] == {"totalTasks": 8, "completedTasks": 8, "currentTask": None, "percentage": 100}
    assert done["startedAt"] and done["finishedAt"] and done["finishedAt"] >= done["startedAt"]
    # The Airflow run id is the execution id.
    assert af.get(f"/dags/{pipeline['dagId']}/dagRuns/{execution_id}").json()["state"] == "success"

    # The rows are in the warehouse, joined with the product lookup.
    expected = query(sales_db, EXPECTED_SQL, "2026-02-01", "2026-02-12")[0][0]
    assert expected > 0
    rows = query(
        warehouse_db,
        "SELECT count(*), count(category), min(sale_date)::text, max(sale_date)::text "
        "FROM analytics.daily_transactions",
    )[0]
    assert rows == (expected, expected, "2026-02-01", "2026-02-11")

    # Task logs come back as readable lines, for one task or all of them.
    r = api.get(
        f"/v1/pipelines/executions/{execution_id}/logs", params={"task": "quality.daily_transactions", "lines": 500}
    )
    assert r.status_code == 200
    text = "\n".join(r.json()["lines"])
    assert "transaction_id_not_null" in text and "passed" in text
    r = api.get(f"/v1/pipelines/executions/{execution_id}/logs", params={"lines": 20})
    assert len(r.json()["lines"]) == 20 and all(line.startswith("[") for line in r.json()["lines"])

    # Listing executions of the pipeline, filtered by status.
    r = api.get("/v1/pipelines/executions", params={"pipelineId": pipeline["pipelineId"], "status": "COMPLETED"})
    assert [e["executionId"] for e in r.json()["items"]] == [execution_id]

    # Merge on transaction_id: a second run with a wider window adds the new days, duplicates none.
    r = api.post(
        f"/v1/pipelines/{pipeline['pipelineId']}/execute",
        json={"parameters": {"start_date": "2026-02-05", "end_date": "2026-02-15"}},
    )
    second = harness.wait_for(
        lambda: api.get(f"/v1/pipelines/executions/{r.json()['executionId']}").json(),
        lambda e: e["status"] in TERMINAL,
        timeout=180,
        interval=1.0,
    )
    assert second["status"] == "COMPLETED", second
    expected_union = query(sales_db, EXPECTED_SQL, "2026-02-01", "2026-02-15")[0][0]
    assert query(warehouse_db, "SELECT count(*), count(DISTINCT transaction_id) FROM analytics.daily_transactions")[
        0
    ] == (expected_union, expected_union)

    # No secret was written anywhere the service or Airflow writes files.
    for path in running.settings.data_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            data = path.read_bytes()
            assert b"s3cr3t-tour" not in data and b"inline-s3cr3t" not in data, path
    os.environ.pop(SECRET_VAR, None)
