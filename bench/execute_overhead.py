"""What the service adds on top of Airflow, on a real Airflow started like `make up` starts it:

  1. trigger-to-success wall time of one small DAG (stage one source, load one sink), N times triggered
     directly through Airflow's REST API and N times through POST /v1/pipelines/{id}/execute, interleaved;
     each side polls its own status endpoint every 0.25 s (target: service / direct <= 1.05 on the median);
  2. GET /v1/pipelines/executions/{id} latency under 50 concurrent clients, against a separate
     `pipeline-service serve` process on PostgreSQL (target p99 < 50 ms): open loop (each client polls
     every 250 ms) and closed loop (back to back: the saturation point of one process), with the server's
     CPU time per request (a cached status is answered by service/executions/fastpath.py).

Usage: .venv/bin/python bench/execute_overhead.py [runs-per-side=20] [requests-per-client=40]
(needs the local PostgreSQL, like the tests)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.auth import mint_token  # noqa: E402
from tests.e2e import harness  # noqa: E402

POLL = 0.25
CLIENTS = 50


def pipeline_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "definition": {
            "sources": {"raw": {"type": "postgres", "connection": "sales-database", "table": "public.products"}},
            "sinks": {
                "out": {"type": "postgres", "connection": "warehouse", "table": "bench.products", "input": "raw",
                        "mode": "overwrite"}
            },
            "orchestration": {"retries": 0, "max_active_runs": 1},
        },
    }  # fmt: skip


def timed(start: float, fetch, done) -> float:  # type: ignore[no-untyped-def]
    while not done(fetch()):
        time.sleep(POLL)
    return time.monotonic() - start


def direct_run(af: httpx.Client, dag_id: str) -> float:
    run_id = f"bench_{uuid.uuid4().hex[:10]}"
    t = time.monotonic()
    af.post(f"/dags/{dag_id}/dagRuns", json={"dag_run_id": run_id, "logical_date": None, "conf": {}}).raise_for_status()
    state = ""

    def fetch() -> str:
        nonlocal state
        state = af.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
        return state

    took = timed(t, fetch, lambda s: s in ("success", "failed"))
    assert state == "success", state
    return took


def service_run(api: httpx.Client, pipeline_id: str) -> tuple[float, str]:
    t = time.monotonic()
    r = api.post(f"/v1/pipelines/{pipeline_id}/execute", json={})
    assert r.status_code == 202, r.text
    eid = r.json()["executionId"]
    status = ""

    def fetch() -> str:
        nonlocal status
        status = api.get(f"/v1/pipelines/executions/{eid}").json()["status"]
        return status

    took = timed(t, fetch, lambda s: s in ("COMPLETED", "FAILED", "CANCELLED"))
    assert status == "COMPLETED", status
    return took, eid


def compare(running: harness.Running, api: httpx.Client, pipeline: dict[str, Any], runs: int) -> list[str]:
    af = running.airflow()
    direct, service, ids = [], [], []
    for i in range(runs):  # interleaved, so that drift in machine load hits both sides alike
        direct.append(direct_run(af, pipeline["dagId"]))
        took, eid = service_run(api, pipeline["pipelineId"])
        service.append(took)
        ids.append(eid)
        print(f"  run {i + 1:2d}: direct {direct[-1]:6.2f} s   service {service[-1]:6.2f} s", flush=True)
    d, s = statistics.median(direct), statistics.median(service)
    print(f"trigger -> success, median of {runs}: direct {d:.2f} s, service {s:.2f} s, ratio {s / d:.3f}")
    print(f"  means: direct {statistics.mean(direct):.2f} s, service {statistics.mean(service):.2f} s, "
          f"ratio {statistics.mean(service) / statistics.mean(direct):.3f}")  # fmt: skip
    return ids


def serve_process(running: harness.Running) -> tuple[subprocess.Popen[bytes], str]:
    port = harness.free_port()
    s = running.settings
    env = {
        **os.environ,
        "PIPELINE_DATA_DIR": str(s.data_dir),
        "PIPELINE_DATABASE_URL": s.database_url or "",
        "PIPELINE_DAGS_DIR": str(s.dags_dir),
        "PIPELINE_AIRFLOW_URL": s.airflow_url or "",
        "PIPELINE_AIRFLOW_PASSWORD": running.stack.password(),
        "PIPELINE_PORT": str(port),
        "PIPELINE_BACKGROUND_TASKS": "false",  # the in-test service already runs the workers
    }
    exe = str(Path(sys.executable).parent / "pipeline-service")
    proc = subprocess.Popen([exe, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("pipeline-service serve did not start")


async def load(url: str, token: str, tenant: str, ids: list[str], per_client: int, every: float) -> list[float]:
    """50 clients at once, each `per_client` GETs; `every` > 0: one request per client every `every` s
    (open loop, like dashboards polling), 0: back to back (closed loop: measures saturation)."""
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as client:

        async def one_client(n: int) -> list[float]:
            out = []
            await asyncio.sleep(every * n / CLIENTS)  # spread the clients over the interval
            start = time.perf_counter()
            for i in range(per_client):
                t = time.perf_counter()
                async with client.get(f"/v1/pipelines/executions/{ids[(n + i) % len(ids)]}") as r:
                    await r.read()
                    assert r.status == 200, r.status
                out.append(time.perf_counter() - t)
                if every:
                    await asyncio.sleep(max(0.0, start + (i + 1) * every - time.perf_counter()))
            return out

        await asyncio.gather(*(one_client(n) for n in range(CLIENTS)))  # warm-up: connections, caches
        results = await asyncio.gather(*(one_client(n) for n in range(CLIENTS)))
    return [x for r in results for x in r]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: what one request costs the server, whatever else loads the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency(running: harness.Running, tenant: str, ids: list[str], per_client: int) -> None:
    proc, url = serve_process(running)
    try:
        token = mint_token(running.settings.resolved_jwt_secret(), tenant=tenant, roles=["viewer"])
        for every, label in ((0.25, "each polling every 250 ms (open loop)"), (0.0, "back to back (closed loop)")):
            t, cpu = time.perf_counter(), cpu_seconds(proc.pid)
            samples = sorted(asyncio.run(load(url, token, tenant, ids, per_client, every)))
            cpu_us = (cpu_seconds(proc.pid) - cpu) / (2 * len(samples)) * 1e6  # warm-up round included
            rate = len(samples) / (time.perf_counter() - t) * 2  # warm-up round included in the wall time
            p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99) - 1]
            print(
                f"GET /v1/pipelines/executions/{{id}}, {CLIENTS} concurrent clients {label}: {len(samples)} requests, "
                f"~{rate:.0f} req/s, server CPU {cpu_us:.0f} us/request, "
                f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {samples[-1] * 1000:.1f} ms",
                flush=True,
            )
    finally:
        proc.terminate()
        proc.wait(10)


def main(runs: int, per_client: int) -> None:
    with harness.example_stack(service_database=True) as (running, api):
        pid = api.post("/v1/pipelines", json=pipeline_body("overhead")).json()["pipelineId"]
        pipeline = harness.wait_for(
            lambda: api.get(f"/v1/pipelines/{pid}").json(), lambda p: p["status"] in ("ACTIVE", "INVALID"), 180
        )
        assert pipeline["status"] == "ACTIVE", pipeline
        service_run(api, pid)  # warm-up (first task start-up imports are slow on both paths)
        direct_run(running.airflow(), pipeline["dagId"])
        ids = compare(running, api, pipeline, runs) if runs else [service_run(api, pid)[1] for _ in range(3)]
        latency(running, "bench", ids, per_client)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20, int(sys.argv[2]) if len(sys.argv) > 2 else 40)
