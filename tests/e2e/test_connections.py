"""Connections through the real service and a real Airflow: the staged test at every failure stage,
s3/http materialised as Airflow connections, a PUT that re-points running pipelines, and a planted
secret that must appear nowhere the system writes or answers."""

from __future__ import annotations

import json
import logging
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.secrets import env_var_for
from tests.connections.servers import HttpApi, MotoServer, ScramCluster, _pg_bin, free_port
from tests.e2e import harness
from tests.e2e.conftest import create_active, example, query, run_to_end
from tests.pg import PG_ADMIN_URL

pytestmark = pytest.mark.e2e

URL = "/v1/pipelines/connections"
SCRAM_PASSWORD = "scram-e2e-Hq4-right"
# The planted secret: unique per run, so finding it anywhere means this run leaked it.
PLANTED = "planted-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def scram_cluster() -> Iterator[ScramCluster]:
    cluster = ScramCluster.start(SCRAM_PASSWORD)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer.start()
    yield server
    server.stop()


class Recorder:
    """Every response body the tests saw, to grep for the planted secret at the end."""

    def __init__(self, api: httpx.Client):
        self.api = api
        self.bodies: list[str] = []

    def __call__(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        resp = self.api.request(method, url, **kwargs)
        self.bodies.append(f"{method} {url} -> {resp.status_code} {resp.text}")
        return resp


def create(call: Recorder, body: dict[str, Any]) -> dict[str, Any]:
    resp = call("POST", URL, json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def in_airflow(airflow: httpx.Client, connection_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Airflow's copy of a connection. A create waits up to 3 s for Airflow; when Airflow is slower (a busy
    machine) it answers 201 with airflowSync PENDING and the connections worker upserts it soon after."""
    deadline = time.monotonic() + timeout
    while True:
        resp = airflow.get(f"/connections/{connection_id}")
        if resp.status_code == 200 or time.monotonic() > deadline:
            assert resp.status_code == 200, resp.text
            return dict(resp.json())
        time.sleep(0.5)


def pg_body(name: str, database: str = "postgres", port: int = 5432, password: str = "unused", **extra: Any):  # type: ignore[no-untyped-def]
    body = {
        "name": name,
        "type": "postgres",
        "host": "127.0.0.1",
        "port": port,
        "database": database,
        "credentials": {"username": "postgres", "password": password},
    }
    body.update(extra)
    return body


def test_staged_test_succeeds_and_fails_at_the_right_stage(
    running: harness.Running, scram_cluster, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    call = Recorder(running.client(tenant="c" + uuid.uuid4().hex[:10]))
    closed = free_port()
    secret_var = env_var_for(call.api.headers["X-Tenant-ID"], "scram-e2e")  # PIPELINE_SECRET_<TENANT>__SCRAM_E2E
    monkeypatch.setenv(secret_var, json.dumps({"username": "postgres", "password": "stale-pw"}))
    by_ref = {"credentials": None, "credentialSecretRef": "scram-e2e"}
    cases = {
        "local": (pg_body("local"), None),
        "closed-port": (pg_body("closed-port", port=closed), "tcp"),
        "wrong-password": (
            pg_body("wrong-password", port=scram_cluster.port, password="not-the-password"),
            "authentication",
        ),
        "wrong-secret": ({**pg_body("wrong-secret", port=scram_cluster.port), **by_ref}, "authentication"),
        "missing-database": (pg_body("missing-database", database="no_such_db_e2e"), "authentication"),
        "unknown-host": ({**pg_body("unknown-host"), "host": "db.does-not-exist.invalid"}, "dns"),
        "tls-required": (pg_body("tls-required", port=scram_cluster.port, properties={"sslMode": "require"}), "tls"),
        "scram-ok": (pg_body("scram-ok", port=scram_cluster.port, password=SCRAM_PASSWORD), None),
    }
    results: dict[str, dict[str, Any]] = {}
    for name, (body, _) in cases.items():
        conn = create(call, body)
        resp = call("POST", f"{URL}/{conn['connectionId']}/test")
        assert resp.status_code == 200, resp.text
        results[name] = resp.json()
    for name, (_, stage) in cases.items():
        got = results[name]
        assert got["connected"] is (stage is None), (name, got)
        assert got["failedStage"] == stage, (name, got)
        if stage:
            assert got["stages"][-1]["name"] == stage and got["stages"][-1]["ok"] is False
            logging.getLogger(__name__).warning("stage %s hint: %s", stage, got["hint"])

    local = results["local"]
    assert local["version"].startswith("PostgreSQL ") and "public" in local["details"]["schemas"]
    assert isinstance(local["details"]["tables"], int) and local["latencyMs"] >= 0
    assert [s["name"] for s in local["stages"]] == [
        "credentials",
        "dns",
        "network",
        "tcp",
        "authentication",
        "privilege",
    ]
    assert results["closed-port"]["hint"] == (
        f"TCP connect to 127.0.0.1:{closed} refused: is the server running and is the port right?"
    )
    assert results["wrong-password"]["hint"] == (
        "password authentication failed for user 'postgres': check the connection's inline credentials "
        "(PUT the connection with new ones)"
    )
    assert results["wrong-secret"]["hint"] == (
        f"password authentication failed for user 'postgres': check the environment variable {secret_var}"
    )
    assert results["missing-database"]["hint"] == (
        "database 'no_such_db_e2e' does not exist on 127.0.0.1:5432: check the connection's database"
    )
    assert results["unknown-host"]["hint"].startswith("DNS lookup of 'db.does-not-exist.invalid' failed")
    assert results["tls-required"]["hint"] == (
        f"the server at 127.0.0.1:{scram_cluster.port} does not accept TLS, but properties.sslMode is 'require': "
        "enable ssl on the server, or set properties.sslMode to 'prefer' or 'disable'"
    )
    # ...and every one of them is a real Airflow connection.
    airflow = running.airflow()
    tenant = call.api.headers["X-Tenant-ID"]
    assert in_airflow(airflow, f"{tenant}.wrong-password")["port"] == scram_cluster.port


def test_s3_and_http_are_airflow_connections_and_testable(running: harness.Running, moto: MotoServer) -> None:
    import boto3

    boto3.client(
        "s3", endpoint_url=moto.url, region_name="eu-west-1", aws_access_key_id="k", aws_secret_access_key="s"
    ).create_bucket(Bucket="lake-e2e", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    call = Recorder(running.client(tenant="s" + uuid.uuid4().hex[:10]))
    tenant = call.api.headers["X-Tenant-ID"]
    lake = create(
        call,
        {
            "name": "lake",
            "type": "s3",
            "credentials": {"username": "AKIAE2E", "password": "aws-e2e-secret"},
            "properties": {"bucket": "lake-e2e", "region": "eu-west-1", "endpointUrl": moto.url},
        },
    )
    tested = call("POST", f"{URL}/{lake['connectionId']}/test").json()
    assert tested["connected"] is True, tested
    assert tested["details"] == {"bucket": "lake-e2e", "prefix": "", "objects": 0, "moreObjects": False}
    airflow = running.airflow()
    aws = in_airflow(airflow, f"{tenant}.lake")
    assert aws["conn_type"] == "aws" and aws["login"] == "AKIAE2E"
    assert json.loads(aws["extra"]) == {"region_name": "eu-west-1", "endpoint_url": moto.url}

    # A local API: Airflow's own is refused by the network policy (tests/security/test_network_policy_e2e.py).
    server = HttpApi()
    try:
        url = f"http://127.0.0.1:{server.port}"
        api = create(call, {"name": "items-api", "type": "http", "url": url, "properties": {"healthPath": "/health"}})
        tested = call("POST", f"{URL}/{api['connectionId']}/test").json()
        assert tested["connected"] is True and tested["details"] == {"url": url + "/health"}, tested
    finally:
        server.stop()
    http = in_airflow(airflow, f"{tenant}.items-api")
    assert (http["conn_type"], http["host"], http["schema"]) == ("http", url, "http")


def test_put_repoints_a_pipeline_without_touching_its_dag(
    running: harness.Running, tenant: httpx.Client, warehouse_db: str, make_database
) -> None:  # type: ignore[no-untyped-def]
    pipeline = create_active(tenant, example("repointed", "qa.repointed"))
    dag_file = next(Path(running.settings.dags_dir).glob(f"pipeline_*{pipeline['name']}.py"))
    before = dag_file.read_text()
    assert run_to_end(tenant, pipeline["pipelineId"])["status"] == "COMPLETED"
    assert query(warehouse_db, "SELECT count(*) FROM qa.repointed")[0][0] > 0

    second = make_database("warehouse2")
    warehouse = next(c for c in tenant.get(URL).json()["items"] if c["name"] == "warehouse")
    body = {"name": "warehouse", "type": "postgres", "host": "127.0.0.1", "port": 5432, "database": second}
    resp = tenant.put(f"{URL}/{warehouse['connectionId']}", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["database"] == second and resp.json()["hasInlineCredentials"] is True

    done = run_to_end(tenant, pipeline["pipelineId"])
    assert done["status"] == "COMPLETED", done
    rows = query(second, "SELECT count(*) FROM qa.repointed")[0][0]
    assert rows > 0 and rows == query(warehouse_db, "SELECT count(*) FROM qa.repointed")[0][0]
    assert dag_file.read_text() == before  # the DAG did not change: only the Airflow connection did


def test_a_planted_secret_appears_nowhere(
    running: harness.Running,
    sales_db: str,
    warehouse_db: str,
    scram_cluster: ScramCluster,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    call = Recorder(running.client(tenant="p" + uuid.uuid4().hex[:10]))
    tenant = call.api.headers["X-Tenant-ID"]
    ref = "planted-" + uuid.uuid4().hex[:6]
    monkeypatch.setenv(env_var_for(tenant, ref), json.dumps({"username": "postgres", "password": PLANTED}))
    # Create: one by secret ref, one inline; failing creates that carry the secret in their bodies.
    sales = create(call, {**pg_body("sales-database", sales_db), "credentials": None, "credentialSecretRef": ref})
    warehouse = create(call, pg_body("warehouse", warehouse_db, password=PLANTED))
    assert call("POST", URL, json=pg_body("warehouse", warehouse_db, password=PLANTED)).status_code == 409
    bad = pg_body("bad-props", password=PLANTED, properties={"sslMode": PLANTED})
    assert call("POST", URL, json=bad).status_code == 400
    in_url = {"name": "in-url", "type": "sql", "url": f"postgresql://postgres:{PLANTED}@127.0.0.1/x"}
    assert call("POST", URL, json=in_url).status_code == 400
    # Update, tests that pass and fail (wrong password, refused port, TLS), a full pipeline run.
    body = pg_body("warehouse", warehouse_db, password=PLANTED + "-v2")
    assert call("PUT", f"{URL}/{warehouse['connectionId']}", json=body).status_code == 200
    failing = create(call, pg_body("scram", port=scram_cluster.port, password=PLANTED))
    refused = create(call, pg_body("refused", port=free_port(), password=PLANTED))
    tls = create(call, pg_body("tls", port=scram_cluster.port, password=PLANTED, properties={"sslMode": "require"}))
    for conn in (sales, warehouse, failing, refused, tls):
        assert call("POST", f"{URL}/{conn['connectionId']}/test").status_code == 200
    assert [json.loads(b.split(" ", 4)[4])["failedStage"] for b in call.bodies[-5:]] == [
        None,
        None,
        "authentication",
        "tcp",
        "tls",
    ]
    pipeline = create_active(call.api, example("planted", "qa.planted"))
    done = run_to_end(call.api, pipeline["pipelineId"])
    assert done["status"] == "COMPLETED", done
    call("GET", f"/v1/pipelines/executions/{done['executionId']}")
    call("GET", f"/v1/pipelines/executions/{done['executionId']}/logs", params={"lines": 100000})
    call("GET", f"/v1/pipelines/{pipeline['pipelineId']}")
    call("GET", URL)

    haystacks: dict[str, str] = {
        "HTTP responses": "\n".join(call.bodies),
        "service log": caplog.text,
        "service database dump": subprocess.run(
            [_pg_bin("pg_dump"), "--no-owner", PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + _service_db(running)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout,
    }
    airflow = running.airflow()
    for conn_id in ("sales-database", "warehouse", "scram"):
        haystacks[f"Airflow connection {conn_id}"] = json.dumps(in_airflow(airflow, f"{tenant}.{conn_id}"))
    haystacks["Airflow connection list"] = airflow.get("/connections", params={"limit": 1000}).text
    # Controls: each haystack holds what it should (the tenant's connections), so "not found" means something.
    for where, text in haystacks.items():
        assert tenant in text, where
    assert "CREATE TABLE" in haystacks["service database dump"] and "pg_namespace" not in haystacks["HTTP responses"]
    leaks = [where for where, text in haystacks.items() if PLANTED in text]
    # Every file the system wrote: Airflow's DB (its connections are Fernet-encrypted), task logs,
    # component logs, DAG files, the service's own files.
    needle = PLANTED.encode()
    files = [p for p in Path(running.settings.data_dir).rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in files) and any(p.name.startswith("pipeline_") for p in files)
    leaks += [str(p) for p in files if needle in p.read_bytes()]
    assert any(tenant.encode() in p.read_bytes() for p in files if "/logs/" in str(p))  # this run's task logs
    assert leaks == [], f"the planted secret leaked into: {leaks}"


def _service_db(running: harness.Running) -> str:
    return str(running.settings.database_url).rsplit("/", 1)[1]
