"""`sql` sources and sinks, incremental and partitioned extraction: spec, connection types, and the
operators against a real PostgreSQL (staging, and a source through SQLAlchemy) and a real SQLite file.

Connections reach Airflow as `AIRFLOW_CONN_<ID>` environment variables (see test_operators.py)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException

from connections.types import InvalidConnection, airflow_connection, build_spec, is_sqlite
from dag_factory.builder.dag import build_dag
from dag_factory.exceptions import DefinitionError
from dag_factory.hooks.postgres import PostgresHook
from dag_factory.hooks.sql import (
    SqlHook,
    decode_value,
    encode_value,
    partition_conditions,
    split_points,
)
from dag_factory.operators import (
    CleanupStagingOperator,
    CommitWatermarksOperator,
    ExtractOperator,
    PlanPartitionsOperator,
    PrepareStagingOperator,
    SqlLoadOperator,
    UnionPartitionsOperator,
    run_schema,
)
from dag_factory.operators.extract import part_dataset
from dag_factory.operators.watermark import WatermarkStore
from dag_factory.spec import PipelineDefinition, validate_definition
from tests.pg import pg_url

SUFFIX = uuid.uuid4().hex[:8]
SRC, WH, LITE = f"sqlio_src_{SUFFIX}", f"sqlio_wh_{SUFFIX}", f"sqlio_lite_{SUFFIX}"
ROWS = 103  # not a multiple of the partition counts


def admin(statement: str) -> None:
    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        conn.execute(statement)


def query(db: str, statement: str, *args: Any) -> list[tuple]:
    with psycopg.connect(pg_url(db)) as conn:
        return conn.execute(statement, args).fetchall()


def pg_conn(db: str) -> str:
    return json.dumps(
        {"conn_type": "postgres", "login": "postgres", "password": "", "host": "127.0.0.1", "port": 5432, "schema": db}
    )


@pytest.fixture(scope="module")
def lite_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sqlite") / "shop.db"


@pytest.fixture(scope="module", autouse=True)
def databases(lite_path: Path) -> Iterator[None]:
    for db in (SRC, WH):
        admin(f'CREATE DATABASE "{db}"')
    with psycopg.connect(pg_url(SRC), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE orders (id int PRIMARY KEY, amount numeric(10,2), note text, created_at timestamptz);"
            "INSERT INTO orders SELECT i, i * 1.5, 'n' || i, '2024-01-01T00:00:00Z'::timestamptz + i * interval '1h' "
            f"FROM generate_series(1, {ROWS}) i; INSERT INTO orders VALUES (1000, NULL, NULL, NULL)"
        )
    with sqlite3.connect(lite_path) as lite:
        lite.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price NUMERIC(8,2), added DATETIME)")
        lite.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            [(i, f"item {i}", i * 2.25, f"2024-02-{1 + i % 28:02d} 10:00:00") for i in range(1, ROWS + 1)],
        )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"AIRFLOW_CONN_{SRC.upper()}", pg_conn(SRC))
        mp.setenv(f"AIRFLOW_CONN_{WH.upper()}", pg_conn(WH))
        mp.setenv(f"AIRFLOW_CONN_{LITE.upper()}", json.dumps({"conn_type": "sqlite", "host": str(lite_path)}))
        yield
    for db in (SRC, WH):
        admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


class FakeTI:
    """What the operators use of a task instance: dag_id and XCom of earlier tasks of the run."""

    def __init__(self, dag_id: str, xcoms: dict[str, Any]):
        self.dag_id = dag_id
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: str) -> Any:
        return self.xcoms.get(task_ids)


@pytest.fixture
def ctx() -> Iterator[dict]:
    context = {"run_id": f"manual__{uuid.uuid4()}", "ti": FakeTI(f"t.{uuid.uuid4().hex[:6]}", {})}
    PrepareStagingOperator(task_id="prepare", conn_ids=[WH]).execute(context)
    yield context
    CleanupStagingOperator(task_id="cleanup", conn_ids=[WH, LITE]).execute(context)


def staged(ctx: dict, dataset: str, what: str = "count(*)") -> Any:
    return query(WH, f'SELECT {what} FROM "{run_schema(ctx)}"."{dataset}"')[0]


# --- spec ------------------------------------------------------------------------------------------


def definition(source: dict, sink: dict | None = None) -> dict:
    return {
        "sources": {"orders": source},
        "sinks": {"out": sink or {"type": "postgres", "connection": "wh", "table": "o", "input": "orders"}},
    }


def errors(data: dict) -> dict[str, str]:
    with pytest.raises(DefinitionError) as exc:
        validate_definition(data)
    return {e["path"]: e["message"] for e in exc.value.errors}


def test_sql_source_takes_a_table_or_a_query():
    ok = validate_definition(definition({"type": "sql", "connection": "c", "query": "SELECT 1 AS x"}))
    assert ok.sources["orders"].query == "SELECT 1 AS x"
    assert "sources.orders" in errors(definition({"type": "sql", "connection": "c"}))
    both = errors(definition({"type": "sql", "connection": "c", "table": "t", "query": "SELECT 1"}))
    assert "either 'table'" in both["sources.orders"]
    where = errors(definition({"type": "sql", "connection": "c", "query": "SELECT 1", "where": "x > 1"}))
    assert "put the predicate in the query" in where["sources.orders"]


def test_partitions_shorthand_limits_and_bounds():
    src = {"type": "postgres", "connection": "c", "table": "t", "incremental": {"column": "id"}, "partitions": 4}
    parsed = validate_definition(definition(src)).sources["orders"]
    assert parsed.partitions.count == 4 and parsed.partition_column() == "id"
    schema = PipelineDefinition.model_json_schema()["$defs"]["SqlSource"]["properties"]["partitions"]
    assert {"type": "integer", "minimum": 1, "maximum": 64} in schema["anyOf"]  # the published schema agrees
    assert (
        "less than or equal to 64" in errors(definition({**src, "partitions": 65}))["sources.orders.partitions.count"]
    )
    assert (
        "greater than or equal to 1" in errors(definition({**src, "partitions": 0}))["sources.orders.partitions.count"]
    )
    bad = errors(definition({**src, "partitions": {"column": "id", "bounds": [10, 5]}}))
    assert "ascending" in bad["sources.orders.partitions"]
    both = errors(definition({**src, "partitions": {"count": 2, "bounds": [1]}}))
    assert "either 'count'" in both["sources.orders.partitions"]
    assert (
        validate_definition(definition({**src, "partitions": {"bounds": [10, 20]}})).sources["orders"].partitions.size
        == 3
    )


def test_extraction_cross_checks():
    view = {
        "type": "postgres",
        "connection": "wh",
        "table": "t",
        "materialize": "view",
        "incremental": {"column": "id"},
    }
    assert "remove materialize 'view'" in errors(definition(view))["sources.orders.materialize"]
    query_parts = {"type": "sql", "connection": "c", "query": "SELECT 1 AS id", "partitions": 2}
    assert "required for a query source" in errors(definition(query_parts))["sources.orders.partitions.column"]
    merge = errors(
        definition(
            view | {"materialize": "table"},
            {"type": "sql", "connection": "c", "table": "o", "input": "orders", "mode": "merge"},
        )
    )
    assert "needs 'keys'" in merge["sinks.out"]
    unknown = errors(definition({"type": "sql", "connection": "c", "table": "t", "typo": 1}))
    assert "sources.orders.typo" in unknown


# --- connection types: SQLite files ------------------------------------------------------------------


def sqlite_spec(url: str):  # type: ignore[no-untyped-def]
    return build_spec("sql", host=None, port=None, database=None, url=url, properties={})


def test_sqlite_connections_only_under_allowed_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PIPELINE_SQLITE_DIRS", raising=False)
    with pytest.raises(InvalidConnection, match="set PIPELINE_SQLITE_DIRS"):
        sqlite_spec(f"sqlite:///{tmp_path}/a.db")
    monkeypatch.setenv("PIPELINE_SQLITE_DIRS", str(tmp_path / "data"))
    spec = sqlite_spec(f"sqlite:///{tmp_path}/data/a.db")
    assert is_sqlite(spec.type, spec.port) and spec.database == f"{tmp_path}/data/a.db"
    for url in (
        f"sqlite:///{tmp_path}/other.db",
        f"sqlite:///{tmp_path}/data/../other.db",
        "sqlite:///rel.db",
        f"sqlite:///{tmp_path}/data",
    ):
        with pytest.raises(InvalidConnection) as exc:
            sqlite_spec(url)
        assert exc.value.errors[0]["path"] == "url"
    with pytest.raises(InvalidConnection, match="type sql"):
        build_spec("jdbc", host=None, port=None, database=None, url=f"sqlite:///{tmp_path}/data/a.db", properties={})
    body = airflow_connection("t.lite", spec, None)
    assert body["conn_type"] == "sqlite" and body["host"] == spec.database and body["password"] is None


# --- key values and ranges ---------------------------------------------------------------------------


def test_split_points_and_partition_ranges():
    assert split_points(1, 100, 4) == [26, 51, 76]
    assert split_points(0.0, 1.0, 2) == [0.5]
    day = dt.date(2024, 1, 1)
    assert split_points(day, day + dt.timedelta(days=10), 2) == [day + dt.timedelta(days=5)]
    assert split_points(None, None, 4) == []
    with pytest.raises(Exception, match="explicit partitions.bounds"):
        split_points("a", "z", 2)
    assert partition_conditions("id", [10, 20], 0, 3) == [("lt_or_null", "id", 10)]
    assert partition_conditions("id", [10, 20], 1, 3) == [("ge", "id", 10), ("lt", "id", 20)]
    assert partition_conditions("id", [10, 20], 2, 3) == [("ge", "id", 20)]
    assert partition_conditions("id", [], 0, 3) == [] and partition_conditions("id", [], 2, 3)[0][0] == "none"
    long = "d" * 63
    assert len({part_dataset(long, i) for i in range(64)}) == 64 and len(part_dataset(long, 63)) <= 63
    for value in (5, 1.5, Decimal("2.50"), dt.datetime(2024, 1, 1, tzinfo=dt.UTC), day, "x"):
        assert decode_value(encode_value(value)) == value


# --- operators --------------------------------------------------------------------------------------


def extract(ctx: dict, conn: str, dataset: str, **kwargs: Any) -> dict:
    kind = kwargs.pop("kind", "sql")
    op = ExtractOperator(
        task_id=f"sources.{dataset}", kind=kind, source_conn_id=conn, staging_conn_id=WH, dataset=dataset, **kwargs
    )
    return op.execute(ctx)


def partitioned(ctx: dict, conn: str, dataset: str, count: int, kind: str = "sql", **kwargs: Any) -> dict:
    """bounds -> parts -> union, as the DAG runs them (XCom through the fake task instance)."""
    reader = {"kind": kind, "source_conn_id": conn, "staging_conn_id": WH, "dataset": dataset, **kwargs}
    column, bounds = reader.pop("column", None), reader.pop("bounds", None)
    plan_id = f"sources.{dataset}.bounds"
    plan = PlanPartitionsOperator(task_id=plan_id, column=column, count=count, bounds=bounds, **reader)
    ctx["ti"].xcoms[plan_id] = plan.execute(ctx)
    rows = 0
    for i in range(count):
        part = ExtractOperator(
            task_id=f"sources.{dataset}.part_{i}",
            partition={"index": i, "count": count, "plan_task_id": plan_id},
            **reader,
        )
        rows += part.execute(ctx)["rows"]
    inc = kwargs.get("incremental")
    union = UnionPartitionsOperator(
        task_id=f"sources.{dataset}",
        staging_conn_id=WH,
        dataset=dataset,
        count=count,
        incremental_column=inc["column"] if inc else None,
    )
    result = union.execute(ctx)
    ctx["ti"].xcoms[f"sources.{dataset}"] = result
    return {**result, "rows": rows}


def test_sql_source_from_sqlite_table_is_typed(ctx: dict):
    assert extract(ctx, LITE, "items", table="items", where="id <= 50", batch_size=7)["rows"] == 50
    types = query(
        WH,
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'items' ORDER BY ordinal_position",
        run_schema(ctx),
    )
    assert types == [("id", "bigint"), ("name", "text"), ("price", "numeric"), ("added", "timestamp without time zone")]
    assert staged(ctx, "items", "sum(id), min(added)") == (1275, dt.datetime(2024, 2, 1, 10))


def test_sql_source_query_on_sqlite_and_postgres(ctx: dict):
    assert extract(ctx, LITE, "cheap", query="SELECT id, name FROM items WHERE price < 10;")["rows"] == 4
    # A query on PostgreSQL goes through SQLAlchemy (postgresql+psycopg), its columns typed from the values.
    got = extract(
        ctx,
        SRC,
        "big",
        query="SELECT id, amount, created_at FROM orders WHERE id > {{ 100 }}".replace("{{ 100 }}", "100"),
        batch_size=2,
    )
    assert got["rows"] == 4
    assert staged(ctx, "big", "sum(id), pg_typeof(max(created_at))::text") == (
        1000 + 101 + 102 + 103,
        "timestamp with time zone",
    )


def test_sqlalchemy_reads_postgres_in_batches():
    hook = SqlHook(url=pg_url(SRC).replace("postgresql://", "postgresql+psycopg://"))
    stmt = hook.select(table="orders", query=None, where="note IS NOT NULL", conditions=[("gt", "id", 100)])
    with hook.connect() as conn:
        assert [r.id for r in conn.execute(stmt)] == [101, 102, 103]
    assert hook.primary_key("orders") == "id"
    assert hook.min_max("id", table="orders", query=None, where=None, conditions=[]) == (1, 1000)


@pytest.mark.parametrize("conn", [SRC, LITE])
def test_partitions_stage_every_row_exactly_once(ctx: dict, conn: str):
    table, column, value = ("orders", "id", "amount") if conn == SRC else ("items", "id", "price")
    kind = "postgres" if conn == SRC else "sql"
    result = partitioned(ctx, conn, "parts", 4, kind=kind, table=table)  # column: the primary key
    with psycopg.connect(pg_url(SRC)) as c:
        expected = c.execute("SELECT count(*), sum(amount) FROM orders").fetchone() if conn == SRC else None
    if conn == LITE:
        with sqlite3.connect(ctx_lite()) as lite:
            n, total = lite.execute("SELECT count(*), sum(price) FROM items").fetchone()
            expected = (n, Decimal(str(total)))
    assert result["rows"] == result["staged_rows"] == expected[0]
    assert staged(ctx, "parts", f"count(*), sum({value}), count(DISTINCT {column})") == (*expected, expected[0])
    sizes = [staged(ctx, f"parts__part_{i}")[0] for i in range(4)]
    assert sum(sizes) == expected[0]
    if conn == LITE:  # evenly spread keys: every range has rows (orders has an outlier key, 1000)
        assert all(s > 0 for s in sizes), sizes


def ctx_lite() -> str:
    import os

    return json.loads(os.environ[f"AIRFLOW_CONN_{LITE.upper()}"])["host"]


def test_explicit_bounds_and_a_query_with_a_column(ctx: dict):
    result = partitioned(ctx, LITE, "q", 3, query="SELECT id, price FROM items", column="id", bounds=[10, 60])
    assert result["rows"] == ROWS
    assert [staged(ctx, f"q__part_{i}")[0] for i in range(3)] == [9, 50, ROWS - 59]


def test_incremental_marks_advance_only_when_committed(ctx: dict):
    inc = {"column": "id", "initial_value": 100}
    first = extract(ctx, SRC, "orders", kind="postgres", table="orders", incremental=inc)
    assert first["rows"] == 4 and first["watermark"] == {"kind": "int", "value": "1000"}
    # Not committed (a failed run): the next run extracts the same rows again.
    again = extract(ctx, SRC, "orders", kind="postgres", table="orders", incremental=inc)
    assert again["rows"] == 4
    ctx["ti"].xcoms["sources.orders"] = again
    CommitWatermarksOperator(task_id="commit_watermarks", staging_conn_id=WH, sources={"orders": "id"}).execute(ctx)
    nothing_new = extract(ctx, SRC, "orders", kind="postgres", table="orders", incremental=inc)
    assert {k: nothing_new[k] for k in ("dataset", "rows", "watermark")} == {
        "dataset": "orders",
        "rows": 0,
        "watermark": None,
    }
    store = WatermarkStore(PostgresHook(WH))
    assert store.get(ctx["ti"].dag_id, "orders", "id") == {"kind": "int", "value": "1000"}
    assert store.get(ctx["ti"].dag_id, "orders", "created_at") is None  # another column: start over
    # A concurrent run that read less and finishes last does not move the mark back.
    assert store.put(ctx["ti"].dag_id, "late", [("orders", "id", {"kind": "int", "value": "500"})]) == []
    assert store.get(ctx["ti"].dag_id, "orders", "id") == {"kind": "int", "value": "1000"}


def test_incremental_partitioned_sqlite_source(ctx: dict):
    inc = {"column": "id", "initial_value": 90}
    result = partitioned(ctx, LITE, "items", 4, table="items", incremental=inc)
    assert result["rows"] == ROWS - 90 and result["watermark"] == {"kind": "int", "value": str(ROWS)}
    assert staged(ctx, "items", "min(id), max(id)") == (91, ROWS)


def test_sql_sink_into_sqlite_creates_appends_overwrites_and_merges(ctx: dict):
    extract(ctx, SRC, "orders", kind="postgres", table="orders", where="id <= 10")

    def load(mode: str, keys: list[str] | None = None) -> int:
        op = SqlLoadOperator(
            task_id="sinks.out",
            staging_conn_id=WH,
            sink_conn_id=LITE,
            dataset="orders",
            table="orders_copy",
            mode=mode,
            keys=keys,
            batch_size=3,
        )
        return op.execute(ctx)["rows"]

    def lite(statement: str) -> Any:
        with sqlite3.connect(ctx_lite()) as c:
            return c.execute(statement).fetchone()

    assert load("append") == 10 and load("append") == 10
    assert lite("SELECT count(*), count(DISTINCT id) FROM orders_copy") == (20, 10)
    assert load("overwrite") == 10 and lite("SELECT count(*) FROM orders_copy") == (10,)
    with sqlite3.connect(ctx_lite()) as c:
        c.execute("UPDATE orders_copy SET note = 'old' WHERE id = 3")
        c.execute("INSERT INTO orders_copy (id, note) VALUES (99, 'kept')")
    assert load("merge", ["id"]) == 10
    assert lite("SELECT count(*), sum(id) FROM orders_copy") == (11, 55 + 99)
    assert lite("SELECT note FROM orders_copy WHERE id = 3") == ("n3",)
    with pytest.raises(Exception, match="merge key columns missing"):
        load("merge", ["nope"])
    # The same texts as the postgres sink's (dag_factory.hooks.load), and no retry: it would fail again.
    with pytest.raises(AirflowFailException, match=r"^merge key columns missing: 'nope' \(not in dataset 'orders'\)"):
        load("merge", ["nope"])


def test_sqlalchemy_sink_into_postgres_merges(ctx: dict):
    """The SQLAlchemy path against PostgreSQL too (the operator itself uses COPY there)."""
    extract(ctx, SRC, "orders", kind="postgres", table="orders", where="id <= 5")
    hook = SqlHook(url=pg_url(SRC).replace("postgresql://", "postgresql+psycopg://"))
    staged_table = (run_schema(ctx), "orders")
    assert hook.load_from_postgres(PostgresHook(WH), staged_table, "public.copy_sa", mode="append") == 5
    assert hook.load_from_postgres(PostgresHook(WH), staged_table, "public.copy_sa", mode="merge", keys=["id"]) == 5
    assert query(SRC, "SELECT count(*), sum(amount) FROM copy_sa") == [(5, Decimal("22.50"))]
    types = query(
        SRC, "SELECT data_type FROM information_schema.columns WHERE table_name = 'copy_sa' ORDER BY ordinal_position"
    )
    assert [t for (t,) in types] == ["integer", "numeric", "text", "timestamp with time zone"]


def test_errors_hide_the_password(monkeypatch: pytest.MonkeyPatch):
    secret = "s3cr3t-p@ss"
    hook = SqlHook(url=f"postgresql+psycopg://postgres:{secret.replace('@', '%40')}@127.0.0.1:5432/nope_{SUFFIX}")
    with pytest.raises(Exception) as exc:
        hook.reflect("orders")
    assert secret not in str(exc.value) and "s3cr3t" not in repr(exc.value)


# --- builder ----------------------------------------------------------------------------------------


def test_dag_has_partition_tasks_and_commits_marks_after_sinks_and_checks():
    d = {
        "sources": {
            "orders": {
                "type": "postgres",
                "connection": "src",
                "table": "orders",
                "incremental": {"column": "id"},
                "partitions": 4,
            },
            "items": {"type": "sql", "connection": "lite", "table": "items"},
        },
        "sinks": {
            "out": {"type": "postgres", "connection": "wh", "table": "o", "input": "orders"},
            "copy": {
                "type": "sql",
                "connection": "lite",
                "table": "c",
                "input": "items",
                "mode": "merge",
                "keys": ["id"],
            },
        },
        "quality_checks": [
            {
                "name": "ids",
                "dataset": "out",
                "expectation": "expect_column_values_to_not_be_null",
                "kwargs": {"column": "id"},
            }
        ],
    }
    dag = build_dag(d, dag_id="t.p", connections={"src": "t.src", "lite": "t.lite", "wh": "t.wh"})
    ids = set(dag.task_dict)
    assert {f"sources.orders.part_{i}" for i in range(4)} | {"sources.orders.bounds", "sources.orders"} <= ids
    assert dag.task_dict["sources.orders.bounds"].upstream_task_ids == {"prepare_staging"}
    assert dag.task_dict["sources.orders"].upstream_task_ids == {f"sources.orders.part_{i}" for i in range(4)}
    assert dag.task_dict["commit_watermarks"].upstream_task_ids == {"sinks.out", "sinks.copy", "quality.out"}
    assert "commit_watermarks" in dag.task_dict["cleanup_staging"].upstream_task_ids
    assert type(dag.task_dict["sinks.copy"]).__name__ == "SqlLoadOperator"
    plain = build_dag(
        {
            **d,
            "sources": {"orders": {"type": "postgres", "connection": "src", "table": "orders"}},
            "sinks": {"out": d["sinks"]["out"]},
        },
        dag_id="t.q",
        connections={"src": "t.src", "wh": "t.wh"},
    )
    assert "commit_watermarks" not in plain.task_dict


def test_sqlalchemy_url_of_airflow_connections():
    from types import SimpleNamespace

    from dag_factory.hooks.sql import sqlalchemy_url

    pg = SimpleNamespace(
        conn_type="postgres",
        login="etl",
        password="p@ss",
        host="127.0.0.1",
        port=5433,
        schema="sales",
        extra_dejson={"sslmode": "require", "ignored": "x"},
    )
    # hostaddr: the address the network policy checked is the one libpq connects to (no second lookup).
    expected = "postgresql+psycopg://etl:p%40ss@127.0.0.1:5433/sales?sslmode=require&hostaddr=127.0.0.1"
    assert sqlalchemy_url(pg) == expected
    assert sqlalchemy_url(SimpleNamespace(conn_type="sqlite", host="/data/shop.db")) == "sqlite:////data/shop.db"
    with pytest.raises(Exception, match="not a SQL database"):
        sqlalchemy_url(SimpleNamespace(conn_type="http", host="x"))
