"""A bounded mixed load on loopback: reads, creates and executes at a fixed rate (open loop), against a real
Airflow and the service started like `make up` starts them (tests/e2e/harness.example_stack, the service's
store on the local PostgreSQL). Prints p50/p99 per route and every error.

Open loop: request i is due at start + i/rate whatever the answers before it; its latency counts from that
due time, so a slow server cannot slow the load down and hide its own queueing (coordinated omission). The
load runs in a separate process (the service runs in this one): a clock hands each request to one of
WORKERS threads, each with its own keep-alive httpx.Client. Bounded: exactly rate x seconds requests, at
most MAX_IN_FLIGHT pending at a time (a request due while that many are pending is counted as an error, not
sent), each with a 30 s timeout.

The mix per 2 s at 200 requests/s: 1 execute, 1 pipeline create, 2 connection creates, 396 reads. Executes
stay inside the tenant's rate limit (60/min) and the pipelines' max_active_runs, so every request has one
right answer (2xx): any other status is an error. The executed pipelines' DAGs are paused in Airflow: each
execute makes a real Airflow run, which queues instead of running 30 ETLs on the machine under test.

Usage: .venv/bin/python bench/load.py [--seconds 60] [--rate 200]   (needs the local PostgreSQL)
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from tests.e2e import harness  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = json.loads((REPO / "examples" / "daily-sales-etl.json").read_text())
MAX_IN_FLIGHT = 400
WORKERS = 128  # threads sending requests, each with its own keep-alive connection
TARGETS = 4  # pipelines the load executes, round robin
MAX_ACTIVE_RUNS = 12  # per target: above the executes one target gets in a minute (plus its seed)
CYCLE = 400  # slots per cycle: 2 s at 200/s
WRITES = {0: "execute", 200: "create pipeline", 100: "create connection", 300: "create connection"}
READS = {  # route: weight
    "execution status": 40,
    "list pipelines": 20,
    "get pipeline": 15,
    "list executions": 10,
    "list connections": 10,
    "list templates": 5,
}
EXPECTED = {"execute": 202, "create pipeline": 201, "create connection": 201}


@dataclass
class Fixture:
    """What the load needs to know of the stack: where it is, who it is, which ids exist."""

    url: str
    headers: dict[str, str]
    targets: list[str]
    executions: list[str]
    pipelines: list[str]


@dataclass
class Result:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # from the due time
    served: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # from the send
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    max_lag: float = 0.0
    wall: float = 0.0
    cpu: float = 0.0  # the load generator's CPU seconds


def plan(total: int, seed: int = 11) -> list[str]:
    """The route of every slot: writes at fixed slots of each cycle, reads drawn by weight (fixed seed)."""
    rng = random.Random(seed)
    names, weights = list(READS), list(READS.values())
    return [WRITES.get(i % CYCLE) or rng.choices(names, weights)[0] for i in range(total)]


def request_of(route: str, i: int, fx: Fixture) -> tuple[str, str, dict[str, Any] | None]:
    """(method, path, json body) of slot i."""
    rng = random.Random(i)
    if route == "execute":
        return "POST", f"/v1/pipelines/{fx.targets[(i // CYCLE) % len(fx.targets)]}/execute", {}
    if route == "create pipeline":
        return "POST", "/v1/pipelines", {**copy.deepcopy(EXAMPLE), "name": f"load-{i}"}
    if route == "create connection":
        body = {"name": f"load-{i}", "type": "postgres", "host": "127.0.0.1", "port": 5432, "database": "none"}
        return "POST", "/v1/pipelines/connections", {**body, "credentials": {"username": "u", "password": "p"}}
    paths = {
        "execution status": f"/v1/pipelines/executions/{rng.choice(fx.executions)}",
        "list pipelines": "/v1/pipelines?size=20",
        "get pipeline": f"/v1/pipelines/{rng.choice(fx.pipelines)}",
        "list executions": f"/v1/pipelines/executions?pipelineId={rng.choice(fx.targets)}",
        "list connections": "/v1/pipelines/connections",
        "list templates": "/v1/pipelines/templates?size=10",
    }
    return "GET", paths[route], None


class Clients:
    """One keep-alive httpx.Client per worker thread. Measured on this machine against a trivial ASGI app,
    httpx costs 2.3 ms of CPU per request through AsyncClient and 1.0 ms through Client in threads: at
    200/s the difference is a fifth of a core taken from the service under test."""

    def __init__(self, fx: Fixture) -> None:
        self.fx, self.local = fx, threading.local()
        self.all: list[httpx.Client] = []

    def get(self) -> httpx.Client:
        client = getattr(self.local, "client", None)
        if client is None:
            # Idle connections are dropped before uvicorn's 5 s keep-alive closes them: a request sent on a
            # connection the server is closing at that moment fails with a ReadError unrelated to the service.
            limits = httpx.Limits(max_connections=4, keepalive_expiry=2)
            client = self.local.client = httpx.Client(
                base_url=self.fx.url, headers=self.fx.headers, limits=limits, timeout=30
            )
            self.all.append(client)
        return client


def _fire(clients: Clients, result: Result, i: int, route: str, due: float) -> None:
    method, path, body = request_of(route, i, clients.fx)
    sent = time.perf_counter()
    try:
        resp = clients.get().request(method, path, json=body)
        if resp.status_code != EXPECTED.get(route, 200):
            result.errors[route].append(f"{resp.status_code} {method} {path}: {resp.text[:200]}")
    except httpx.HTTPError as exc:
        result.errors[route].append(f"{type(exc).__name__} {method} {path}")
    done = time.perf_counter()
    result.latencies[route].append(done - due)
    result.served[route].append(done - sent)


def _load(fx: Fixture, seconds: float, rate: float) -> Result:
    """Each request handed to the pool at its due time; a request due while MAX_IN_FLIGHT are pending (queued
    or being answered) is not sent and counts as an error."""
    result, clients, in_flight = Result(), Clients(fx), threading.Semaphore(MAX_IN_FLIGHT)
    routes = plan(int(seconds * rate))
    for route in set(routes):  # created here: the workers only append (atomic under the GIL)
        result.latencies[route], result.served[route], result.errors[route] = [], [], []
    with ThreadPoolExecutor(WORKERS) as pool:
        start = time.perf_counter()
        for i, route in enumerate(routes):
            due = start + i / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            result.max_lag = max(result.max_lag, time.perf_counter() - due)
            if not in_flight.acquire(blocking=False):
                result.errors[route].append(f"not sent: {MAX_IN_FLIGHT} requests already in flight")
                continue
            future = pool.submit(_fire, clients, result, i, route, due)
            future.add_done_callback(lambda _: in_flight.release())
    result.wall = time.perf_counter() - start
    for client in clients.all:
        client.close()
    return result


def run_load(fx: Fixture, seconds: float, rate: float) -> Result:
    """The load generator's process."""
    cpu = time.process_time()
    result = _load(fx, seconds, rate)
    result.cpu = time.process_time() - cpu
    return result


def prepare(running: harness.Running, api: httpx.Client) -> Fixture:
    """TARGETS pipelines (ACTIVE, DAG paused in Airflow) with one execution each, for the reads and executes."""
    targets, executions = [], []
    for n in range(TARGETS):
        body = copy.deepcopy(EXAMPLE)
        body["name"] = f"target-{n}"
        body["definition"]["orchestration"]["max_active_runs"] = MAX_ACTIVE_RUNS
        pid = api.post("/v1/pipelines", json=body).json()["pipelineId"]
        pipeline = harness.wait_for(lambda pid=pid: api.get(f"/v1/pipelines/{pid}").json(), _settled, 180, 0.2)
        assert pipeline["status"] == "ACTIVE", pipeline
        paused = api.post(f"/v1/airflow/dags/{pipeline['dagId']}/pause")
        assert paused.status_code == 200, paused.text
        executed = api.post(f"/v1/pipelines/{pid}/execute", json={})
        assert executed.status_code == 202, executed.text
        targets.append(pid)
        executions.append(executed.json()["executionId"])
    return Fixture(running.url, dict(api.headers), targets, executions, targets)


def _settled(pipeline: dict[str, Any]) -> bool:
    return pipeline["status"] in ("ACTIVE", "INVALID")


def report(result: Result, seconds: float, rate: float) -> int:
    """Print the figures; the number of errors."""
    sent = sum(len(v) for v in result.latencies.values())
    print(
        f"\n{sent} requests in {result.wall:.1f} s (planned {int(seconds * rate)} at {rate:.0f}/s over {seconds:.0f} s)"
    )
    print(f"largest lag of the load generator behind its clock: {result.max_lag * 1000:.1f} ms")
    print("latency from each request's due time (open loop); the last column from its actual send")
    print(f"{'route':<20}{'count':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}{'p99 sent ms':>13}")
    for route in sorted(result.latencies, key=lambda r: -len(result.latencies[r])):
        xs, served = sorted(result.latencies[route]), sorted(result.served[route])
        print(
            f"{route:<20}{len(xs):>7}{statistics.median(xs) * 1000:>9.1f}{_p99(xs) * 1000:>9.1f}"
            f"{xs[-1] * 1000:>9.1f}{len(result.errors.get(route, [])):>8}{_p99(served) * 1000:>13.1f}"
        )
    errors = [e for route in result.errors for e in result.errors[route]]
    print(f"errors: {len(errors)}")
    kinds = Counter(f"{route}: {_kind(e)}" for route in result.errors for e in result.errors[route])
    for kind, count in kinds.most_common():
        print(f"  {count:>6} x {kind}")
    answered = [e for e in errors if not e.startswith("not sent")]
    if answered:
        print("  e.g. " + answered[0][:240])
    return len(errors)


def _kind(error: str) -> str:
    """`503 POST`, `ReadError GET`, `not sent`: an error without its path and body."""
    return error.split(" /")[0].split(":")[0]


def _p99(xs: list[float]) -> float:
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=200, help="requests per second")
    args = parser.parse_args()
    t0 = time.monotonic()
    with harness.example_stack(service_database=True) as (running, api):
        print(f"stack up: {time.monotonic() - t0:.1f} s")
        fx = prepare(running, api)
        print(f"{TARGETS} target pipelines ACTIVE, their DAGs paused: {time.monotonic() - t0:.1f} s")
        before, service_cpu = os.getloadavg()[0], time.process_time()
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            result = pool.apply(run_load, (fx, args.seconds, args.rate))
        service_cpu = time.process_time() - service_cpu  # this process: the service (and its workers) alone
        print(
            f"CPU per request: service {service_cpu / int(args.seconds * args.rate) * 1000:.2f} ms, "
            f"load generator {result.cpu / int(args.seconds * args.rate) * 1000:.2f} ms"
        )
        print(
            f"machine load average (1 min, {os.cpu_count()} CPUs): {before:.1f} before, {os.getloadavg()[0]:.1f} after"
        )
    return 1 if report(result, args.seconds, args.rate) else 0


if __name__ == "__main__":
    sys.exit(main())
