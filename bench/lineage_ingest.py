"""Throughput and latency of the OpenLineage receiver (POST /api/v1/lineage) with realistic events.

The service runs as `make up` serves it (uvicorn, the app of service.main) in its own process(es), its store
on a throwaway database of the local PostgreSQL; no Airflow (the receiver never calls it). The events are
shaped like the ones Airflow 3.3's openlineage provider sent for the example pipeline (captured by
tests/e2e/test_lineage_receiver.py: the same facets, ~5 KB each): per run a DAG START, START and COMPLETE of
eight tasks (the sources', transformations' and sink's COMPLETE with their input and output datasets and
output statistics), a DAG COMPLETE — 18 events.

What they match: the bench tenant's connections and pipelines are created through the API (the real path;
they stay DEPLOYING, there is no Airflow to publish to); the executions the events name are INSERTED into
the executions table directly, because an execute needs an ACTIVE pipeline, i.e. Airflow.

Load: a closed loop of CONCURRENCY keep-alive connections in a separate process, each sending its share of
the pre-built requests one after the other (a minimal HTTP/1.1 client on asyncio streams, so that the load
generator's own CPU stays small on a 2-core machine). Every answer must be 200 {"status": "stored"}.

Usage: .venv/bin/python bench/lineage_ingest.py [--runs 500] [--concurrency 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from connections.network import LOOPBACK_NETWORKS  # noqa: E402
from service.config import Settings  # noqa: E402
from service.db import migrate  # noqa: E402
from tests.e2e.harness import free_port  # noqa: E402
from tests.pg import admin, pg_url  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = json.loads((REPO / "examples" / "daily-sales-etl.json").read_text())
PRODUCER = "https://github.com/apache/airflow/tree/providers-openlineage/2.20.3"
SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
TENANT, PIPELINES = "bench", 4
PG = "postgres://127.0.0.1:5432"
# (task id, inputs, outputs with rows and bytes) of the example's run, as its operators report them.
TASKS: list[tuple[str, list[str], list[tuple[str, int, int]]]] = [
    ("prepare_staging", [], []),
    ("sources.raw_transactions", ["sales.public.raw_transactions"], [("wh.stg_{r}.raw_transactions", 159, 24576)]),
    ("sources.products", ["sales.public.products"], [("wh.stg_{r}.products", 20, 32768)]),
    (
        "transformations.clean_transactions",
        ["wh.stg_{r}.raw_transactions"],
        [("wh.stg_{r}.clean_transactions", 152, 8192)],
    ),
    (
        "transformations.enrich_with_products",
        ["wh.stg_{r}.clean_transactions", "wh.stg_{r}.products"],
        [("wh.stg_{r}.enrich_with_products", 152, 32768)],
    ),
    (
        "sinks.daily_transactions",
        ["wh.stg_{r}.enrich_with_products"],
        [("wh.analytics.daily_transactions", 152, 32768)],
    ),
    ("quality.daily_transactions", [], []),
    ("cleanup_staging", [], []),
]


def _facet(schema: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": f"https://openlineage.io/spec/facets/{schema}", **fields}


def _dag(dag_id: str) -> dict[str, Any]:
    return {
        "dag_id": dag_id,
        "description": EXAMPLE["description"],
        "fileloc": f"/opt/pipeline/dags/pipeline_{dag_id}.py",
        "owner": "bench",
        "owner_links": {},
        "start_date": "2024-01-01T00:00:00+00:00",
        "tags": "['pipeline:daily-sales-etl', 'daily', 'sales', 'tenant:bench', 'etl']",
        "timetable": {"dag_id": dag_id, "schedules": []},
        "timetable_summary": "None",
    }


def _dag_run(dag_id: str, run_id: str) -> dict[str, Any]:
    return {
        "clear_number": 0,
        "conf": {"end_date": "2026-02-12", "start_date": "2026-02-01"},
        "dag_id": dag_id,
        "run_after": "2026-12-05T07:13:43.235259+00:00",
        "run_id": run_id,
        "run_type": "manual",
        "start_date": "2026-12-05T07:13:44.220232+00:00",
        "triggering_user_name": "admin",
    }


def _common_run_facets() -> dict[str, Any]:
    return {
        "processing_engine": _facet(
            "1-1-1/ProcessingEngineRunFacet.json", name="Airflow", openlineageAdapterVersion="2.20.3", version="3.3.2"
        ),
        "tags": _facet(
            "1-0-0/TagsRunFacet.json",
            tags=[{"key": "openlineage_client_version", "source": "OPENLINEAGE_CLIENT", "value": "1.54.0"}],
        ),
    }


def _job_facets(task_id: str) -> dict[str, Any]:
    tags = ["daily", "etl", "pipeline:daily-sales-etl", "sales", "tenant:bench"]
    return {
        "documentation": _facet(
            "1-1-0/DocumentationJobFacet.json", contentType="text/markdown", description=f"Task `{task_id}`."
        ),
        "jobType": _facet("2-0-4/JobTypeJobFacet.json", integration="AIRFLOW", jobType="TASK", processingType="BATCH"),
        "ownership": _facet("1-0-1/OwnershipJobFacet.json", owners=[{"name": "bench"}]),
        "tags": _facet("1-0-0/TagsJobFacet.json", tags=[{"key": t, "source": "AIRFLOW", "value": t} for t in tags]),
    }


def run_events(dag_id: str, run_id: str, n: int) -> list[dict[str, Any]]:
    """The 18 events of one run of the example, as Airflow's provider sends them."""
    dag_run_ol = str(uuid.uuid4())
    t0 = f"2026-12-05T07:{n // 3600 % 60:02d}:{n // 60 % 60:02d}.{n % 60:02d}0000+00:00"
    events: list[dict[str, Any]] = [
        {
            "eventTime": t0,
            "eventType": "START",
            "producer": PRODUCER,
            "schemaURL": SCHEMA,
            "job": {"namespace": "pipeline-service", "name": dag_id, "facets": {}},
            "run": {
                "runId": dag_run_ol,
                "facets": {
                    "airflowDagRun": _facet(
                        "2-0-2/OpenLineage.json", dag=_dag(dag_id), dagRun=_dag_run(dag_id, run_id)
                    ),
                    **_common_run_facets(),
                },
            },
            "inputs": [],
            "outputs": [],
        }
    ]
    for task_id, inputs, outputs in TASKS:
        task_ol = str(uuid.uuid4())
        for event_type in ("START", "COMPLETE"):
            done = event_type == "COMPLETE"
            events.append(
                {
                    "eventTime": t0.replace("+00:00", f"{len(events):03d}+00:00"),
                    "eventType": event_type,
                    "producer": PRODUCER,
                    "schemaURL": SCHEMA,
                    "job": {
                        "namespace": "pipeline-service",
                        "name": f"{dag_id}.{task_id}",
                        "facets": _job_facets(task_id),
                    },
                    "run": {
                        "runId": task_ol,
                        "facets": {
                            "airflow": _facet(
                                "2-0-2/OpenLineage.json",
                                dag=_dag(dag_id),
                                dagRun=_dag_run(dag_id, run_id),
                                task={"task_id": task_id, "operator_class": "StageTableOperator", "retries": 0},
                                taskInstance={"dag_bundle_name": "dags-folder", "try_number": 1},
                                taskUuid=task_ol,
                            ),
                            "parent": _facet(
                                "1-2-0/ParentRunFacet.json",
                                job={"facets": {}, "name": dag_id, "namespace": "pipeline-service"},
                                run={"facets": {}, "runId": dag_run_ol},
                            ),
                            **_common_run_facets(),
                        },
                    },
                    "inputs": [
                        {"facets": {}, "inputFacets": {}, "name": name.format(r=n), "namespace": PG}
                        for name in (inputs if done else [])
                    ],
                    "outputs": [
                        {
                            "facets": {},
                            "name": name.format(r=n),
                            "namespace": PG,
                            "outputFacets": {
                                "outputStatistics": _facet(
                                    "1-0-2/OutputStatisticsOutputDatasetFacet.json", rowCount=rows, size=size
                                )
                            },
                        }
                        for name, rows, size in (outputs if done else [])
                    ],
                }
            )
    events.append({**events[0], "eventType": "COMPLETE", "eventTime": t0.replace("+00:00", "999+00:00")})
    return events


# -- the load generator (its own process) ---------------------------------------------------------------------


async def _connection(port: int, requests: list[bytes], latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for request in requests:
        started = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        if not head.startswith(b"HTTP/1.1 200") or b'"stored"' not in body:
            errors.append((head.split(b"\r\n", 1)[0] + b" " + body[:200]).decode(errors="replace"))
    writer.close()


def _load(port: int, shares: list[list[bytes]], out: Any) -> None:
    latencies: list[float] = []
    errors: list[str] = []

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(_connection(port, share, latencies, errors) for share in shares))
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    out.put((elapsed, latencies, errors))


def _requests(events: list[dict[str, Any]], key: str) -> list[bytes]:
    out = []
    for event in events:
        body = json.dumps(event).encode()
        head = (
            "POST /api/v1/lineage HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


# -- setup ------------------------------------------------------------------------------------------------------


def _serve(settings_env: dict[str, str], port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "uvicorn", "service.main:create_app", "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, env={**os.environ, **settings_env}, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of the service: its process and its uvicorn workers."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the service exited")
        try:
            httpx.get(url + "/openapi.json", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise TimeoutError("the service did not start")


def _setup(url: str, token: str) -> list[tuple[str, str]]:
    """The tenant's connections and pipelines through the API; their (pipeline id, dag id)."""
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": TENANT}, timeout=30)
    for name in ("sales-database", "warehouse"):
        body = {"name": name, "type": "postgres", "host": "127.0.0.1", "port": 5432, "database": "x",
                "credentials": {"username": "postgres", "password": "unused"}}  # fmt: skip
        resp = api.post("/v1/pipelines/connections", json=body)
        assert resp.status_code == 201, resp.text
    made = []
    for i in range(PIPELINES):
        resp = api.post("/v1/pipelines", json={**EXAMPLE, "name": f"bench-{i}"})
        assert resp.status_code == 201, resp.text
        made.append((resp.json()["pipelineId"], resp.json()["dagId"]))
    return made


def _insert_executions(db_url: str, pipelines: list[tuple[str, str]], runs: int) -> list[tuple[str, str]]:
    """(dag id, execution id) of `runs` executions, inserted directly (an execute needs Airflow)."""
    made = []
    with psycopg.connect(db_url) as conn:
        for n in range(runs):
            pipeline_id, dag_id = pipelines[n % len(pipelines)]
            execution_id = f"exec-{uuid.uuid4().hex[:24]}"
            conn.execute(
                "INSERT INTO executions (id, tenant_id, pipeline_id, pipeline_revision, dag_id, status, engine, "
                "priority, parameters, submitted, submit_attempts, progress, submitted_at, updated_at) VALUES "
                "(%s, %s, %s, 1, %s, 'RUNNING', 'airflow', 'NORMAL', '{}', true, 1, '{}', now(), now())",
                (execution_id, TENANT, pipeline_id, dag_id),
            )
            made.append((dag_id, execution_id))
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=500, help="pipeline runs (18 events each)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections posting at once")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes of the service")
    args = parser.parse_args()

    db = f"bench_lineage_{uuid.uuid4().hex[:6]}"
    admin(f'CREATE DATABASE "{db}"')
    proc = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            settings = Settings(data_dir=Path(tmp), database_url=pg_url(db))
            key, secret = settings.resolved_openlineage_api_key(), settings.resolved_jwt_secret()
            migrate(settings.sqlalchemy_url)  # once, before several workers start
            env = {
                "PIPELINE_DATA_DIR": tmp,
                "PIPELINE_DATABASE_URL": pg_url(db),
                "PIPELINE_BACKGROUND_TASKS": "false",  # no Airflow to publish to or reconcile with
                "PIPELINE_AIRFLOW_URL": f"http://127.0.0.1:{free_port()}",
                "PIPELINE_DAGS_DIR": str(Path(tmp) / "dags"),
                "PIPELINE_ALLOWED_NETWORKS": LOOPBACK_NETWORKS,  # the connections point at this machine
            }
            proc = _serve(env, port, args.workers, Path(tmp) / "service.log")
            url = f"http://127.0.0.1:{port}"
            _wait_up(url, proc)
            from service.auth import mint_token

            pipelines = _setup(url, mint_token(secret, tenant=TENANT, roles=["admin"], subject="bench"))
            executions = _insert_executions(pg_url(db), pipelines, args.runs + 10)
            warm = [e for n, (d, x) in enumerate(executions[args.runs :]) for e in run_events(d, x, 100_000 + n)]
            events = [e for n, (d, x) in enumerate(executions[: args.runs]) for e in run_events(d, x, n)]
            sizes = [len(json.dumps(e)) for e in events]
            # Events of one run go in order on one connection (as one Airflow run sends them, one task at a
            # time per task); the runs are spread over the connections.
            per_run = 2 * len(TASKS) + 2
            shares: list[list[bytes]] = [[] for _ in range(args.concurrency)]
            for i in range(0, len(events), per_run):
                shares[(i // per_run) % args.concurrency].extend(_requests(events[i : i + per_run], key))
            warm_shares = [_requests(warm[i :: args.concurrency], key) for i in range(args.concurrency)]

            ctx = multiprocessing.get_context("spawn")
            for label, batch in (("warm-up", warm_shares), ("measured", shares)):
                out = ctx.Queue()
                loader = ctx.Process(target=_load, args=(port, batch, out))
                cpu_before = _cpu_seconds(proc.pid)
                loader.start()
                elapsed, latencies, errors = out.get()
                loader.join()
                cpu = _cpu_seconds(proc.pid) - cpu_before
                if label == "warm-up":
                    continue
                latencies.sort()
                n = len(latencies)
                print(f"events: {n} ({args.runs} runs x {per_run}), body {statistics.mean(sizes) / 1024:.1f} KB avg")
                print(
                    f"service: uvicorn, {args.workers} worker process(es), PostgreSQL; "
                    f"load: {args.concurrency} connections"
                )
                print(f"throughput: {n / elapsed:,.0f} events/s over {elapsed:.1f} s")
                print(
                    f"latency: p50 {latencies[n // 2] * 1000:.1f} ms  p90 {latencies[int(n * 0.9)] * 1000:.1f} ms  "
                    f"p99 {latencies[int(n * 0.99)] * 1000:.1f} ms  max {latencies[-1] * 1000:.1f} ms"
                )
                print(f"errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
                print(
                    f"service CPU: {cpu * 1e3 / n:.2f} ms per event ({cpu / elapsed * 100:.0f}% of a core); "
                    f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
                )
            with psycopg.connect(pg_url(db)) as conn:
                stored = conn.execute("SELECT count(*) FROM lineage_events").fetchone()[0]  # type: ignore[index]
                rows = conn.execute(
                    "SELECT count(*) FROM executions WHERE rows_processed = 179 AND rows_written = 152"
                ).fetchone()[0]  # type: ignore[index]
            print(f"stored: {stored} events; executions with rowsProcessed 179 / rowsWritten 152: {rows}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
