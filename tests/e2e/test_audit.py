"""The audit log through a real Airflow: creating a pipeline, executing it to the end, cancelling another run,
creating and testing a connection and deleting it each leave one entry whose request id is the X-Request-ID the
response carried; no password is in it; another tenant's admin sees none of it and an editor may not read it."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.conftest import TERMINAL, create_active, example
from tests.e2e.fixtures import connection_body

pytestmark = pytest.mark.e2e
EXECUTIONS = "/v1/pipelines/executions"


def sent(api: httpx.Client, method: str, url: str, expected: int, **kwargs: Any) -> httpx.Response:
    resp = api.request(method, url, **kwargs)
    assert resp.status_code == expected, resp.text
    assert resp.headers["X-Request-ID"], resp.headers
    return resp


def wait_end(api: httpx.Client, execution_id: str) -> dict[str, Any]:
    done = harness.wait_for(
        lambda: api.get(f"{EXECUTIONS}/{execution_id}").json(), lambda e: e["status"] in TERMINAL, 180, 1.0
    )
    return dict(done)


def test_changes_are_logged_with_their_request_ids(
    tenant: httpx.Client, running: harness.Running, sales_db: str
) -> None:
    tenant_id = tenant.headers["X-Tenant-ID"]
    request_ids: dict[tuple[str, str], str] = {}  # (action, resource id) -> the response's X-Request-ID

    given = f"e2e-{uuid.uuid4().hex[:12]}"
    created = sent(
        tenant, "POST", "/v1/pipelines", 201, json=example("audited", "qa.audited"), headers={"X-Request-ID": given}
    )
    assert created.headers["X-Request-ID"] == given  # the client's own id is kept and echoed
    pid = created.json()["pipelineId"]
    request_ids[("create", pid)] = given
    create_active(tenant, example("audited-twin", "qa.audited_twin"))  # ACTIVE wait; its entry is checked below
    pipeline = harness.wait_for(
        lambda: tenant.get(f"/v1/pipelines/{pid}").json(), lambda p: p["status"] == "ACTIVE", 120
    )

    run = sent(tenant, "POST", f"/v1/pipelines/{pid}/execute", 202, json={})
    eid = run.json()["executionId"]
    request_ids[("execute", eid)] = run.headers["X-Request-ID"]
    assert wait_end(tenant, eid)["status"] == "COMPLETED"

    # Another run, held back by pausing the DAG in Airflow, cancelled through the API.
    airflow = running.airflow()
    airflow.patch(f"/dags/{pipeline['dagId']}", json={"is_paused": True})
    try:
        held = sent(tenant, "POST", f"/v1/pipelines/{pid}/execute", 202, json={})
        hid = held.json()["executionId"]
        request_ids[("execute", hid)] = held.headers["X-Request-ID"]
        cancelled = sent(tenant, "POST", f"{EXECUTIONS}/{hid}/cancel", 200)
        assert cancelled.json()["status"] == "CANCELLED"
        request_ids[("cancel", hid)] = cancelled.headers["X-Request-ID"]
    finally:
        airflow.patch(f"/dags/{pipeline['dagId']}", json={"is_paused": False})

    password = f"pw-{uuid.uuid4().hex[:10]}-audit"
    body = connection_body("audit-db", sales_db, credentials={"username": "postgres", "password": password})
    conn = sent(tenant, "POST", "/v1/pipelines/connections", 201, json=body)
    cid = conn.json()["connectionId"]
    request_ids[("create", cid)] = conn.headers["X-Request-ID"]
    tested = sent(tenant, "POST", f"/v1/pipelines/connections/{cid}/test", 200)
    assert tested.json()["connected"] is True, tested.text
    request_ids[("test", cid)] = tested.headers["X-Request-ID"]
    deleted = sent(tenant, "DELETE", f"/v1/pipelines/connections/{cid}", 204)
    request_ids[("delete", cid)] = deleted.headers["X-Request-ID"]
    # A refused request leaves nothing: the connection is gone, a second delete is a 404.
    assert tenant.delete(f"/v1/pipelines/connections/{cid}").status_code == 404

    log = tenant.get("/v1/audit-logs", params={"size": 200})
    assert log.status_code == 200, log.text
    items = log.json()["items"]
    assert log.json()["total"] == len(items) == 2 + 2 + 2 + 1 + 3  # fixture connections, pipelines, ...
    assert [e["auditId"] for e in items] == sorted((e["auditId"] for e in items), reverse=True)  # newest first
    logged = {(e["action"], e["resourceId"]): e for e in items}
    for key, rid in request_ids.items():
        entry = logged[key]
        assert entry["requestId"] == rid, (key, entry)
        assert (entry["tenantId"], entry["actor"]) == (tenant_id, "tester"), entry
    assert logged[("create", pid)]["after"]["definition"]["sinks"]["daily_transactions"]["table"] == "qa.audited"
    assert logged[("execute", eid)]["details"]["pipelineId"] == pid
    assert logged[("cancel", hid)]["details"]["previousStatus"] in ("QUEUED", "RUNNING")
    assert logged[("test", cid)]["details"]["connected"] is True
    assert logged[("delete", cid)]["before"]["database"] == sales_db
    assert password not in log.text and "pw-unused-by-trust" not in log.text
    only_runs = tenant.get("/v1/audit-logs", params={"resource": "execution", "action": "cancel"}).json()
    assert [e["resourceId"] for e in only_runs["items"]] == [hid]

    # Another tenant's admin sees none of it, even asking for these very ids; an editor may not read the log.
    stranger = running.client(tenant="t" + uuid.uuid4().hex[:10])
    assert stranger.get("/v1/audit-logs").json()["total"] == 0
    assert stranger.get("/v1/audit-logs", params={"resourceId": pid}).json()["total"] == 0
    editor = running.client(tenant=tenant_id, roles=("editor",))
    refused = editor.get("/v1/audit-logs")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden", refused.text
    assert running.client(tenant=tenant_id, roles=("viewer",)).get("/v1/audit-logs").status_code == 403
