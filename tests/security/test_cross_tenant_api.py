"""Tenant isolation at the API: tenant B reaches none of tenant A's objects, by id or by name, on any route.

Tenant A (acme) owns one object of every kind: connections, a published pipeline with versions, an execution
that ran in (the fake) Airflow with logs, a schedule, a tenant template. Tenant B (globex), an admin, then calls
every /v1 route with A's identifiers. Each route that names an object must answer 404 exactly as for an object
that does not exist (never a 403 that confirms it exists); lists and creates must answer normally. No response
of B's may contain a string of A's (ids, names, hosts, descriptions, log lines) that B did not send itself.

The probe table is checked against the app's routes, so a new /v1 route fails this suite until it is probed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.routing import APIRoute

from tests.security.service_app import running_service
from tests.service.helpers import CONN_PASSWORD, Api, Service, connection_body, example

A, B = "acme", "globex"
NOT_FOUND = {404}


@dataclass
class TenantA:
    """A's identifiers by path parameter (`ids`), the names that also address them (`names`), and every
    string of A's that must never reach B (`markers`)."""

    ids: dict[str, str]
    names: dict[str, str]
    markers: set[str] = field(default_factory=set)


@dataclass
class Probe:
    """One request of B's and the statuses it may get."""

    method: str
    url: str
    body: Any = None
    expected: set[int] = field(default_factory=lambda: NOT_FOUND)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, TenantA]]:
    """One app, tenant A's objects created once: the probes only read them or fail to reach them."""
    with running_service(tmp_path_factory.mktemp("cross-tenant")) as svc:
        yield svc, _seed_tenant_a(svc, svc.api(A))


def _seed_tenant_a(svc: Service, a: Api) -> TenantA:
    """An object of every kind, with distinctive strings, and an execution that ran with a log line."""
    conns = [a.create_connection(n, host="acme-db-7q.example.com") for n in ("sales-database", "warehouse")]
    body = example("acme-secret-etl", description="acme-description-marker-5Yq")
    pipeline = a.create_pipeline(body)
    svc.publish()
    assert a.put(f"/v1/pipelines/{pipeline['pipelineId']}", json={**body, "version": "1.0.1"}).status_code == 200
    svc.publish()
    execution = a.execute(pipeline["pipelineId"])
    svc.dispatch()
    dag_id, run_id = a.execution(execution["executionId"])["dagId"], execution["executionId"]
    task_id = next(iter(svc.fake.task_instances[(dag_id, run_id)]))
    svc.fake.set_run(dag_id, run_id, "running", {task_id: "running"})
    svc.fake.add_log(dag_id, run_id, task_id, {"event": "acme-log-line-marker-Jw2"})
    schedule = a.post(
        "/v1/pipelines/schedules", json={"pipelineId": pipeline["pipelineId"], "cronExpression": "0 3 * * *"}
    )
    assert schedule.status_code == 201, schedule.text
    template = a.post("/v1/pipelines/templates", json=_template("acme/stock_secret"))
    assert template.status_code == 201, template.text
    hook = a.post(
        "/v1/pipelines/monitoring/webhooks",
        json={"name": "acme-hook", "url": "https://hooks.acme-7q.example.com/a", "secret": "acme-secret-0123456789"},
    )
    assert hook.status_code == 201, hook.text
    alert_id = _raise_alert(svc, pipeline["pipelineId"], execution["executionId"])
    ids = {
        "connection_id": conns[0]["connectionId"],
        "pipeline_id": pipeline["pipelineId"],
        "execution_id": execution["executionId"],
        "schedule_id": schedule.json()["scheduleId"],
        "template_id": "acme/stock_secret",
        "revision": "1",
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "webhook_id": hook.json()["webhookId"],
        "alert_id": alert_id,
    }
    names = {"connection_id": "sales-database", "pipeline_id": "acme-secret-etl"}
    markers = {v for k, v in ids.items() if k != "revision"} | {c["connectionId"] for c in conns}
    markers |= {"acme-db-7q.example.com", "acme-description-marker-5Yq", "acme-log-line-marker-Jw2", CONN_PASSWORD}
    markers |= {"acme-secret-etl", "stock_secret", "hooks.acme-7q.example.com", "acme-alert-marker-8Kp"}
    return TenantA(ids, names, markers)


def _raise_alert(svc: Service, pipeline_id: str, execution_id: str) -> str:
    """An OPEN alert of A's, raised as the service raises them (its message carries a marker)."""
    from service.db import session_scope
    from service.monitoring.service import raise_alert

    with session_scope(svc.app.state.sessions) as s:
        alert = raise_alert(
            s,
            tenant_id=A,
            alert_type="RUN_FAILED",
            condition_key=f"RUN_FAILED:{pipeline_id}",
            severity="CRITICAL",
            message="acme-alert-marker-8Kp",
            pipeline_id=pipeline_id,
            execution_id=execution_id,
        )
        assert alert is not None
        return alert.id


def _template(template_id: str) -> dict[str, Any]:
    """A tenant template derived from a shipped one (the same document tests/service uses)."""
    from service.templates import catalog

    doc = json.loads((catalog.templates_dir() / "retail" / "inventory_snapshot.json").read_text())
    doc.update({"id": template_id, "name": f"{template_id} template", "version": "1.0.0"})
    return dict(doc)


def _bodies() -> dict[tuple[str, str], Any]:
    """Valid bodies for the routes that take one: B's request must get past validation to the lookup."""
    schedule = {"cronExpression": "0 4 * * *"}
    return {
        ("PUT", "/v1/pipelines/connections/{connection_id}"): connection_body("sales-database"),
        ("PUT", "/v1/pipelines/{pipeline_id}"): example("acme-secret-etl"),
        ("PUT", "/v1/pipelines/schedules/{schedule_id}"): schedule,
        ("PATCH", "/v1/pipelines/connections/{connection_id}"): {"properties": {"applicationName": "b"}},
        ("PATCH", "/v1/pipelines/{pipeline_id}"): {"description": "b"},
        ("PATCH", "/v1/pipelines/schedules/{schedule_id}"): {"enabled": False},
        ("POST", "/v1/pipelines/{pipeline_id}/execute"): {},
        ("POST", "/v1/pipelines/templates/{template_id}/create"): {"pipelineName": "from-a-template"},
        ("POST", "/v1/airflow/dags/{dag_id}/trigger"): {},
        ("PUT", "/v1/pipelines/{pipeline_id}/budget"): {"monthlyUsd": 1},
        ("POST", "/v1/pipelines/monitoring/alerts/{alert_id}/acknowledge"): {"note": "b"},
        ("PATCH", "/v1/pipelines/monitoring/webhooks/{webhook_id}"): {"enabled": False},
        ("POST", "/v1/pipelines/workflows/{execution_id}/signal"): {
            "signalName": "approval",
            "data": {"approved": True},
        },
    }


# Routes without an object in the path: what B sends, and what B may get back (its own objects, lists).
def _unaddressed(a: TenantA) -> dict[tuple[str, str], list[Probe]]:
    pid = a.ids["pipeline_id"]
    return {
        ("GET", "/v1/pipelines"): [Probe("GET", "/v1/pipelines?size=200", expected={200})],
        ("POST", "/v1/pipelines"): [Probe("POST", "/v1/pipelines", example("acme-secret-etl"), {201})],
        # B has no connections yet: A's connections of the same names must not satisfy B's definition.
        ("POST", "/v1/pipelines/validate"): [Probe("POST", "/v1/pipelines/validate", example("x"), {400})],
        ("GET", "/v1/pipelines/schema"): [Probe("GET", "/v1/pipelines/schema", expected={200})],
        ("GET", "/v1/pipelines/connections"): [Probe("GET", "/v1/pipelines/connections?size=200", expected={200})],
        ("POST", "/v1/pipelines/connections"): [
            Probe("POST", "/v1/pipelines/connections", connection_body(name), {201})
            for name in ("sales-database", "warehouse")
        ],
        ("GET", "/v1/pipelines/executions"): [
            Probe("GET", "/v1/pipelines/executions?size=200", expected={200}),
            Probe("GET", f"/v1/pipelines/executions?pipelineId={pid}", expected={200, 404}),
            Probe("GET", f"/v1/pipelines/executions?scheduleId={a.ids['schedule_id']}", expected={200, 404}),
        ],
        ("GET", "/v1/pipelines/schedules"): [
            Probe("GET", "/v1/pipelines/schedules?size=200", expected={200}),
            Probe("GET", f"/v1/pipelines/schedules?pipelineId={pid}", expected={200, 404}),
        ],
        ("POST", "/v1/pipelines/schedules"): [
            Probe("POST", "/v1/pipelines/schedules", {"pipelineId": pid, "cronExpression": "0 3 * * *"}, {400, 404})
        ],
        ("GET", "/v1/pipelines/templates"): [
            Probe("GET", "/v1/pipelines/templates?size=200", expected={200}),
            Probe("GET", "/v1/pipelines/templates?q=stock_secret", expected={200}),
        ],
        ("POST", "/v1/pipelines/templates"): [
            Probe("POST", "/v1/pipelines/templates", _template("acme/stock_secret"), {400, 403, 404}),
            Probe("POST", "/v1/pipelines/templates", _template(f"{B}/stock"), {201}),
        ],
        ("GET", "/v1/pipelines/templates/compliance-packs"): [
            Probe("GET", "/v1/pipelines/templates/compliance-packs", expected={200})
        ],
        ("GET", "/v1/airflow/dags"): [Probe("GET", "/v1/airflow/dags?size=200", expected={200})],
        # A's datasets (its sink, its sources) are unknown to B: an empty impact, none of A's pipelines.
        ("GET", "/v1/lineage/datasets"): [
            Probe("GET", f"/v1/lineage/datasets?fqn={fqn}", expected={200})
            for fqn in ("x.analytics.daily_transactions", "x.public.raw_transactions")
        ],
        ("GET", "/v1/pipelines/monitoring/alerts"): [
            Probe("GET", "/v1/pipelines/monitoring/alerts?size=200", expected={200}),
            Probe("GET", f"/v1/pipelines/monitoring/alerts?pipelineId={pid}", expected={200, 404}),
        ],
        ("GET", "/v1/pipelines/monitoring/webhooks"): [
            Probe("GET", "/v1/pipelines/monitoring/webhooks", expected={200})
        ],
        ("POST", "/v1/pipelines/monitoring/webhooks"): [
            Probe(
                "POST",
                "/v1/pipelines/monitoring/webhooks",
                {"name": "acme-hook", "url": "https://hooks.example.com/b", "secret": "b-secret-0123456789"},
                {201},
            )
        ],
        ("GET", "/v1/pipelines/monitoring/metrics"): [
            Probe("GET", "/v1/pipelines/monitoring/metrics?period=90d", expected={200}),
            Probe("GET", f"/v1/pipelines/monitoring/metrics?pipelineId={pid}&period=90d"),
        ],
        # A's entries (its definition, its connections' hosts) never reach B, even asked for by id.
        ("GET", "/v1/audit-logs"): [
            Probe("GET", "/v1/audit-logs?size=200", expected={200}),
            Probe("GET", f"/v1/audit-logs?resourceId={pid}", expected={200}),
            Probe("GET", f"/v1/audit-logs?resource=execution&resourceId={a.ids['execution_id']}", expected={200}),
            Probe("GET", f"/v1/audit-logs?resource=connection&resourceId={a.ids['connection_id']}", expected={200}),
            Probe("GET", "/v1/audit-logs?actor=local-admin&action=create", expected={200}),
        ],
        ("GET", "/v1/cost/rate-card"): [Probe("GET", "/v1/cost/rate-card", expected={200})],
        ("GET", "/v1/cost/budget"): [Probe("GET", "/v1/cost/budget", expected={200})],
        ("PUT", "/v1/cost/budget"): [Probe("PUT", "/v1/cost/budget", {"monthlyUsd": 1000}, {200})],
    }


def _addressed(a: TenantA, method: str, path: str) -> list[Probe]:
    """A route naming an object: one probe with A's ids, one with A's names where a name addresses it."""
    body = _bodies().get((method, path))
    variants = [a.ids, {**a.ids, **a.names}] if any(f"{{{p}}}" in path for p in a.names) else [a.ids]
    return [Probe(method, path.format(**ids), body) for ids in variants]


def _v1_routes(svc: Service) -> set[tuple[str, str]]:
    routes = (r for r in svc.app.routes if isinstance(r, APIRoute) and r.path.startswith("/v1/"))
    return {(m, r.path_format.replace(":path", "")) for r in routes for m in r.methods}


# B creating objects with A's names must succeed (names are per tenant: a 409 would confirm A's); these run
# last, since B then owns objects named like A's, which later probes would take for leaks.
CREATES = [("POST", "/v1/pipelines/connections"), ("POST", "/v1/pipelines"), ("POST", "/v1/pipelines/templates")]


def _probes(svc: Service, a: TenantA) -> list[Probe]:
    unaddressed = _unaddressed(a)
    probes: list[Probe] = []
    for method, path in sorted(_v1_routes(svc) - set(CREATES)):
        probes += _addressed(a, method, path) if "{" in path else unaddressed[(method, path)]
    return probes + [p for route in CREATES for p in unaddressed[route]]


def test_every_v1_route_is_probed(world: tuple[Service, TenantA]) -> None:
    """A route added without a probe here fails the suite instead of going unchecked."""
    svc, a = world
    unprobed = {r for r in _v1_routes(svc) if "{" not in r[1]} - set(_unaddressed(a))
    assert not unprobed, f"add probes for: {sorted(unprobed)}"
    assert len(_v1_routes(svc)) >= 40


def test_probes_name_real_objects_of_a(world: tuple[Service, TenantA]) -> None:
    """The control: A itself gets 200 from every GET that B gets 404 from, so B's 404s mean isolation, not
    a wrong id in this suite."""
    svc, a = world
    api = svc.api(A)
    names = set(a.names.values())
    gets = [p for p in _probes(svc, a) if p.method == "GET" and p.expected == NOT_FOUND]
    # By id only (names do not address objects: a 404 for A too); no /events (A's run is running: the stream
    # would not end); no /template-diff (A's pipeline is not from a template: a 404 for A too).
    gets = [p for p in gets if not any(n in p.url for n in names) and not p.url.endswith(("/events", "-diff"))]
    assert len(gets) >= 8
    failing = [f"{p.url} -> {r.status_code}" for p in gets if (r := api.get(p.url)).status_code != 200]
    assert not failing, failing


def _leaks(probe: Probe, text: str, a: TenantA) -> list[str]:
    """A's strings in a response of B's, except those B put in its own request."""
    sent = probe.url + json.dumps(probe.body or {})
    return sorted(m for m in a.markers if m in text and m not in sent)


def test_tenant_b_reaches_nothing_of_tenant_a(world: tuple[Service, TenantA]) -> None:
    """Every route, with A's ids and names: 404 where an object is named, and no string of A's anywhere."""
    svc, a = world
    b = svc.api(B)
    airflow_before = _airflow_state(svc, a)
    failures = []
    for probe in _probes(svc, a):
        resp = b.request(probe.method, probe.url, json=probe.body)
        leaks = _leaks(probe, resp.text, a)
        if resp.status_code not in probe.expected or leaks:
            failures.append(f"{probe.method} {probe.url} -> {resp.status_code} {leaks} {resp.text[:300]}")
    assert not failures, "\n".join(failures)
    assert _airflow_state(svc, a) == airflow_before
    _assert_a_intact(svc, a)


def _airflow_state(svc: Service, a: TenantA) -> tuple[bool, set[str]]:
    """A's DAG in Airflow: paused or not, and its runs (B's pause/trigger must not touch them)."""
    dag_id = a.ids["dag_id"]
    return bool(svc.fake.dags[dag_id]["is_paused"]), {run for dag, run in svc.fake.runs if dag == dag_id}


def _assert_a_intact(svc: Service, a: TenantA) -> None:
    """B's PUTs, PATCHes, DELETEs and cancels changed nothing of A's: they never reached it."""
    api = svc.api(A)
    for url in (
        f"/v1/pipelines/{a.ids['pipeline_id']}",
        f"/v1/pipelines/connections/{a.ids['connection_id']}",
        f"/v1/pipelines/schedules/{a.ids['schedule_id']}",
        f"/v1/pipelines/executions/{a.ids['execution_id']}",
        f"/v1/pipelines/templates/{a.ids['template_id']}",
    ):
        assert api.get(url).status_code == 200, url
    assert api.get(f"/v1/pipelines/{a.ids['pipeline_id']}").json()["version"] == "1.0.1"
    assert api.get(f"/v1/pipelines/executions/{a.ids['execution_id']}").json()["status"] != "CANCELLED"
