"""The pipeline operators against a real PostgreSQL (no mocks): two throwaway databases per module.

Connections reach Airflow as `AIRFLOW_CONN_<ID>` environment variables holding JSON. In Airflow 3.3,
`airflow.sdk.BaseHook.get_connection` works outside a running task: with no supervisor to ask, it falls
back to the configured secrets backends, whose default chain starts with the environment variables one.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowException

from dag_factory.hooks import PostgresHook
from dag_factory.operators import (
    CleanupStagingOperator,
    LoadTableOperator,
    PrepareStagingOperator,
    QualityCheckOperator,
    SqlTransformOperator,
    StageTableOperator,
    run_schema,
    staging_schema,
)

PG = {"host": os.environ.get("PGHOST", "127.0.0.1"), "port": int(os.environ.get("PGPORT", "5432"))}
SUFFIX = uuid.uuid4().hex[:8]
SRC, WH = f"df_src_{SUFFIX}", f"df_wh_{SUFFIX}"  # conn ids are the database names
SECRET = "s3cr3t-p@ss/word"

SRC_SQL = """
CREATE TYPE txn_kind AS ENUM ('card', 'cash');
CREATE DOMAIN cents AS bigint CHECK (VALUE >= 0);
CREATE TABLE raw_transactions (
    id int PRIMARY KEY, customer_id int NOT NULL, amount numeric(10,2), kind txn_kind,
    fee cents, note varchar(20), created_at timestamptz DEFAULT now(), dropped_later int
);
ALTER TABLE raw_transactions DROP COLUMN dropped_later;
INSERT INTO raw_transactions (id, customer_id, amount, kind, fee, note, created_at)
SELECT i, i % 3 + 1, i * 5.25, CASE WHEN i % 2 = 0 THEN 'card' ELSE 'cash' END::txn_kind, i, 'n' || i,
       '2024-01-01T00:00:00Z'::timestamptz + i * interval '1 hour'
FROM generate_series(1, 10) AS i;
INSERT INTO raw_transactions (id, customer_id, amount, note) VALUES (11, 1, NULL, NULL);
"""
WH_SQL = """
CREATE TABLE customers (id int PRIMARY KEY, name text, country char(2));
INSERT INTO customers VALUES (1, 'Ada', 'FR'), (2, 'Bob', 'DE'), (3, 'Cy', 'FR');
"""


def conn_json(db: str, password: str = "", **extra: str) -> str:
    return json.dumps(
        {
            "conn_type": "postgres",
            "login": "postgres",
            "password": password,
            "schema": db,
            "extra": extra,
            **PG,
        }
    )


def query(db: str, statement: str) -> list[tuple]:
    with psycopg.connect(dbname=db, user="postgres", **PG) as conn:
        return conn.execute(statement).fetchall()


def execute(db: str, statement: str) -> None:
    with psycopg.connect(dbname=db, user="postgres", autocommit=True, **PG) as conn:
        conn.execute(statement)


@pytest.fixture(scope="module", autouse=True)
def databases() -> Iterator[None]:
    for db, ddl in ((SRC, SRC_SQL), (WH, WH_SQL)):
        execute("postgres", f'CREATE DATABASE "{db}"')
        execute(db, ddl)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"AIRFLOW_CONN_{SRC.upper()}", conn_json(SRC))
        mp.setenv(f"AIRFLOW_CONN_{WH.upper()}", conn_json(WH, sslmode="disable", connect_timeout="5"))
        # The password is accepted (trust auth) but the database does not exist: errors must hide it.
        mp.setenv("AIRFLOW_CONN_DF_BROKEN", conn_json(f"df_missing_{SUFFIX}", password=SECRET))
        yield
    for db in (SRC, WH):
        execute("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.fixture
def ctx() -> Iterator[dict]:
    """A fresh run: its staging schema is prepared on both databases and dropped afterwards."""
    context = {"run_id": f"manual__{uuid.uuid4()}"}
    PrepareStagingOperator(task_id="prepare", conn_ids=[WH, SRC, WH]).execute(context)
    yield context
    CleanupStagingOperator(task_id="cleanup", conn_ids=[WH, SRC]).execute(context)


def stage(ctx: dict, dataset: str, table: str, source: str, where: str | None = None) -> dict:
    op = StageTableOperator(
        task_id=dataset, source_conn_id=source, staging_conn_id=WH, table=table, dataset=dataset, where=where
    )
    return op.execute(ctx)


def transform(ctx: dict, dataset: str, sql: str) -> dict:
    return SqlTransformOperator(task_id=dataset, staging_conn_id=WH, dataset=dataset, sql=sql).execute(ctx)


def load(ctx: dict, dataset: str, table: str, mode: str, keys=None, sink: str = WH) -> dict:
    op = LoadTableOperator(
        task_id=f"load_{dataset}",
        staging_conn_id=WH,
        sink_conn_id=sink,
        dataset=dataset,
        table=table,
        mode=mode,
        keys=keys,
    )
    return op.execute(ctx)


def stg(ctx: dict) -> str:
    return run_schema(ctx)


def schema_exists(db: str, schema: str) -> bool:
    return bool(query(db, f"SELECT 1 FROM pg_namespace WHERE nspname = '{schema}'"))


# --- staging schema ---------------------------------------------------------------------------------


def test_staging_schema_is_deterministic_identifier():
    name = staging_schema("manual__2024-01-01T00:00:00+00:00")
    assert name == staging_schema("manual__2024-01-01T00:00:00+00:00")
    assert name.startswith("stg_") and len(name) == 24 and name.isidentifier()
    assert name != staging_schema("manual__2024-01-02T00:00:00+00:00")
    # Airflow's own run ids repeat across DAGs: two pipelines staging in one database must not share a schema.
    from types import SimpleNamespace

    run = "scheduled__2026-11-26T04:29:00+00:00"
    one, two = ({"run_id": run, "dag": SimpleNamespace(dag_id=d)} for d in ("t.one", "t.two"))
    assert run_schema(one) != run_schema(two) and run_schema(one) == staging_schema(run, "t.one")
    assert run_schema({"run_id": run}) == staging_schema(run)  # no DAG in the context (these tests)


def test_prepare_and_cleanup_schema_on_every_connection():
    context = {"run_id": f"scheduled__{uuid.uuid4()}"}
    schema = staging_schema(context["run_id"])
    PrepareStagingOperator(task_id="p", conn_ids=[WH, SRC]).execute(context)
    PrepareStagingOperator(task_id="p", conn_ids=[WH, SRC]).execute(context)  # a retry is harmless
    assert schema_exists(WH, schema) and schema_exists(SRC, schema)
    execute(WH, f"CREATE TABLE {schema}.leftover (x int)")
    CleanupStagingOperator(task_id="c", conn_ids=[WH, SRC]).execute(context)
    assert not schema_exists(WH, schema) and not schema_exists(SRC, schema)
    CleanupStagingOperator(task_id="c", conn_ids=[WH, SRC]).execute(context)  # already gone: fine


# --- sources ----------------------------------------------------------------------------------------


def test_stage_same_connection_with_where(ctx):
    out = stage(ctx, "fr_customers", "customers", WH, where="country = 'FR'")
    size = query(WH, f"SELECT pg_total_relation_size('{stg(ctx)}.fr_customers')")[0][0]
    assert out == {"dataset": "fr_customers", "rows": 2, "bytes": size} and size > 0
    assert stage(ctx, "fr_customers", "public.customers", WH, where="country = 'FR'")["rows"] == 2  # retry
    assert query(WH, f"SELECT name FROM {stg(ctx)}.fr_customers ORDER BY id") == [("Ada",), ("Cy",)]


def test_stage_across_connections_streams_binary_copy(ctx):
    out = stage(ctx, "txns", "public.raw_transactions", SRC, where="amount > 10")
    assert (out["dataset"], out["rows"]) == ("txns", 9)  # ids 2..10 (id 11 has a NULL amount)
    assert out["bytes"] == query(WH, f"SELECT pg_total_relation_size('{stg(ctx)}.txns')")[0][0] > 0
    assert stage(ctx, "txns", "raw_transactions", SRC, where="amount > 10")["rows"] == 9  # retry: no duplicates
    cols = PostgresHook(WH).columns(f"{stg(ctx)}.txns")
    assert cols == [
        ("id", "integer"),
        ("customer_id", "integer"),
        ("amount", "numeric(10,2)"),
        ("kind", "text"),
        ("fee", "bigint"),
        ("note", "character varying(20)"),
        ("created_at", "timestamp with time zone"),
    ]
    src = query(SRC, "SELECT id, amount, kind::text, fee, note, created_at FROM raw_transactions WHERE amount > 10")
    dst = query(WH, f"SELECT id, amount, kind, fee, note, created_at FROM {stg(ctx)}.txns")
    assert sorted(dst) == sorted(src)


def test_stage_missing_source_table_is_a_clear_error(ctx):
    with pytest.raises(Exception, match=r"public\.nope not found"):
        stage(ctx, "x", "nope", SRC)


# --- transformations --------------------------------------------------------------------------------


def test_sql_transform_reads_staged_datasets_by_name(ctx):
    stage(ctx, "transactions", "raw_transactions", SRC)
    stage(ctx, "customers", "customers", WH, where="country = 'FR'")  # shadows public.customers
    out = transform(
        ctx,
        "revenue",
        """
        SELECT c.name, sum(t.amount) AS total
        FROM transactions t JOIN customers c ON c.id = t.customer_id
        GROUP BY c.name;
        """,
    )
    assert (out["dataset"], out["rows"]) == ("revenue", 2) and out["bytes"] > 0
    assert transform(ctx, "revenue", "SELECT 1 AS x")["rows"] == 1  # rebuilt on retry
    assert query(WH, f"SELECT x FROM {stg(ctx)}.revenue") == [(1,)]


# --- sinks ------------------------------------------------------------------------------------------


def _staged_updates(ctx: dict) -> None:
    """Dataset `upd` in staging: ids 2 and 3 with new names and id 9 which is new."""
    transform(
        ctx,
        "upd",
        "SELECT * FROM (VALUES (2, 'Bobby', 'DE'), (3, 'Cyd', 'FR'), (9, 'Zed', 'IT')) v(id, name, country)",
    )


def test_load_append_and_overwrite(ctx):
    execute(WH, "CREATE TABLE public.t_append (id int, name text, country text, note text DEFAULT 'x')")
    _staged_updates(ctx)
    out = load(ctx, "upd", "t_append", "append")
    assert (out["table"], out["rows"]) == ("t_append", 3) and out["bytes"] > 0  # the staged dataset loaded
    load(ctx, "upd", "public.t_append", "append")
    assert query(WH, "SELECT count(*), count(DISTINCT id), min(note) FROM t_append") == [(6, 3, "x")]
    assert load(ctx, "upd", "t_append", "overwrite")["rows"] == 3
    load(ctx, "upd", "t_append", "overwrite")
    assert query(WH, "SELECT id, name FROM t_append ORDER BY id") == [(2, "Bobby"), (3, "Cyd"), (9, "Zed")]


def test_load_merge_is_idempotent_and_updates_win(ctx):
    execute(WH, "CREATE TABLE public.t_merge AS SELECT id, name, country FROM customers")
    _staged_updates(ctx)
    for _ in range(2):
        assert load(ctx, "upd", "t_merge", "merge", keys=["id"])["rows"] == 3
    assert query(WH, "SELECT id, name FROM t_merge ORDER BY id") == [
        (1, "Ada"),
        (2, "Bobby"),
        (3, "Cyd"),
        (9, "Zed"),
    ]


def test_load_merge_missing_key_is_named(ctx):
    execute(WH, "CREATE TABLE public.t_keys (id int, name text)")
    _staged_updates(ctx)
    with pytest.raises(AirflowException, match="'country'.*not in table"):
        load(ctx, "upd", "t_keys", "merge", keys=["id", "country"])
    with pytest.raises(AirflowException, match="'nope'.*not in dataset"):
        load(ctx, "upd", "t_keys", "merge", keys=["nope"])
    with pytest.raises(AirflowException, match="needs keys"):
        load(ctx, "upd", "t_keys", "merge")
    with pytest.raises(AirflowException, match="upsert"):
        load(ctx, "upd", "t_keys", "upsert")


def test_load_creates_missing_schema_and_table(ctx):
    _staged_updates(ctx)
    table = f"mart_{SUFFIX}.dim_customer"
    assert load(ctx, "upd", table, "merge", keys=["id"])["rows"] == 3
    assert PostgresHook(WH).columns(table) == [("id", "integer"), ("name", "text"), ("country", "text")]
    assert query(WH, f"SELECT count(*) FROM {table}") == [(3,)]


def test_load_across_connections(ctx):
    execute(SRC, "CREATE TABLE public.customers_copy (id int PRIMARY KEY, name text, country text)")
    execute(SRC, "INSERT INTO customers_copy VALUES (2, 'old', 'DE'), (5, 'Eve', 'ES')")
    _staged_updates(ctx)
    for _ in range(2):
        assert load(ctx, "upd", "customers_copy", "merge", keys=["id"], sink=SRC)["rows"] == 3
    assert query(SRC, "SELECT id, name FROM customers_copy ORDER BY id") == [
        (2, "Bobby"),
        (3, "Cyd"),
        (5, "Eve"),
        (9, "Zed"),
    ]
    assert query(SRC, f"SELECT count(*) FROM {stg(ctx)}.upd") == [(3,)]  # shipped copy, dropped by cleanup
    CleanupStagingOperator(task_id="c", conn_ids=[WH, SRC]).execute(ctx)
    assert not schema_exists(SRC, stg(ctx))


def test_a_sink_connection_to_the_staging_database_under_another_name_loads_without_shipping(ctx, monkeypatch):
    """Two connection names for one database: shipping the staged table onto itself would wait forever."""
    import threading

    monkeypatch.setenv(f"AIRFLOW_CONN_{WH.upper()}_ALIAS", conn_json(WH))
    _staged_updates(ctx)
    op = LoadTableOperator(task_id="l", staging_conn_id=WH, sink_conn_id=f"{WH}_alias", dataset="upd", table="t_alias")
    done: list[dict] = []
    worker = threading.Thread(target=lambda: done.append(op.execute(ctx)), daemon=True)
    worker.start()
    worker.join(60)
    if not done:  # a regression: unblock the stuck session so that the fixtures can clean up
        from dag_factory.hooks.postgres import cancel_open_queries

        cancel_open_queries()
        worker.join(10)
        pytest.fail("the load did not finish within 60 s")
    assert done[0]["rows"] == 3
    assert query(WH, "SELECT count(*) FROM public.t_alias") == [(3,)]


def test_a_restart_of_the_staging_database_fails_the_tasks_that_read_staged_data(ctx):
    """Crash recovery empties UNLOGGED tables. A real crash is not exercised here (the machine's PostgreSQL is
    shared): the schema's note of the server's start time is altered, as a restart would make it differ."""
    load = LoadTableOperator(task_id="l", staging_conn_id=WH, sink_conn_id=WH, dataset="upd", table="t_r")
    load.pre_execute(ctx)  # nothing restarted: no error
    note = query(WH, f"SELECT obj_description('{stg(ctx)}'::regnamespace, 'pg_namespace')")[0][0]
    assert note.startswith("pipeline staging; server started ")
    execute(WH, f"COMMENT ON SCHEMA {stg(ctx)} IS 'pipeline staging; server started 2020-01-01 00:00:00+00'")
    with pytest.raises(AirflowException, match="restarted during this run") as exc:
        load.pre_execute(ctx)
    assert "2020-01-01" in str(exc.value) and WH in str(exc.value)
    for op in (
        QualityCheckOperator(task_id="q", conn_id=WH, table="upd", staged=True, checks=[]),
        SqlTransformOperator(task_id="x", staging_conn_id=WH, dataset="y", sql="SELECT 1"),
    ):
        with pytest.raises(AirflowException, match="restarted"):
            op.pre_execute(ctx)
    QualityCheckOperator(task_id="q", conn_id=WH, table="public.t", checks=[]).pre_execute(ctx)  # a sink table
    PrepareStagingOperator(task_id="p", conn_ids=[WH]).execute(ctx)  # a retry rebuilds the staging: fine again
    load.pre_execute(ctx)


# --- quality checks ---------------------------------------------------------------------------------


def check(name: str, expectation: str, severity: str = "error", **kwargs) -> dict:
    return {"name": name, "expectation": expectation, "kwargs": kwargs, "severity": severity}


def quality(table: str, *checks: dict, conn_id: str = SRC) -> list[dict]:
    return QualityCheckOperator(task_id="q", conn_id=conn_id, table=table, checks=list(checks)).execute({})


def test_quality_passing_error_check_and_failing_warn_check():
    results = quality(
        "public.raw_transactions",
        check("ids_present", "expect_column_values_to_not_be_null", column="id"),
        check("rows", "expect_table_row_count_to_be_between", min_value=1, max_value=100),
        check("amount_small", "expect_column_values_to_be_between", "warn", column="amount", max_value=20),
    )
    assert [(r["name"], r["success"]) for r in results] == [
        ("ids_present", True),
        ("rows", True),
        ("amount_small", False),
    ]
    assert results[1]["result"]["observed_value"] == 11
    assert results[2]["result"]["unexpected_count"] == 7
    json.dumps(results)  # XCom-able: GE's Decimals were converted
    assert all(isinstance(v, float) for v in results[2]["result"]["partial_unexpected_list"])


def test_quality_failing_error_check_raises_naming_it():
    with pytest.raises(AirflowException, match="amount_present") as exc:
        quality(
            "raw_transactions",
            check("amount_present", "expect_column_values_to_not_be_null", column="amount"),
            check("ok", "expect_column_values_to_not_be_null", column="id"),
        )
    assert "ok" not in str(exc.value).split(":")[-1]


def test_quality_unknown_expectation_is_named():
    with pytest.raises(AirflowException, match="expect_it_to_be_great"):
        quality("raw_transactions", check("x", "expect_it_to_be_great"))
    with pytest.raises(AirflowException, match="invalid kwargs"):
        quality("raw_transactions", check("x", "expect_column_values_to_not_be_null", colum="id"))


def test_quality_missing_column_fails_the_check_with_its_error():
    with pytest.raises(AirflowException, match="c1"):
        quality("raw_transactions", check("c1", "expect_column_values_to_not_be_null", column="nope"))


def test_quality_on_a_staged_dataset_finds_it_in_the_runs_schema(ctx: dict):
    StageTableOperator(
        task_id="s", source_conn_id=SRC, staging_conn_id=WH, table="public.raw_transactions", dataset="raw"
    ).execute(ctx)
    op = QualityCheckOperator(
        task_id="q",
        conn_id=WH,
        table="raw",
        staged=True,
        dataset="raw",
        checks=[check("rows", "expect_table_row_count_to_be_between", min_value=11, max_value=11)],
    )
    [result] = op.execute(ctx)
    assert result["success"] and (result["dataset"], result["table"]) == ("raw", f"{stg(ctx)}.raw")


def test_quality_on_any_sql_database(tmp_path, monkeypatch):
    import sqlite3

    path = tmp_path / "lite.db"
    with sqlite3.connect(path) as lite:
        lite.executescript("CREATE TABLE t (id INTEGER, name TEXT); INSERT INTO t VALUES (1, 'a'), (2, NULL);")
    monkeypatch.setenv("AIRFLOW_CONN_DF_LITE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    results = quality(
        "t",
        check("ids", "expect_column_values_to_not_be_null", column="id"),
        check("names", "expect_column_values_to_not_be_null", "warn", column="name"),
        conn_id="df_lite",
    )
    assert [(r["name"], r["success"], r["result"].get("unexpected_count")) for r in results] == [
        ("ids", True, 0),
        ("names", False, 1),
    ]


# --- secrets ----------------------------------------------------------------------------------------


def test_sqlalchemy_url_quotes_credentials():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_DF_URL", conn_json("db", password="p@ss:/w", sslmode="require"))
        url = PostgresHook("df_url").sqlalchemy_url()
    assert url == "postgresql+psycopg://postgres:p%40ss%3A%2Fw@127.0.0.1:5432/db?sslmode=require&hostaddr=127.0.0.1"


def test_connection_errors_never_show_the_password():
    with pytest.raises(psycopg.OperationalError) as exc:
        PostgresHook("df_broken").get_conn()
    assert "df_broken" in str(exc.value) and SECRET not in str(exc.value)
    with pytest.raises(AirflowException) as exc:
        quality("t", check("x", "expect_column_values_to_not_be_null", column="id"), conn_id="df_broken")
    assert SECRET not in str(exc.value) and "s3cr3t" not in str(exc.value)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
