"""Monitoring metrics through a real Airflow: two runs of the example and one of a copy that divides by zero;
the pipeline's metrics count them (success rate, p95 of the runs' real durations, rows from OpenLineage), the
tenant's report names the failing task and its error, a viewer reads them and another tenant sees nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.conftest import TERMINAL, create_active, example

pytestmark = pytest.mark.e2e
URL = "/v1/pipelines/monitoring/metrics"


def start(api: httpx.Client, pipeline_id: str) -> str:
    resp = api.post(f"/v1/pipelines/{pipeline_id}/execute", json={})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["executionId"])


def finish(api: httpx.Client, execution_id: str) -> dict[str, Any]:
    done = harness.wait_for(
        lambda: api.get(f"/v1/pipelines/executions/{execution_id}").json(), lambda e: e["status"] in TERMINAL, 180, 1.0
    )
    return dict(done)


def test_metrics_and_report_of_real_runs(tenant: httpx.Client, running: harness.Running) -> None:
    good = create_active(tenant, example("metered", "qa.metered"))
    body = example("metered-boom", "qa.metered_boom")
    body["definition"]["transformations"][0]["sql"] = "SELECT 1 / 0 AS boom FROM raw_transactions"
    del body["definition"]["quality_checks"]
    bad = create_active(tenant, body)
    first, failing = start(tenant, good["pipelineId"]), start(tenant, bad["pipelineId"])
    assert finish(tenant, first)["status"] == "COMPLETED"
    failed = finish(tenant, failing)
    assert failed["status"] == "FAILED", failed
    assert finish(tenant, start(tenant, good["pipelineId"]))["status"] == "COMPLETED"

    # Rows come from the runs' OpenLineage events, which may land a moment after Airflow marks the run done.
    params = {"pipelineId": good["pipelineId"], "period": "1h"}
    mine = harness.wait_for(
        lambda: tenant.get(URL, params=params).json(), lambda b: b["metrics"]["totalRowsProcessed"] > 0, 30, 1.0
    )
    m = mine["metrics"]
    assert (m["executionCount"], m["completedCount"], m["failedCount"], m["successRate"]) == (2, 2, 0, 1.0), m
    assert m["p95DurationMs"] > 0 and m["avgDurationMs"] > 0 and m["p95DurationMs"] >= m["avgDurationMs"], m
    assert m["totalCostUsd"] > 0, m
    assert [(d["executionCount"], d["status"]) for d in mine["history"]] in ([(2, "COMPLETED")], [(1, "COMPLETED")] * 2)

    boom = tenant.get(URL, params={"pipelineId": bad["pipelineId"], "period": "1h"}).json()["metrics"]
    assert (boom["executionCount"], boom["failedCount"], boom["successRate"]) == (1, 1, 0.0), boom

    body = tenant.get(URL, params={"period": "24h"}).json()
    assert (body["metrics"]["executionCount"], body["metrics"]["successRate"]) == (3, round(2 / 3, 4)), body
    report = body["report"]
    assert report["mostFailingPipelines"][0]["pipelineId"] == bad["pipelineId"], report
    failures = report["failuresByTask"]
    assert [f["pipelineId"] for f in failures] == [bad["pipelineId"]] and failures[0]["failures"] == 1, failures
    failed_task = failures[0]["taskId"]
    assert "transformations" in failed_task, failures
    assert any(t["taskId"] == failed_task and t["state"] == "failed" for t in failed["tasks"]), failed["tasks"]
    top = report["topErrors"][0]
    assert top["message"] == failed["errorMessage"] and top["count"] == 1, (top, failed)
    assert failed_task in top["message"] and "division by zero" in top["message"].lower(), top
    assert {b["pipelineId"] for b in report["bottlenecks"]} == {good["pipelineId"], bad["pipelineId"]}, report
    assert all(0 < b["share"] <= 1 for b in report["bottlenecks"]), report
    assert {p["pipelineId"] for p in report["slowestPipelines"]} == {good["pipelineId"], bad["pipelineId"]}

    viewer = running.client(tenant=tenant.headers["X-Tenant-ID"], roles=("viewer",))
    assert viewer.get(URL, params=params).json()["metrics"]["executionCount"] == 2
    stranger = running.client(tenant="t" + uuid.uuid4().hex[:10])
    resp = stranger.get(URL, params=params)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found", resp.text
    theirs = stranger.get(URL, params={"period": "24h"}).json()
    assert theirs["metrics"]["executionCount"] == 0 and theirs["report"]["topErrors"] == [], theirs
    bad_period = tenant.get(URL, params={"period": "2w"})
    assert bad_period.status_code == 400 and bad_period.json()["error"]["details"][0]["path"] == "period"
