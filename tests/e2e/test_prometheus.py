"""GET /metrics through a real Airflow: the example runs to COMPLETED, and the scrape shows it — executions by
status from the database, the service's calls to Airflow timed, the execute route's requests counted."""

from __future__ import annotations

import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import harness
from tests.e2e.conftest import create_active, example, run_to_end

pytestmark = pytest.mark.e2e


def scrape(running: harness.Running) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    resp = httpx.get(f"{running.url}/metrics", timeout=30)  # no credentials, like /health
    assert resp.status_code == 200, resp.text
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(resp.text)}


def test_metrics_reflect_a_completed_run_of_the_example(running: harness.Running, tenant: httpx.Client) -> None:
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    pipeline = create_active(tenant, example(name, f"public.metrics_{uuid.uuid4().hex[:8]}"))
    done = run_to_end(tenant, pipeline["pipelineId"])
    assert done["status"] == "COMPLETED", done

    families = scrape(running)
    executions = {labels["status"]: v for _, labels, v in families["pipeline_executions"]}
    assert executions["COMPLETED"] >= 1

    airflow_calls = [
        (labels, v)
        for n, labels, v in families["pipeline_airflow_call_duration_seconds"]
        if n == "pipeline_airflow_call_duration_seconds_count"
    ]
    assert sum(v for _, v in airflow_calls) > 0
    endpoints = {labels["endpoint"] for labels, _ in airflow_calls}
    assert "/dags/{dag_id}/dagRuns" in endpoints, endpoints  # the trigger, by its template
    assert not any(pipeline["pipelineId"] in e or name in e for e in endpoints), endpoints

    requests = {
        (labels["route"], labels["method"], labels["status"]): v
        for n, labels, v in families["pipeline_http_request_duration_seconds"]
        if n == "pipeline_http_request_duration_seconds_count"
    }
    assert requests[("/v1/pipelines/{pipeline_id}/execute", "POST", "202")] >= 1
    assert requests[("/v1/pipelines/executions/{execution_id}", "GET", "200")] >= 1  # the polls of run_to_end
    assert all(pipeline["pipelineId"] not in route and done["executionId"] not in route for route, _, _ in requests)
    depth = {labels["outbox"]: v for _, labels, v in families["pipeline_outbox_depth"]}
    assert set(depth) == {
        "executions_unsubmitted",
        "connections_unsynced",
        "lineage_unforwarded",
        "pipelines_undeployed",
    }
