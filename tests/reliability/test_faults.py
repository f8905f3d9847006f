"""Processes die on the distributed profile; the service's promises hold: every execution runs exactly once
(count Airflow's runs per execution id) and completes after the recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.connections.servers import ScramCluster
from tests.e2e.conftest import TERMINAL, connection_body, create_active
from tests.e2e.harness import free_port, wait_for
from tests.reliability.conftest import Cluster

pytestmark = pytest.mark.e2e


def small(name: str, table: str, max_active_runs: int = 20) -> dict[str, Any]:
    """A source and a sink: a few short tasks per run, many runs at once."""
    return {
        "name": name,
        "definition": {
            "sources": {"products": {"type": "postgres", "connection": "sales-database", "table": "public.products"}},
            "sinks": {
                "copy": {"type": "postgres", "connection": "warehouse", "table": table, "input": "products",
                         "mode": "overwrite"},
            },
            "orchestration": {"retries": 1, "retry_delay_seconds": 1, "max_active_runs": max_active_runs},
        },
    }  # fmt: skip


def execute(api: httpx.Client, pipeline_id: str) -> str:
    resp = api.post(f"/v1/pipelines/{pipeline_id}/execute", json={"parameters": {}})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["executionId"])


def wait_all(api: httpx.Client, ids: list[str], timeout: float = 420) -> dict[str, str]:
    def statuses() -> dict[str, str]:
        return {i: api.get(f"/v1/pipelines/executions/{i}").json()["status"] for i in ids}

    return dict(wait_for(statuses, lambda s: all(v in TERMINAL for v in s.values()), timeout, 2.0))


def airflow_runs(cluster: Cluster, dag_id: str) -> list[str]:
    with cluster.airflow() as airflow:
        body = airflow.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100}).json()
    return sorted(r["dag_run_id"] for r in body["dag_runs"])


def test_executions_accepted_while_airflows_api_server_is_down_each_run_exactly_once(cluster: Cluster) -> None:
    tenant = cluster.tenant()
    first, second = cluster.api(0, tenant), cluster.api(1, tenant)
    pipeline = create_active(first, small("outage", "public.outage_copy"))
    stack = cluster.profile.airflow()
    stack.kill_component("api-server")
    try:
        ids = [execute(first if i % 2 else second, pipeline["pipelineId"]) for i in range(20)]  # both replicas
        time.sleep(5)  # the replicas' submitters meet a dead Airflow meanwhile
        down = {first.get(f"/v1/pipelines/executions/{i}").json()["status"] for i in ids}
        assert down <= {"QUEUED", "PENDING"}, down
    finally:
        restarted = time.monotonic()
        stack.start_component("api-server")
        stack.wait_healthy()
    statuses = wait_all(second, ids)
    print(f"api-server back after the outage: 20 executions finished {time.monotonic() - restarted:.1f} s later")
    assert set(statuses.values()) == {"COMPLETED"}, statuses
    assert airflow_runs(cluster, pipeline["dagId"]) == sorted(ids)  # each exactly once, none lost


def test_a_replica_killed_mid_run_leaves_the_other_to_finish_and_restarts_without_duplicates(cluster: Cluster) -> None:
    tenant = cluster.tenant()
    first, second = cluster.api(0, tenant), cluster.api(1, tenant)
    pipeline = create_active(second, small("replica", "public.replica_copy"))
    ids = [execute(first, pipeline["pipelineId"]) for _ in range(6)]  # accepted by the replica about to die
    killed = time.monotonic()
    cluster.profile.kill_replica(0)
    try:
        statuses = wait_all(second, ids)
        print(f"replica 1 killed: replica 2 saw all 6 runs finish {time.monotonic() - killed:.1f} s later")
        assert set(statuses.values()) == {"COMPLETED"}, statuses
    finally:
        cluster.profile.start_replica(0)
    time.sleep(5)  # the restarted replica's workers (outbox, reconciler) have run a few passes
    assert airflow_runs(cluster, pipeline["dagId"]) == sorted(ids)
    revived = cluster.api(0, tenant)
    assert {revived.get(f"/v1/pipelines/executions/{i}").json()["status"] for i in ids} == {"COMPLETED"}


def test_redis_restarted_while_tasks_are_queued_the_runs_complete(cluster: Cluster) -> None:
    tenant = cluster.tenant()
    api = cluster.api(0, tenant)
    pipeline = create_active(api, small("broker", "public.broker_copy"))
    ids = [execute(api, pipeline["pipelineId"]) for _ in range(4)]
    with cluster.airflow() as airflow:
        wait_for(
            lambda: airflow.get(f"/dags/{pipeline['dagId']}/dagRuns", params={"state": "running"}).json(),
            lambda body: body["total_entries"] > 0,
            timeout=120,
        )
    cluster.redis.stop()  # the broker goes away with whatever it held
    time.sleep(5)
    restarted = time.monotonic()
    cluster.redis.start()
    statuses = wait_all(api, ids, timeout=600)
    print(f"Redis restarted: the 4 runs finished {time.monotonic() - restarted:.1f} s later")
    assert set(statuses.values()) == {"COMPLETED"}, statuses
    assert airflow_runs(cluster, pipeline["dagId"]) == sorted(ids)


def test_the_service_database_restarted_gives_503_meanwhile_and_the_service_recovers_by_itself(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A throwaway PostgreSQL cluster (its own port, never the shared server) as a replica's database."""
    password = uuid.uuid4().hex
    pg = ScramCluster.start(password)
    port = free_port()
    env = {
        **cluster.profile.service_env(0),
        "PIPELINE_PORT": str(port),
        "PIPELINE_DATABASE_URL": f"postgresql://postgres:{password}@127.0.0.1:{pg.port}/postgres",
    }
    with open(tmp_path / "service.log", "wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "pipeline-service"), "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        tenant = "db" + uuid.uuid4().hex[:8]
        headers = {"Authorization": f"Bearer {cluster.profile.token(tenant)}", "X-Tenant-ID": tenant}
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30)
        up = wait_for(lambda: _status(api, "/health"), lambda code: code == 200, timeout=60)
        assert up == 200, (tmp_path / "service.log").read_text()[-2000:]
        created = api.post("/v1/pipelines/connections", json=connection_body("kept", cluster.warehouse_db))
        assert created.status_code == 201, created.text

        pg.halt()
        for resp in (api.get("/v1/pipelines/connections"), api.post("/v1/pipelines", json=small("x", "public.x"))):
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"]["code"] == "database_unavailable" and resp.headers["Retry-After"]
        resumed = time.monotonic()
        pg.resume()
        back = wait_for(lambda: _status(api, "/v1/pipelines/connections"), lambda code: code == 200, timeout=60)
        print(f"service database restarted: the service answered 200 again {time.monotonic() - resumed:.1f} s later")
        assert back == 200
        assert [c["name"] for c in api.get("/v1/pipelines/connections").json()["items"]] == ["kept"]
        assert proc.poll() is None  # recovered without a restart of its own
        assert "Traceback" not in (tmp_path / "service.log").read_text()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pg.stop()


def _status(api: httpx.Client, path: str) -> int:
    try:
        return api.get(path).status_code
    except httpx.HTTPError:
        return 0
