"""Issue 11, finding 2 through the real service and a real Airflow: a tenant cannot make the service or a
worker call Airflow's own API or the service itself — not by a connection test, not by an `http` source,
not through a redirect from a server it may reach, not by a failure notification.

The harness allows loopback (as `make up` does), so everything here runs on 127.0.0.1; Airflow's api-server
and the service are reached by this machine's host name, which resolves to loopback: a name is only refused
once resolved (at test time and on the workers), unlike a literal address, refused when stored."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.conftest import create_active, example, query, run_to_end
from tests.security.network_servers import RecordingServer

pytestmark = pytest.mark.e2e

URL = "/v1/pipelines/connections"
# A name for this machine that resolves to loopback (tests/e2e: /etc/hosts), so not refused when stored.
HOST = socket.gethostname()


@pytest.fixture(scope="module", autouse=True)
def host_is_loopback() -> None:
    addresses = {info[4][0] for info in socket.getaddrinfo(HOST, None)}
    if not addresses or not all(a.startswith("127.") or a == "::1" for a in addresses):
        pytest.skip(f"this machine's name {HOST!r} does not resolve to loopback only: {addresses}")


@pytest.fixture
def recording() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.stop()


def ports(running: harness.Running) -> dict[str, int]:
    return {"airflow": int(urlsplit(running.stack.url).port or 0), "service": running.settings.port}


def create(api: httpx.Client, body: dict[str, Any]) -> str:
    resp = api.post(URL, json={"name": "c" + uuid.uuid4().hex[:8], **body})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["connectionId"])


def http_pipeline(connection: str, path: str, table: str) -> dict[str, Any]:
    """An http source landed into a warehouse table: what copied Airflow's /api/v2/version before."""
    return {
        "name": "ssrf-" + uuid.uuid4().hex[:8],
        "definition": {
            "sources": {"fetched": {"type": "http", "connection": connection, "path": path, "records_path": ""}},
            "transformations": [],
            "sinks": {"landed": {"type": "postgres", "connection": "warehouse", "table": table, "input": "fetched"}},
            "orchestration": {"retries": 0},
        },
    }


def landed(warehouse_db: str, table: str) -> int:
    exists = query(warehouse_db, "SELECT to_regclass(%s) IS NOT NULL", table)[0][0]
    return int(query(warehouse_db, f"SELECT count(*) FROM {table}")[0][0]) if exists else 0


def test_connection_tests_of_airflow_and_the_service_fail_at_the_policy_stage(
    running: harness.Running, tenant: httpx.Client
) -> None:
    own = ports(running)
    bodies = [
        {"type": "http", "url": f"http://{HOST}:{own['airflow']}", "properties": {"healthPath": "/api/v2/version"}},
        {"type": "http", "url": f"http://{HOST}:{own['service']}", "properties": {"healthPath": "/health"}},
        {"type": "postgres", "host": HOST, "port": own["airflow"], "database": "x",
         "credentials": {"username": "u", "password": "p"}},
        {"type": "s3", "properties": {"bucket": "b-1", "endpointUrl": f"http://{HOST}:{own['service']}"},
         "credentials": {"username": "k", "password": "s"}},
    ]  # fmt: skip
    for body in bodies:
        resp = tenant.post(f"{URL}/{create(tenant, body)}/test")
        assert resp.status_code == 200, resp.text
        result = resp.json()
        assert (result["connected"], result["failedStage"]) == (False, "network"), result
        assert [s["name"] for s in result["stages"]] == ["credentials", "dns", "network"], result
        assert "network policy" in result["hint"] and "PIPELINE_DENIED_ENDPOINTS" in result["hint"]
        assert result["version"] is None and result["details"] == {}
        for leak in ("uvicorn", "3.3.2", "git_version", "127.0.0.1", "http 2", "http 4", "http 5"):
            assert leak not in resp.text.lower().replace(HOST.lower(), "<host>"), (leak, resp.text)


def test_literal_addresses_of_airflow_and_the_metadata_service_are_refused_when_stored(
    running: harness.Running, tenant: httpx.Client
) -> None:
    own = ports(running)
    for host, port in (("127.0.0.1", own["airflow"]), ("127.0.0.1", own["service"]), ("169.254.169.254", 80)):
        body = {"name": "c" + uuid.uuid4().hex[:8], "type": "postgres", "host": host, "port": port,
                "database": "x", "credentials": {"username": "u", "password": "p"}}  # fmt: skip
        resp = tenant.post(URL, json=body)
        assert resp.status_code == 400, resp.text
        assert [d["path"] for d in resp.json()["error"]["details"]] == ["host"]
        assert "network policy" in resp.json()["error"]["message"]


def test_an_http_source_cannot_copy_airflows_api_into_a_table(
    running: harness.Running, tenant: httpx.Client, warehouse_db: str
) -> None:
    table = f"ssrf_{uuid.uuid4().hex[:6]}.airflow_version"
    body = {"type": "http", "url": f"http://{HOST}:{ports(running)['airflow']}"}
    name = tenant.get(f"{URL}/{create(tenant, body)}").json()["name"]
    pipeline = create_active(tenant, http_pipeline(name, "/api/v2/version", table))
    done = run_to_end(tenant, pipeline["pipelineId"])
    assert done["status"] == "FAILED", done
    assert landed(warehouse_db, table) == 0


def test_a_redirect_to_airflow_is_followed_neither_by_the_test_nor_by_a_source(
    running: harness.Running, tenant: httpx.Client, warehouse_db: str, recording: RecordingServer
) -> None:
    """The first server is allowed (loopback, not an own endpoint); it redirects to Airflow's API."""
    airflow_api = f"http://127.0.0.1:{ports(running)['airflow']}/api/v2/version"
    recording.redirects.update({"/health": airflow_api, "/items": airflow_api})
    conn_id = create(tenant, {"type": "http", "url": recording.url, "properties": {"healthPath": "/health"}})
    result = tenant.post(f"{URL}/{conn_id}/test").json()
    assert (result["connected"], result["failedStage"]) == (False, "authentication"), result
    assert "does not follow" in result["hint"] and result["version"] is None
    assert "version" not in result["details"] and "uvicorn" not in str(result).lower()
    assert [s.path for s in recording.seen] == ["/health"]

    table = f"ssrf_{uuid.uuid4().hex[:6]}.redirected"
    name = tenant.get(f"{URL}/{conn_id}").json()["name"]
    pipeline = create_active(tenant, http_pipeline(name, "/items", table))
    done = run_to_end(tenant, pipeline["pipelineId"])
    assert done["status"] == "FAILED", done
    assert landed(warehouse_db, table) == 0
    assert [s.path for s in recording.seen][-1] == "/items"


def _logs_mentioning(home: Path, *words: str) -> list[Path]:
    found = []
    for path in home.rglob("*.log"):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if all(w in text for w in words):
            found.append(path)
    return found


def test_a_failure_notification_to_airflows_api_is_not_delivered(
    running: harness.Running, tenant: httpx.Client
) -> None:
    """The webhook names Airflow's api-server: the failed run's callback must not reach it (its access log
    would show the probe's path); the callback does run — it logs the refused delivery."""
    probe = "/ssrf-probe-" + uuid.uuid4().hex
    body = example("ssrf-" + uuid.uuid4().hex[:8], f"ssrf_{uuid.uuid4().hex[:6]}.never")
    body["definition"]["transformations"][0]["sql"] = "SELECT 1 / 0 AS boom FROM raw_transactions"
    del body["definition"]["quality_checks"]
    body["definition"]["orchestration"]["on_failure"] = {"webhook": f"http://{HOST}:{ports(running)['airflow']}{probe}"}
    pipeline = create_active(tenant, body)
    done = run_to_end(tenant, pipeline["pipelineId"])
    assert done["status"] == "FAILED", done
    home = running.stack.home
    refused = harness.wait_for(lambda: _logs_mentioning(home, "not delivered", pipeline["dagId"]), bool, timeout=90)
    assert refused, "the failure callback did not run (no 'not delivered' log line)"
    assert _logs_mentioning(home, probe) == []
