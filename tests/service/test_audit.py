"""The audit log: every change made through the API leaves exactly one entry (who, tenant, action, resource,
request id, before/after, never a secret) in the change's own transaction; GET /v1/audit-logs (admins only,
paged, filtered, one tenant); append-only in the database; X-Request-ID on every answer."""

from __future__ import annotations

import ast
import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from service.audit.models import AuditEntry
from service.audit.service import ACTIONS, RESOURCE_TYPES
from service.workers import reconcile_step
from tests.service.fake_airflow import task_ids
from tests.service.helpers import CONN_PASSWORD, EXAMPLE, Api, Service, connection_body, example, expect_error
from tests.service.test_templates import tenant_template

URL = "/v1/audit-logs"
TASKS = task_ids(EXAMPLE["definition"])


def user(svc: Service, tenant: str, subject: str = "alice", roles: tuple[str, ...] = ("admin",)) -> Api:
    token = svc.token(tenant, roles, subject=subject)
    return Api(svc.client, tenant, {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant})


@pytest.fixture
def tenant() -> str:
    """A tenant of its own per test: the PostgreSQL database is shared by the module, and the audit log is not
    emptied between tests (nothing may empty it)."""
    return "aud" + uuid.uuid4().hex[:10]


@pytest.fixture
def alice(svc: Service, tenant: str) -> Api:
    """The tenant's admin 'alice', with the two connections the example definition uses."""
    api = user(svc, tenant)
    api.create_connection("sales-database")
    api.create_connection("warehouse")
    return api


def entries(svc: Service, tenant: str) -> list[AuditEntry]:
    """The tenant's rows as stored, oldest first."""
    with svc.app.state.sessions() as session:
        stmt = select(AuditEntry).where(AuditEntry.tenant_id == tenant).order_by(AuditEntry.id)
        return list(session.scalars(stmt))


def with_id(api: Api, method: str, url: str, request_id: str, **kwargs: Any) -> Any:
    """A request of `api` carrying an X-Request-ID."""
    return api.client.request(method, url, headers={**api.headers, "X-Request-ID": request_id}, **kwargs)


def listing(api: Api, **params: Any) -> dict[str, Any]:
    resp = api.get(URL, params=params)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def active_pipeline(svc: Service, api: Api, name: str = "daily-sales-etl") -> dict[str, Any]:
    created = api.create_pipeline(example(name))
    svc.publish()
    pipeline = api.pipeline(created["pipelineId"])
    assert pipeline["status"] == "ACTIVE", pipeline
    return pipeline


def fail_in_airflow(svc: Service, execution: dict[str, Any]) -> None:
    svc.dispatch()
    tasks: dict[str, str | None] = dict.fromkeys(TASKS)
    tasks.update({"prepare_staging": "success", "sources.raw_transactions": "failed"})
    svc.fake.set_run(execution["dagId"], execution["executionId"], "failed", tasks)
    reconcile_step(svc.app.state.sessions, svc.app.state.airflow)


def test_every_change_leaves_exactly_one_entry_with_its_fields(svc: Service, tenant: str, alice: Api) -> None:
    connections = {e.resource_id for e in entries(svc, tenant)}
    pipeline = active_pipeline(svc, alice)
    pid = pipeline["pipelineId"]
    put = example(description="v2")
    assert alice.put(f"/v1/pipelines/{pid}", json=put).status_code == 200
    assert alice.patch(f"/v1/pipelines/{pid}", {"description": "v3"}).status_code == 200
    svc.publish()

    ex = alice.execute(pid)
    fail_in_airflow(svc, ex)
    assert alice.post(f"/v1/pipelines/executions/{ex['executionId']}/retry").status_code == 200
    assert alice.post(f"/v1/pipelines/executions/{ex['executionId']}/cancel").status_code == 200

    schedule = alice.post("/v1/pipelines/schedules", json={"pipelineId": pid, "cronExpression": "0 6 * * *"})
    assert schedule.status_code == 201, schedule.text
    sid = schedule.json()["scheduleId"]
    assert alice.patch(f"/v1/pipelines/schedules/{sid}", {"enabled": False}).status_code == 200
    assert alice.patch(f"/v1/pipelines/schedules/{sid}", {"enabled": True}).status_code == 200
    assert alice.patch(f"/v1/pipelines/schedules/{sid}", {"timezone": "Europe/Berlin"}).status_code == 200
    triggered = alice.post(f"/v1/pipelines/schedules/{sid}/trigger")
    assert triggered.status_code == 202, triggered.text
    assert alice.delete(f"/v1/pipelines/schedules/{sid}").status_code == 204

    conn = next(c for c in alice.get("/v1/pipelines/connections").json()["items"] if c["name"] == "warehouse")
    assert alice.post(f"/v1/pipelines/connections/{conn['connectionId']}/test").status_code == 200
    changed = connection_body("warehouse", database="y")
    assert alice.put(f"/v1/pipelines/connections/{conn['connectionId']}", json=changed).status_code == 200
    assert alice.post("/v1/pipelines/templates", json=tenant_template(id=f"{tenant}/stock")).status_code == 201
    v2 = tenant_template("1.1.0", id=f"{tenant}/stock")
    assert alice.post("/v1/pipelines/templates", json=v2).status_code == 201
    assert alice.put(f"/v1/pipelines/{pid}/budget", json={"monthlyUsd": 12.5}).status_code == 200
    assert alice.put("/v1/cost/budget", json={"monthlyUsd": None}).status_code == 200
    assert alice.delete(f"/v1/pipelines/{pid}").status_code == 204
    spare = alice.create_connection("spare")
    assert alice.delete(f"/v1/pipelines/connections/{spare['connectionId']}").status_code == 204

    rows = entries(svc, tenant)
    assert Counter((e.action, e.resource_type) for e in rows) == {
        ("create", "connection"): 3,
        ("create", "pipeline"): 1,
        ("update", "pipeline"): 2,
        ("execute", "execution"): 2,  # the execute, and the execution the schedule's trigger started
        ("retry", "execution"): 1,
        ("cancel", "execution"): 1,
        ("create", "schedule"): 1,
        ("disable", "schedule"): 1,
        ("enable", "schedule"): 1,
        ("update", "schedule"): 1,
        ("trigger", "schedule"): 1,
        ("delete", "schedule"): 1,
        ("test", "connection"): 1,
        ("update", "connection"): 1,
        ("create", "template"): 1,
        ("update", "template"): 1,
        ("set", "budget"): 2,
        ("delete", "pipeline"): 1,
        ("delete", "connection"): 1,
    }
    assert {e.actor for e in rows} == {"alice"} and {e.tenant_id for e in rows} == {tenant}
    assert all(e.request_id and e.at for e in rows)
    assert len({e.request_id for e in rows}) == len(rows) - 1  # one request per entry, but the trigger's two
    assert connections == {e.resource_id for e in rows[:2]}
    by = {(e.action, e.resource_type, e.resource_id): e for e in rows}

    created = by[("create", "pipeline", pid)]
    assert created.before is None and created.after is not None
    assert created.after["definition"] == example()["definition"] and created.after["revision"] == 1
    updates = [e for e in rows if (e.action, e.resource_type) == ("update", "pipeline")]
    assert [(u.before and u.before["revision"], u.after and u.after["revision"]) for u in updates] == [(1, 2), (2, 3)]
    assert updates[1].before and updates[1].after
    assert (updates[1].before["description"], updates[1].after["description"]) == ("v2", "v3")
    deleted = by[("delete", "pipeline", pid)]
    assert deleted.after is None and deleted.before and deleted.before["revision"] == 3

    executed = by[("execute", "execution", ex["executionId"])]
    assert executed.details and executed.details["pipelineId"] == pid
    retried, cancelled = by[("retry", "execution", ex["executionId"])], by[("cancel", "execution", ex["executionId"])]
    assert (
        retried.details and retried.details["retries"] == 1 and "sources.raw_transactions" in retried.details["tasks"]
    )
    assert cancelled.details == {"pipelineId": pid, "previousStatus": "QUEUED"}
    trigger = by[("trigger", "schedule", sid)]
    assert trigger.details == {"executionId": triggered.json()["executionId"]}
    assert by[("execute", "execution", triggered.json()["executionId"])].request_id == trigger.request_id
    disabled = by[("disable", "schedule", sid)]
    assert (
        disabled.before and disabled.after and (disabled.before["enabled"], disabled.after["enabled"]) == (True, False)
    )
    tz = by[("update", "schedule", sid)]
    assert tz.after and tz.after["timezone"] == "Europe/Berlin"
    assert by[("delete", "schedule", sid)].before is not None

    tested = by[("test", "connection", conn["connectionId"])]
    assert tested.details and set(tested.details) == {"connected", "failedStage", "latencyMs"}
    updated = by[("update", "connection", conn["connectionId"])]
    assert updated.before and updated.after and (updated.before["database"], updated.after["database"]) == ("x", "y")
    assert updated.details == {"credentialsReplaced": True}
    template = by[("update", "template", f"{tenant}/stock")]
    assert template.before == {"version": "1.0.0"} and template.after and template.after["version"] == "1.1.0"
    budgets = {e.resource_id: e for e in rows if e.resource_type == "budget"}
    assert (budgets[pid].before, budgets[pid].after) == ({"monthlyUsd": None}, {"monthlyUsd": 12.5})
    assert budgets["tenant"].after == {"monthlyUsd": None}


def test_the_entry_carries_the_request_id_of_the_response(svc: Service, tenant: str, alice: Api) -> None:
    resp = with_id(alice, "POST", "/v1/pipelines", "req-7f3a.create", json=example())
    assert resp.status_code == 201 and resp.headers["X-Request-ID"] == "req-7f3a.create"
    made_up = alice.delete(f"/v1/pipelines/{resp.json()['pipelineId']}")
    assert made_up.status_code == 204
    rid = made_up.headers["X-Request-ID"]
    assert len(rid) == 32 and int(rid, 16) >= 0  # a uuid4, hex
    rows = entries(svc, tenant)[-2:]
    assert [(e.action, e.request_id) for e in rows] == [("create", "req-7f3a.create"), ("delete", rid)]


def test_request_ids_are_echoed_everywhere_and_bad_ones_replaced(svc: Service, alice: Api) -> None:
    for given in ("x" * 101, "has space", "-leading-dash", "ünïcode"):
        resp = with_id(alice, "GET", "/v1/pipelines", given.encode())  # type: ignore[arg-type]
        assert resp.status_code == 200 and len(resp.headers["X-Request-ID"]) == 32, (given, resp.headers)
    assert alice.get("/v1/pipelines/nope").headers["X-Request-ID"]  # an error answer
    assert svc.client.get("/health").headers["X-Request-ID"]  # no authentication
    ids = {alice.get("/v1/pipelines").headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5
    # The status fast path (a cached body answered before routing) carries it too.
    pipeline = active_pipeline(svc, alice)
    ex = alice.execute(pipeline["pipelineId"])
    url = f"/v1/pipelines/executions/{ex['executionId']}"
    alice.get(url)
    hit = with_id(alice, "GET", url, "poll-1")
    assert hit.status_code == 200 and hit.headers["X-Request-ID"] == "poll-1"


def test_secrets_are_never_in_the_log(svc: Service, tenant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = user(svc, tenant)
    ref_password, header_value, new_password = "ref-Pw-93kq-from-env", "hv-tok-55e1-header", "pw-new-71xq-rotated"
    monkeypatch.setenv(
        f"PIPELINE_SECRET_{tenant.upper()}__DB_CREDS", json.dumps({"username": "etl", "password": ref_password})
    )
    inline = admin.create_connection("inline-db")
    by_ref = admin.create_connection("ref-db", credentials=None, credentialSecretRef="db-creds")
    http: dict[str, Any] = {"name": "crm", "type": "http", "url": "https://crm.example.com/api"}
    http["properties"] = {"headers": {"X-Tenant-Key": header_value}}
    resp = admin.post("/v1/pipelines/connections", json=http)
    assert resp.status_code == 201, resp.text
    crm = resp.json()
    for conn in (inline, by_ref, crm):
        assert admin.post(f"/v1/pipelines/connections/{conn['connectionId']}/test").status_code == 200
    rotated = connection_body("inline-db", credentials={"username": "u2", "password": new_password})
    assert admin.put(f"/v1/pipelines/connections/{inline['connectionId']}", json=rotated).status_code == 200
    assert admin.patch(f"/v1/pipelines/connections/{crm['connectionId']}", {"port": 8443}).status_code == 200
    for conn in (inline, by_ref, crm):
        assert admin.delete(f"/v1/pipelines/connections/{conn['connectionId']}").status_code == 204

    rows = entries(svc, tenant)
    assert len(rows) == 3 + 3 + 2 + 3
    stored = json.dumps([[e.before, e.after, e.details, e.resource_id] for e in rows])
    served = json.dumps(listing(admin, size=200))
    for secret in (CONN_PASSWORD, ref_password, header_value, new_password, "etl", "u2"):
        assert secret not in stored and secret not in served, secret
    crm_update = next(e for e in rows if e.action == "update" and e.resource_id == crm["connectionId"])
    assert crm_update.after and crm_update.after["properties"]["headers"] == {"X-Tenant-Key": "********"}
    assert crm_update.after["port"] == 8443 and crm_update.details == {"credentialsReplaced": False}
    ref_create = next(e for e in rows if e.action == "create" and e.resource_id == by_ref["connectionId"])
    assert ref_create.after and ref_create.after["credentialSecretRef"] == "db-creds"


def test_a_refused_request_records_nothing(svc: Service, tenant: str, alice: Api) -> None:
    pipeline = active_pipeline(svc, alice)
    pid = pipeline["pipelineId"]
    before = len(entries(svc, tenant))
    bad = example()
    bad["definition"]["sources"] = {}
    expect_error(alice.post("/v1/pipelines", json=bad), 400, "validation_error")
    expect_error(alice.post("/v1/pipelines", json=example()), 409, "conflict")  # the name is taken
    expect_error(alice.put(f"/v1/pipelines/{pid}", json=example("renamed")), 400, "validation_error", "name")
    expect_error(alice.post("/v1/pipelines/executions/exec-nope/cancel"), 404, "not_found")
    expect_error(alice.post("/v1/pipelines/connections", json=connection_body("warehouse")), 409, "conflict")
    conn = alice.get("/v1/pipelines/connections").json()["items"][0]
    # In use by the pipeline: refused after the connection was read, nothing of the attempt stays.
    expect_error(alice.delete(f"/v1/pipelines/connections/{conn['connectionId']}"), 409, "conflict")
    viewer = user(svc, tenant, "victor", ("viewer",))
    expect_error(viewer.post(f"/v1/pipelines/{pid}/execute", json={}), 403, "forbidden")
    ex = alice.execute(pid)
    expect_error(alice.post(f"/v1/pipelines/{pid}/execute", json={}), 409, "conflict")  # max_active_runs 1
    assert alice.post(f"/v1/pipelines/executions/{ex['executionId']}/cancel").status_code == 200
    expect_error(alice.post(f"/v1/pipelines/executions/{ex['executionId']}/cancel"), 409, "conflict")
    expect_error(alice.post(f"/v1/pipelines/executions/{ex['executionId']}/retry"), 409, "conflict")
    assert [(e.action, e.resource_type) for e in entries(svc, tenant)[before:]] == [
        ("execute", "execution"),
        ("cancel", "execution"),
    ]


def test_filters_paging_and_newest_first(svc: Service, tenant: str) -> None:
    alice, bob = user(svc, tenant, "alice"), user(svc, tenant, "bob", ("editor",))
    a = alice.create_connection("a-db")
    b = bob.create_connection("b-db")
    bob.create_connection("c-db")
    assert alice.delete(f"/v1/pipelines/connections/{a['connectionId']}").status_code == 204

    everything = listing(alice)
    assert (everything["total"], everything["page"], everything["size"]) == (4, 0, 20)
    ids = [e["auditId"] for e in everything["items"]]
    assert ids == sorted(ids, reverse=True)
    first = everything["items"][0]
    assert set(first) == {
        "auditId",
        "tenantId",
        "actor",
        "action",
        "resourceType",
        "resourceId",
        "requestId",
        "at",
        "before",
        "after",
        "details",
    }
    assert (first["actor"], first["action"], first["resourceType"], first["resourceId"]) == (
        "alice",
        "delete",
        "connection",
        a["connectionId"],
    )
    assert first["before"]["name"] == "a-db" and first["after"] is None

    def actions(**params: Any) -> list[tuple[str, str]]:
        return [(e["actor"], e["action"]) for e in listing(alice, **params)["items"]]

    assert actions(actor="bob") == [("bob", "create"), ("bob", "create")]
    assert actions(action="delete") == [("alice", "delete")]
    assert actions(resource="connection", resourceId=a["connectionId"]) == [("alice", "delete"), ("alice", "create")]
    assert actions(resource="pipeline") == []
    assert [e["resourceId"] for e in listing(alice, resourceId=b["connectionId"])["items"]] == [b["connectionId"]]
    page1 = listing(alice, page=1, size=3)
    assert (page1["total"], [e["auditId"] for e in page1["items"]]) == (4, ids[3:])

    at = [datetime.fromisoformat(e["at"]) for e in everything["items"]]
    assert all(t.tzinfo is not None for t in at)
    now = datetime.now(UTC)
    assert len(listing(alice, **{"from": (now - timedelta(minutes=5)).isoformat()})["items"]) == 4
    assert listing(alice, **{"from": (now + timedelta(minutes=5)).isoformat()})["total"] == 0
    assert listing(alice, to=(now - timedelta(minutes=5)).isoformat())["total"] == 0
    # `from` inclusive, `to` exclusive: the newest entry's own time splits the log there.
    newest = everything["items"][0]["at"]
    assert listing(alice, **{"from": newest})["items"][0]["auditId"] == ids[0]
    assert ids[0] not in [e["auditId"] for e in listing(alice, to=newest)["items"]]


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"resource": "pipelines"}, "resource"),
        ({"action": "destroy"}, "action"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-02-12T00:00:00"}, "to"),
        ({"from": "2026-02-12T00:00:00Z", "to": "2026-02-11T00:00:00Z"}, "from"),
        ({"from": "0001-01-01T00:00:00+01:00"}, "from"),
        ({"size": 500}, "size"),
        ({"page": -1}, "page"),
        ({"actor": "x" * 201}, "actor"),
    ],
)
def test_bad_filters_are_400_naming_the_parameter(svc: Service, params: dict[str, Any], path: str) -> None:
    expect_error(user(svc, "acme").get(URL, params=params), 400, "validation_error", path)


def test_only_an_admin_reads_it_and_only_their_tenant(svc: Service, tenant: str) -> None:
    alice = user(svc, tenant)
    alice.create_connection("a-db")
    for role in ("editor", "viewer"):
        error = expect_error(user(svc, tenant, "eve", (role,)).get(URL), 403, "forbidden")
        assert "admin" in error["message"]
    assert listing(user(svc, tenant, "eve", ("editor", "admin")))["total"] == 1
    stranger = user(svc, "other" + uuid.uuid4().hex[:8])
    assert listing(stranger)["total"] == 0
    resource_id = listing(alice)["items"][0]["resourceId"]
    assert listing(stranger, resourceId=resource_id, actor="alice")["total"] == 0
    # The tenant is the token's: a header naming another tenant is refused, not obeyed.
    spoof = Api(svc.client, tenant, {**stranger.headers, "X-Tenant-ID": tenant})
    expect_error(spoof.get(URL), 403, "forbidden")


def test_there_is_no_api_to_change_the_log(svc: Service, tenant: str) -> None:
    alice = user(svc, tenant)
    alice.create_connection("a-db")
    entry = listing(alice)["items"][0]
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert alice.request(method, URL, json={}).status_code == 405, method
        assert alice.request(method, f"{URL}/{entry['auditId']}", json={}).status_code in (404, 405), method
    assert listing(alice)["items"] == [entry]


def test_the_database_refuses_update_delete_and_truncate(svc: Service, tenant: str) -> None:
    user(svc, tenant).create_connection("a-db")
    postgres = svc.settings.sqlalchemy_url.startswith("postgresql")
    statements = [
        "UPDATE audit_log SET actor = 'mallory' WHERE tenant_id = :t",
        "DELETE FROM audit_log WHERE tenant_id = :t",
    ]
    if postgres:
        statements.append("TRUNCATE audit_log")
    for sql in statements:
        with pytest.raises(DBAPIError, match="audit_log is append-only") as refused:
            with svc.app.state.engine.begin() as conn:
                conn.execute(text(sql), {"t": tenant} if ":t" in sql else {})
        if postgres:
            assert refused.value.orig is not None and refused.value.orig.sqlstate == "42501"  # type: ignore[attr-defined]
    [entry] = entries(svc, tenant)
    assert entry.actor == "alice"
    if postgres:  # no foreign key either way: what other tables cascade never reaches the log
        with svc.app.state.engine.connect() as conn:
            fks = conn.execute(
                text(
                    "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                    "AND (conrelid = 'audit_log'::regclass OR confrelid = 'audit_log'::regclass)"
                )
            ).scalar()
        assert fks == 0


def test_every_recorded_action_and_resource_type_can_be_filtered_on() -> None:
    """Each `record(...)` call in the service names an action and a resource type the filters accept (else
    its entries could not be asked for by kind): monitoring's and workflows' calls included."""
    calls = []
    for path in (Path(__file__).resolve().parents[2] / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "record" and len(node.args) >= 4:
                # A computed action (a schedule's enable/disable/update) is covered by the tests above.
                action, kind = node.args[2], node.args[3]
                assert isinstance(kind, ast.Constant) and kind.value in RESOURCE_TYPES, (path, node.lineno)
                assert not isinstance(action, ast.Constant) or action.value in ACTIONS, (path, node.lineno)
                calls.append(path.parent.name)
    assert {"pipelines", "executions", "schedules", "connections", "templates", "cost"} <= set(calls)
