"""GET /metrics (service/observability.py): the Prometheus exposition, its labels bounded (route templates,
never raw paths or tenant data), executions and outbox depths read from the database, Airflow calls timed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import sessionmaker

from service.airflow.client import endpoint_template
from service.errors import AirflowUnavailable
from service.executions.models import Execution
from service.main import create_app
from service.observability import FAST_PATHS, UNMATCHED
from service.workers import reconcile_step
from tests.service.fake_airflow import task_ids
from tests.service.helpers import EXAMPLE, Api, Service, expect_error

FAMILIES = {
    "pipeline_http_request_duration_seconds": "histogram",
    "pipeline_executions": "gauge",
    "pipeline_outbox_depth": "gauge",
    "pipeline_airflow_call_duration_seconds": "histogram",
    "pipeline_airflow_call_errors": "counter",
    "pipeline_alert_deliveries": "counter",
    "pipeline_metrics_database_up": "gauge",
}


def scrape(svc: Service) -> dict[str, Any]:
    resp = svc.client.get("/metrics")  # no credentials: like /health
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(resp.text)}


def samples(families: dict[str, Any], name: str, suffix: str = "") -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for s in families[name].samples if s.name == name + suffix]


def request_count(families: dict[str, Any], route: str, method: str, status: str) -> float:
    want = {"route": route, "method": method, "status": status}
    return sum(
        v for labels, v in samples(families, "pipeline_http_request_duration_seconds", "_count") if labels == want
    )


def test_the_exposition_has_every_family(svc: Service) -> None:
    families = scrape(svc)
    for name, kind in FAMILIES.items():
        assert families[name].type == kind, name
    assert samples(families, "pipeline_metrics_database_up") == [({}, 1.0)]
    outboxes = {labels["outbox"] for labels, _ in samples(families, "pipeline_outbox_depth")}
    assert outboxes == {"executions_unsubmitted", "connections_unsynced", "lineage_unforwarded", "pipelines_undeployed"}
    alert = {labels["outcome"]: v for labels, v in samples(families, "pipeline_alert_deliveries", "_total")}
    assert alert == {"delivered": 0.0, "failed": 0.0, "abandoned": 0.0}


def test_request_labels_are_route_templates_and_tenant_data_never_appears(
    svc: Service, acme: Api, active: dict[str, Any]
) -> None:
    pipeline_id = active["pipelineId"]
    before = request_count(scrape(svc), "/v1/pipelines/{pipeline_id}", "GET", "200")
    assert acme.get(f"/v1/pipelines/{pipeline_id}").status_code == 200
    expect_error(acme.get("/v1/pipelines/no-such-pipeline"), 404, "not_found")
    assert acme.get("/no/such/path/at-all").status_code == 404
    families = scrape(svc)
    assert request_count(families, "/v1/pipelines/{pipeline_id}", "GET", "200") == before + 1
    assert request_count(families, "/v1/pipelines/{pipeline_id}", "GET", "404") == 1
    assert request_count(families, UNMATCHED, "GET", "404") == 1
    assert request_count(families, "/metrics", "GET", "200") >= 1
    text = svc.client.get("/metrics").text
    for private in (pipeline_id, "acme", "no-such-pipeline", "/no/such/path", active["name"]):
        assert private not in text, private


def test_the_fast_paths_are_counted_under_their_route_templates(
    svc: Service, acme: Api, active: dict[str, Any]
) -> None:
    svc.settings.status_cache_seconds = 60
    execution = acme.execute(active["pipelineId"])
    for _ in range(3):  # the first goes through the app and fills the cache, the others are the fast path's
        assert acme.get(f"/v1/pipelines/executions/{execution['executionId']}").status_code == 200
    lineage = svc.client.post("/api/v1/lineage", content=b"{}", headers={"Authorization": "Bearer wrong"})
    assert lineage.status_code == 401
    families = scrape(svc)
    assert request_count(families, "/v1/pipelines/executions/{execution_id}", "GET", "200") == 3
    assert request_count(families, "/api/v1/lineage", "POST", "401") == 1
    assert execution["executionId"] not in svc.client.get("/metrics").text


def test_the_fast_path_templates_are_the_routes_templates(svc: Service) -> None:
    routes = {(m, r.path) for r in svc.app.routes if isinstance(r, APIRoute) for m in r.methods}
    for method, pattern, template in FAST_PATHS:
        assert (method, template) in routes
        assert pattern.match(template)


def test_executions_by_status_match_the_database(svc: Service, acme: Api, active: dict[str, Any]) -> None:
    done = acme.execute(active["pipelineId"])
    svc.dispatch()
    tasks = dict.fromkeys(task_ids(EXAMPLE["definition"]), "success")
    svc.fake.set_run(done["dagId"], done["executionId"], "success", tasks)
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)
    acme.execute(active["pipelineId"])  # queued, not submitted yet: in the outbox
    with svc.app.state.sessions() as s:
        stored = dict(s.execute(select(Execution.status, func.count()).group_by(Execution.status)).all())
    assert stored == {"COMPLETED": 1, "QUEUED": 1}
    families = scrape(svc)
    exposed = {labels["status"]: v for labels, v in samples(families, "pipeline_executions")}
    assert exposed == {"QUEUED": 1, "RUNNING": 0, "COMPLETED": 1, "FAILED": 0, "CANCELLED": 0}
    depth = {labels["outbox"]: v for labels, v in samples(families, "pipeline_outbox_depth")}
    assert depth["executions_unsubmitted"] == 1
    assert depth["pipelines_undeployed"] == 0


def test_an_unpublished_pipeline_and_an_unsynced_connection_are_outbox_depth(svc: Service, api: Api) -> None:
    api.create_connection("warehouse")  # the fake Airflow is down: the connection waits for the worker
    svc.fake.down = True
    api.create_connection("sales-database")
    families = scrape(svc)
    depth = {labels["outbox"]: v for labels, v in samples(families, "pipeline_outbox_depth")}
    assert depth["connections_unsynced"] == 1
    svc.fake.down = False
    svc.sync_connections()
    depth = {labels["outbox"]: v for labels, v in samples(scrape(svc), "pipeline_outbox_depth")}
    assert depth["connections_unsynced"] == 0


def test_airflow_calls_are_timed_by_endpoint_template_and_errors_counted(
    svc: Service, acme: Api, active: dict[str, Any]
) -> None:
    families = scrape(svc)
    calls = samples(families, "pipeline_airflow_call_duration_seconds", "_count")
    endpoints = {labels["endpoint"] for labels, _ in calls}
    assert "/parseDagFile/{file_token}" in endpoints  # the publish above
    assert all(active["pipelineId"] not in e and "pipeline_" not in e for e in endpoints), endpoints
    assert samples(families, "pipeline_airflow_call_errors", "_total") == []
    svc.fake.down = True
    acme.execute(active["pipelineId"])
    with pytest.raises(AirflowUnavailable):
        svc.dispatch()
    errors = samples(scrape(svc), "pipeline_airflow_call_errors", "_total")
    assert errors == [
        ({"endpoint": "/dags/{dag_id}/dagRuns", "method": "POST", "reason": "airflow_unavailable"}, 1.0)
    ], errors


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/dags/pipeline_acme_x", "/dags/{dag_id}"),
        ("/dags/d/dagRuns/manual__2026", "/dags/{dag_id}/dagRuns/{dag_run_id}"),
        ("/dags/~/dagRuns", "/dags/~/dagRuns"),
        (
            "/dags/d/dagRuns/r/taskInstances/t/logs/2",
            "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/logs/{try_number}",
        ),
        ("/parseDagFile/abc", "/parseDagFile/{file_token}"),
        ("/connections?limit=100", "/connections"),
        ("/surprise/tenant-secret", "/{other}/{other}"),
    ],
)
def test_endpoint_templates(path: str, template: str) -> None:
    assert endpoint_template(path) == template


def test_each_app_has_its_own_registry(svc: Service) -> None:
    other = create_app(svc.settings)  # a second app in the same process: no duplicate registration
    assert other.state.metrics.registry is not svc.app.state.metrics.registry
    other.state.airflow.close()
    other.state.engine.dispose()


def test_a_database_outage_is_a_gauge_not_a_failed_scrape(svc: Service, tmp_path: Path) -> None:
    state = svc.app.state
    working = state.sessions
    state.sessions = sessionmaker(create_engine(f"sqlite:///{tmp_path}/missing/dir/x.db"))  # cannot be opened
    try:
        families = scrape(svc)
    finally:
        state.sessions = working
    assert samples(families, "pipeline_metrics_database_up") == [({}, 0.0)]
    assert "pipeline_executions" not in families
    assert samples(families, "pipeline_alert_deliveries", "_total")  # the rest is still exposed
