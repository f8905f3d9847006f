"""`sql` sources and sinks, incremental and partitioned extraction, end to end through a real Airflow.

- sql I/O: a SQLite file table and a PostgreSQL query (through a jdbc connection) staged, loaded into a
  SQLite table (merge) and a PostgreSQL table reached by a SQLAlchemy URL (overwrite);
- incremental + partitions: four runs of one pipeline — all rows in 4 parallel ranges, then only the new
  rows, then a run whose error check fails (the mark must not move), then a good run that picks up the
  failed run's rows again.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e import harness
from tests.e2e.conftest import create_active, query, run_to_end
from tests.pg import pg_url

pytestmark = pytest.mark.e2e
CREDS = {"credentials": {"username": "postgres", "password": "pw-unused-by-trust"}}
# One quick retry: on a loaded machine a fresh Airflow may time out handing the first task to its worker.
# Quality checks never retry (the builder gives them none), so the forced failure below stays a failure.
RETRY = {"retries": 1, "retry_delay_seconds": 1}


@pytest.fixture(scope="module")
def lite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sqlite_files")


@pytest.fixture
def api(running: harness.Running, make_database, lite_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A tenant with: `src` (jdbc URL, PostgreSQL), `warehouse` (postgres), `lake` (sql, SQLAlchemy URL)
    and `lite` (sql, a SQLite file under PIPELINE_SQLITE_DIRS, which the in-process service reads)."""
    monkeypatch.setenv("PIPELINE_SQLITE_DIRS", str(lite_dir))
    src, wh, lake = make_database("inc_src"), make_database("inc_wh"), make_database("inc_lake")
    lite = lite_dir / f"shop_{uuid.uuid4().hex[:6]}.db"
    client = running.client(tenant="t" + uuid.uuid4().hex[:10])
    bodies = [
        {"name": "src", "type": "jdbc", "url": f"jdbc:postgresql://127.0.0.1:5432/{src}", **CREDS},
        {"name": "warehouse", "type": "postgres", "host": "127.0.0.1", "port": 5432, "database": wh, **CREDS},
        {"name": "lake", "type": "sql", "url": f"postgresql+psycopg://127.0.0.1:5432/{lake}", **CREDS},
        {"name": "lite", "type": "sql", "url": f"sqlite:///{lite}", **CREDS},
        {"name": "api", "type": "http", "url": "http://127.0.0.1:9/v1"},
    ]
    for body in bodies:
        r = client.post("/v1/pipelines/connections", json=body)
        assert r.status_code == 201, r.text
    return {"client": client, "src": src, "wh": wh, "lake": lake, "lite": lite}


def src_execute(db: str, statement: str) -> None:
    with psycopg.connect(pg_url(db), autocommit=True) as conn:
        conn.execute(statement)


def tasks(execution: dict[str, Any]) -> dict[str, str]:
    return {t["taskId"]: t["state"] for t in execution["tasks"]}


def test_sql_sources_and_sinks_on_sqlite_and_postgres(api: dict[str, Any]) -> None:
    client: httpx.Client = api["client"]
    with sqlite3.connect(api["lite"]) as lite:
        lite.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price NUMERIC(8,2), added DATETIME)")
        lite.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            [(i, f"item {i}", i + 0.5, f"2024-03-{1 + i % 28:02d} 08:00:00") for i in range(1, 61)],
        )
    src_execute(api["src"], "CREATE TABLE orders AS SELECT i AS id, i * 2 AS amount FROM generate_series(1, 30) i")
    definition = {
        "sources": {
            "items": {"type": "sql", "connection": "lite", "table": "items", "where": "id <= {{ params.max_id }}"},
            "orders": {"type": "sql", "connection": "src", "query": "SELECT id, amount FROM orders WHERE id <= 10"},
        },
        "parameters": {"max_id": {"type": "integer", "default": 40}},
        "sinks": {
            "items_lake": {
                "type": "sql",
                "connection": "lake",
                "table": "shop.items",
                "input": "items",
                "mode": "overwrite",
            },
            "orders_lite": {
                "type": "sql",
                "connection": "lite",
                "table": "orders_copy",
                "input": "orders",
                "mode": "merge",
                "keys": ["id"],
            },
        },
        "orchestration": {"staging_connection": "warehouse", **RETRY},
    }
    body = {"name": "sql-io", "definition": definition}
    # Checks run on any SQL database and on staged datasets: a SQLite sink table, a staged source.
    definition["quality_checks"] = [
        {"name": "ids", "dataset": "orders_lite", "expectation": "expect_column_values_to_not_be_null",
         "kwargs": {"column": "id"}},
        {"name": "cheap_items", "dataset": "items", "expectation": "expect_column_values_to_be_between",
         "kwargs": {"column": "price", "max_value": 10}, "severity": "warn"},
    ]  # fmt: skip
    # A SQLite file cannot stage datasets: 400 naming the field.
    bad = {**definition, "orchestration": {"staging_connection": "lite"}}
    r = client.post("/v1/pipelines/validate", json={**body, "definition": bad})
    assert r.status_code == 400, r.text
    assert "definition.orchestration.staging_connection" in {d["path"] for d in r.json()["error"]["details"]}
    bad = {
        **definition,
        "sources": {
            **definition["sources"],
            "orders": {"type": "sql", "connection": "warehouse", "table": "orders", "partitions": 65},
        },
    }
    r = client.post("/v1/pipelines/validate", json={**body, "definition": bad})
    assert (
        r.status_code == 400 and r.json()["error"]["details"][0]["path"] == "definition.sources.orders.partitions.count"
    )

    bad = {
        **definition,
        "sinks": {**definition["sinks"], "items_lake": {**definition["sinks"]["items_lake"], "connection": "api"}},
    }
    r = client.post("/v1/pipelines/validate", json={**body, "definition": bad})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["details"][0]["path"] == "definition.sinks.items_lake.connection"

    p = create_active(client, body)
    done = run_to_end(client, p["pipelineId"], {"max_id": 40})
    assert done["status"] == "COMPLETED", (done["errorMessage"], tasks(done))
    assert done["metrics"]["rowsProcessed"] == 40 + 10 and done["metrics"]["rowsWritten"] == 40 + 10
    assert query(api["lake"], "SELECT count(*), sum(id), min(added) FROM shop.items")[0][:2] == (40, 820)
    with sqlite3.connect(api["lite"]) as lite:
        assert lite.execute("SELECT count(*), sum(amount) FROM orders_copy").fetchone() == (10, 110)
    results = {r["name"]: r for r in done["qualityResults"]}
    assert (results["ids"]["success"], results["ids"]["elementCount"], results["ids"]["table"]) == (
        True, 10, "orders_copy"
    )  # fmt: skip
    cheap = results["cheap_items"]  # prices i + 0.5 for ids 1..40: 31 above 10 (ids 10..40), as staged
    assert (cheap["success"], cheap["unexpectedCount"], cheap["dataset"]) == (False, 31, "items"), cheap
    assert cheap["table"].endswith(".items") and tasks(done)["quality.items"] == "success"


def test_incremental_partitioned_source_advances_its_mark_only_on_success(api: dict[str, Any]) -> None:
    client: httpx.Client = api["client"]
    src, wh = api["src"], api["wh"]
    src_execute(
        src,
        "CREATE TABLE orders (id int PRIMARY KEY, customer text, amount numeric(10,2));"
        "INSERT INTO orders SELECT i, 'c' || (i % 7), i * 1.25 FROM generate_series(1, 100) i",
    )
    definition = {
        "sources": {
            "orders": {
                "type": "postgres",
                "connection": "src",
                "table": "orders",
                "incremental": {"column": "id"},
                "partitions": 4,  # short for {count: 4}; the column is the incremental one
            }
        },
        "sinks": {
            "merged": {
                "type": "postgres",
                "connection": "warehouse",
                "table": "inc.orders",
                "input": "orders",
                "mode": "merge",
                "keys": ["id"],
            },
            "log": {"type": "postgres", "connection": "warehouse", "table": "inc.orders_log", "input": "orders"},
        },
        "quality_checks": [
            {
                "name": "sane_amounts",
                "dataset": "merged",
                "severity": "error",
                "expectation": "expect_column_values_to_be_between",
                "kwargs": {"column": "amount", "min_value": 0, "max_value": 1000},
            }
        ],
        "orchestration": RETRY,
    }
    p = create_active(client, {"name": "incremental-orders", "definition": definition})

    def source_totals() -> tuple[int, Any]:
        return query(src, "SELECT count(*), sum(amount) FROM orders")[0]

    # Run 1: every row, in 4 ranges extracted in parallel, each row exactly once (the append log shows it).
    first = run_to_end(client, p["pipelineId"])
    assert first["status"] == "COMPLETED", first
    parts = sorted(t for t in tasks(first) if t.startswith("sources.orders.part_"))
    assert parts == [f"sources.orders.part_{i}" for i in range(4)]
    assert all(tasks(first)[t] == "success" for t in parts)
    assert first["metrics"]["rowsProcessed"] == 100
    assert query(wh, "SELECT count(*), sum(amount) FROM inc.orders_log")[0] == source_totals()
    assert query(wh, "SELECT value FROM pipeline_state.watermarks WHERE source = 'orders'") == [("100",)]

    # Run 2: only the new rows.
    src_execute(src, "INSERT INTO orders SELECT i, 'new', 2 FROM generate_series(101, 120) i")
    second = run_to_end(client, p["pipelineId"])
    assert second["status"] == "COMPLETED", second
    assert second["metrics"]["rowsProcessed"] == 20
    assert query(wh, "SELECT count(*), sum(amount) FROM inc.orders_log")[0] == source_totals()

    # Run 3: a bad amount fails the error check; the mark stays at 120.
    src_execute(
        src,
        "INSERT INTO orders SELECT i, 'late', CASE i WHEN 125 THEN 5000 ELSE 3 END FROM generate_series(121, 130) i",
    )
    failed = run_to_end(client, p["pipelineId"])
    assert failed["status"] == "FAILED", failed
    assert failed["metrics"]["rowsProcessed"] == 10
    assert tasks(failed)["quality.merged"] == "failed" and tasks(failed)["commit_watermarks"] == "upstream_failed"
    assert query(wh, "SELECT value FROM pipeline_state.watermarks WHERE source = 'orders'") == [("120",)]

    # Run 4: the source is fixed; the same 10 rows are extracted again, merged, checked, and the mark moves.
    src_execute(src, "UPDATE orders SET amount = 4 WHERE id = 125")
    fixed = run_to_end(client, p["pipelineId"])
    assert fixed["status"] == "COMPLETED", fixed
    assert fixed["metrics"]["rowsProcessed"] == 10
    assert query(wh, "SELECT count(*), sum(amount) FROM inc.orders")[0] == source_totals()
    assert query(wh, "SELECT value FROM pipeline_state.watermarks WHERE source = 'orders'") == [("130",)]
