"""Latency of the monitoring metrics (GET /v1/pipelines/monitoring/metrics) over 100,000 stored executions.

A throwaway database on the local PostgreSQL (tests/pg.py), migrated to the newest schema, is seeded in the
database itself (INSERT ... SELECT over generate_series: no round trip per row) with one tenant's PIPELINES
pipelines and EXECUTIONS executions spread evenly over the last 90 days: 90 % COMPLETED, 8 % FAILED (one of a
dozen error messages, the failing task's row marked failed), 2 % CANCELLED, a few still RUNNING in the last
hour (their cost is computed live); durations of 1-30 minutes by pipeline with noise, rows and bytes, the
stored cost of settled runs, and TASKS task rows per finished execution (execution_tasks, as sync writes them).
Another tenant gets a tenth as many, so that the tenant filter has something to filter.

Then the metrics rollup (service/monitoring/rollup.py) is built as the `metrics-rollup` worker builds it,
step after step until every sealed day is in (its time is printed), and, for each period, CALLS calls of the
pipeline metrics (a random pipeline each) and of the tenant's totals and report, each in its own session as a
request would be, through the service functions the router calls (service.monitoring.metrics); p50/p95/max in
milliseconds. The database is dropped at the end.

Usage: .venv/bin/python bench/metrics_query.py [--executions 100000] [--pipelines 100] [--calls 30]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from service.config import RateCard  # noqa: E402
from service.db import make_engine, migrate  # noqa: E402
from service.monitoring import metrics, rollup  # noqa: E402
from service.monitoring.metrics_schemas import PERIODS  # noqa: E402
from service.pipelines.models import Pipeline  # noqa: E402
from tests.pg import admin, pg_url  # noqa: E402

TENANT, OTHER = "bench", "other"
TASKS = 5

SEED_PIPELINES = """
INSERT INTO pipelines (id, tenant_id, name, dag_id, tags, version, revision, status, created_at, updated_at)
SELECT %(tenant)s || '-p' || i, %(tenant)s, 'pipeline-' || i, %(tenant)s || '_dag_' || i, '[]', '1.0.0', 1,
       'ACTIVE', now(), now()
FROM generate_series(1, %(pipelines)s) AS i
"""

# Execution i: pipeline i % P, submitted evenly over 90 days (the newest a minute ago); its duration grows with
# its pipeline's number (1-30 min) with noise; status by i % 50 (45 COMPLETED, 4 FAILED, 1 CANCELLED).
SEED_EXECUTIONS = """
INSERT INTO executions (id, tenant_id, pipeline_id, pipeline_revision, dag_id, status, engine, priority,
    parameters, submitted, submit_attempts, progress, budget_override, error_message, rows_processed,
    bytes_processed, cost_compute_usd, cost_storage_usd, cost_network_usd, cost_settled_for,
    submitted_at, started_at, finished_at, updated_at)
SELECT e.id, %(tenant)s, e.pipeline_id, 1, %(tenant)s || '_dag_' || e.p, e.status, 'airflow', 'NORMAL',
    '{}', true, 1, '{}', false,
    CASE WHEN e.status = 'FAILED' THEN 'task ''transform_' || (e.i %% 3) || ''' failed: error ' || (e.i %% 12) END,
    1000 + e.i %% 5000, 100000 + e.i %% 777777,
    e.cost, 0.001, 0, e.finished, e.submitted, e.submitted + interval '5 seconds', e.finished, e.finished
FROM (
    SELECT i, 'ex-' || %(tenant)s || '-' || i AS id, %(tenant)s || '-p' || (i %% %(pipelines)s + 1) AS pipeline_id,
        i %% %(pipelines)s + 1 AS p,
        CASE WHEN i %% 50 < 45 THEN 'COMPLETED' WHEN i %% 50 < 49 THEN 'FAILED' ELSE 'CANCELLED' END AS status,
        now() - interval '1 minute' - (i * interval '90 days' / %(executions)s) AS submitted,
        now() - interval '1 minute' - (i * interval '90 days' / %(executions)s) + interval '5 seconds'
            + ((i %% %(pipelines)s + 1) * interval '18 seconds') * (1 + random()) AS finished,
        round((random() * 0.05)::numeric, 6) AS cost
    FROM generate_series(1, %(executions)s) AS i
) AS e
"""

SEED_TASKS = """
INSERT INTO execution_tasks (execution_id, task_id, tenant_id, pipeline_id, submitted_at, state, try_number,
    duration_ms, started_at, finished_at)
SELECT e.id, 'transform_' || t, e.tenant_id, e.pipeline_id, e.submitted_at,
    CASE WHEN e.status = 'FAILED' AND e.error_message LIKE 'task ''transform_' || t || '''%%' THEN 'failed'
         ELSE 'success' END,
    1, (extract(epoch FROM e.finished_at - e.started_at) * 1000 / %(tasks)s * (0.5 + t * 0.2))::bigint,
    e.started_at, e.finished_at
FROM executions e CROSS JOIN generate_series(0, %(tasks)s - 1) AS t
WHERE e.tenant_id = %(tenant)s
"""

RUNNING = """
UPDATE executions SET status = 'RUNNING', finished_at = NULL, cost_settled_for = NULL
WHERE id IN (SELECT id FROM executions WHERE tenant_id = %(tenant)s ORDER BY submitted_at DESC LIMIT 5)
"""


def seed(url: str, executions: int, pipelines: int) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for tenant, n, p in ((TENANT, executions, pipelines), (OTHER, executions // 10, max(1, pipelines // 10))):
            args = {"tenant": tenant, "executions": n, "pipelines": p, "tasks": TASKS}
            conn.execute(SEED_PIPELINES, args)
            conn.execute(SEED_EXECUTIONS, args)
            conn.execute(SEED_TASKS, args)
            conn.execute(RUNNING, args)
        conn.execute("ANALYZE")
    return time.perf_counter() - started


def timed(calls: int, call: Callable[[], object]) -> list[float]:
    call()  # warm: plans, connection
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--pipelines", type=int, default=100)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    name = f"bench_metrics_{uuid.uuid4().hex[:10]}"
    admin(f'CREATE DATABASE "{name}"')
    engine = None
    try:
        url = pg_url(name)
        migrate(url.replace("postgresql://", "postgresql+psycopg://"))
        seconds = seed(url, args.executions, args.pipelines)
        print(
            f"seeded {args.executions} executions of {args.pipelines} pipelines (+10 % for another tenant), "
            f"{TASKS} task rows each, in {seconds:.1f} s"
        )
        engine = make_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        sessions = sessionmaker(engine)
        started = time.perf_counter()
        built = rollup.catch_up(sessions)
        print(f"rollup: {built} (tenant, day) built in {time.perf_counter() - started:.1f} s")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")  # as autovacuum does after a table grew by a tenth
        run(sessions, args.pipelines, args.calls)
    finally:
        if engine is not None:
            engine.dispose()
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(sessions: sessionmaker, pipelines: int, calls: int) -> None:  # type: ignore[type-arg]
    rates = RateCard()
    rnd = random.Random(14)
    with sessions() as s:
        ids = [p.id for p in s.query(Pipeline).filter(Pipeline.tenant_id == TENANT)]

    def pipeline_call(period: str) -> Callable[[], object]:
        def call() -> object:
            with sessions() as s:
                pipeline = s.get(Pipeline, rnd.choice(ids))
                assert pipeline is not None
                return metrics.pipeline_metrics(s, pipeline, period, rates)

        return call

    def tenant_call(period: str) -> Callable[[], object]:
        def call() -> object:
            with sessions() as s:
                return metrics.tenant_metrics(s, TENANT, period, rates)

        return call

    print(f"{'period':>6} {'what':>8} {'executions':>10} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for period in PERIODS:
        with sessions() as s:
            count = metrics.tenant_metrics(s, TENANT, period, rates).metrics.execution_count
        for what, factory in (("pipeline", pipeline_call), ("tenant", tenant_call)):
            ms = timed(calls, factory(period))
            p95 = statistics.quantiles(ms, n=20, method="inclusive")[18]
            print(f"{period:>6} {what:>8} {count:>10} {statistics.median(ms):8.1f} {p95:8.1f} {max(ms):8.1f}")


if __name__ == "__main__":
    main()
