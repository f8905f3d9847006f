"""Throughput of the example ETL (examples/daily-sales-etl.json without its quality checks) over 1,000,000
source rows, through the pipeline's operators, next to the same SQL run directly with psql.

Generates the rows in throwaway databases on the local PostgreSQL (PIPELINE_TEST_PG_URL's server), runs
the DAG's operators in-process in dependency order (the work Airflow's workers would do; scheduling
overhead excluded), and prints rows/s of both and their ratio. Two pipeline layouts: the example's
(source and warehouse in different databases: binary COPY between them), a single database, and a
single database with the datasets read once kept as views (`"materialize": "view"`).

    .venv/bin/python bench/etl_throughput.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import psycopg

from dag_factory import build_dag

REPO = Path(__file__).resolve().parents[1]
PG = {"host": os.environ.get("PGHOST", "127.0.0.1"), "port": int(os.environ.get("PGPORT", "5432")), "user": "postgres"}
SEED = """
CREATE TABLE products (id integer PRIMARY KEY, category text NOT NULL, product_name text NOT NULL);
CREATE TABLE raw_transactions (id bigint PRIMARY KEY, product_id integer NOT NULL, amount numeric(12, 2) NOT NULL,
                               created_at timestamptz NOT NULL);
INSERT INTO products SELECT p, (ARRAY['books', 'garden', 'kitchen', 'toys'])[1 + p % 4], 'product ' || p
FROM generate_series(1, 1000) AS p;
INSERT INTO raw_transactions
SELECT t, 1 + t % 1000, CASE WHEN t % 25 = 0 THEN -5 ELSE round((t * 7.31) % 900 + 1, 2) END,
       timestamptz '2026-01-01 00:00:00+00' + (t * interval '1 second')
FROM generate_series(1, %(rows)s) AS t;
ANALYZE;
"""
# What the pipeline does, as one psql script in one database (merge = delete + insert on the key).
DIRECT = """
\\set ON_ERROR_STOP on
BEGIN;
CREATE SCHEMA IF NOT EXISTS direct;
CREATE TABLE IF NOT EXISTS direct.daily_transactions (transaction_id bigint, product_id integer,
    amount numeric(12, 2), sale_date date, category text, product_name text);
CREATE TEMP TABLE enriched AS
SELECT c.*, p.category, p.product_name
FROM (SELECT id AS transaction_id, product_id, amount, created_at::date AS sale_date FROM raw_transactions
      WHERE created_at >= '2026-01-01' AND created_at < '2027-01-01' AND amount > 0) AS c
LEFT JOIN products AS p ON c.product_id = p.id;
DELETE FROM direct.daily_transactions AS t USING enriched AS s WHERE t.transaction_id = s.transaction_id;
INSERT INTO direct.daily_transactions SELECT * FROM enriched;
COMMIT;
"""


def admin(statement: str) -> None:
    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
        conn.execute(statement)


def conn_env(conn_id: str, db: str) -> None:
    value = {"conn_type": "postgres", "login": "postgres", "schema": db, "host": PG["host"], "port": PG["port"]}
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(value)


def run_pipeline(source_db: str, warehouse_db: str, views: bool = False) -> float:
    example = json.loads((REPO / "examples" / "daily-sales-etl.json").read_text())
    definition = copy.deepcopy(example["definition"])
    definition["quality_checks"] = []  # great-expectations is not part of the data path being compared
    if views:  # datasets read once by the next step need not be written (the joined one is read twice)
        definition["sources"]["raw_transactions"]["materialize"] = "view"
        definition["transformations"][0]["materialize"] = "view"
        definition["orchestration"]["staging_connection"] = "sales-database"  # a view stays in its database
    definition["parameters"]["start_date"]["default"] = "2026-01-01"
    definition["parameters"]["end_date"]["default"] = "2027-01-01"
    # A new target table per run: each run loads into an empty table, as the direct SQL does.
    definition["sinks"]["daily_transactions"]["table"] = f"analytics.daily_{uuid.uuid4().hex[:8]}"
    conn_env("bench_src", source_db)
    conn_env("bench_wh", warehouse_db)
    # One database, one connection name (a source on the staging conn_id is staged by CREATE TABLE AS).
    conns = {"sales-database": "bench_src", "warehouse": "bench_src" if source_db == warehouse_db else "bench_wh"}
    dag = build_dag(definition, dag_id="bench.etl", connections=conns)
    context = {"run_id": f"bench__{uuid.uuid4()}", "params": {n: p.value for n, p in dag.params.items()}}
    start = time.perf_counter()
    for task in dag.topological_sort():
        task.render_template_fields(context)
        task.pre_execute(context)  # what the task runner calls too (the staging-restart check)
        task.execute(context)
    return time.perf_counter() - start


def run_direct(db: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["psql", "-q", "-h", PG["host"], "-p", str(PG["port"]), "-U", "postgres", "-d", db],
        input=DIRECT, text=True, check=True,
    )  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    suffix = uuid.uuid4().hex[:8]
    sales, warehouse = f"bench_sales_{suffix}", f"bench_wh_{suffix}"
    try:
        for db in (sales, warehouse):
            admin(f'CREATE DATABASE "{db}"')
        with psycopg.connect(dbname=sales, autocommit=True, **PG) as conn:
            conn.execute(SEED.replace("%(rows)s", str(args.rows)))
        direct = run_direct(sales)
        cross = run_pipeline(sales, warehouse)
        single = run_pipeline(sales, sales)
        viewed = run_pipeline(sales, sales, views=True)
        for label, seconds in (
            ("direct SQL (psql, one database)", direct),
            ("pipeline, source and warehouse databases (COPY)", cross),
            ("pipeline, one database", single),
            ("pipeline, one database, source + clean as views", viewed),
        ):
            ratio = seconds / direct
            print(f"{label:52s} {seconds:7.2f} s  {args.rows / seconds:12,.0f} rows/s  {ratio:.2f}x direct")
    finally:
        for db in (sales, warehouse):
            admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
