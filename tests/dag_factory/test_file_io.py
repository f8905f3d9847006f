"""File, S3 and HTTP sources and sinks: formats, globbing, partitioned writes, path safety, HTTP pagination.

Real things throughout: files in a temporary file root, a moto S3 server on loopback, a local http.server,
a throwaway PostgreSQL database for staging. Operators run with `execute(context)` as Airflow would; their
Airflow connections are `AIRFLOW_CONN_<ID>` environment variables (see test_operators.py).
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk.exceptions import AirflowFailException

from dag_factory.builder.dag import build_dag
from dag_factory.exceptions import DagFactoryError, DefinitionError
from dag_factory.hooks.http_api import fetch_records, records_table
from dag_factory.hooks.objects import LocalStore, S3Store, fetch_arrow, load_arrow, matching, safe_path, write_dataset
from dag_factory.hooks.postgres import PostgresHook
from dag_factory.operators import (
    CleanupStagingOperator,
    PrepareStagingOperator,
    StageHttpOperator,
    StageObjectsOperator,
    WriteObjectsOperator,
    run_schema,
)
from dag_factory.spec import PipelineDefinition, validate_definition
from tests.pg import pg_url

DB_CONN = "df_files_pg"
S3_CONN = "df_files_s3"
API_CONN = "df_files_api"
TENANT = "acme"
BUCKET = "lake-bucket"

ORDERS_CSV = "id,customer,amount,ordered_at,note\n1,ada,10.5,2026-01-01 10:00:00,\n2,bob,20,2026-01-02 11:00:00,NA\n"
ORDERS_JSONL = '{"id": 3, "customer": "cy", "amount": 7.25, "tags": ["a", "b"], "meta": {"vip": true}}\n'


# -- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def staging_db(make_database) -> str:  # type: ignore[no-untyped-def]
    return str(make_database("df_files"))


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from tests.e2e.harness import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def s3_client(s3_endpoint: str) -> Any:
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    client.create_bucket(Bucket=BUCKET)
    return client


class Api(BaseHTTPRequestHandler):
    """/items?page=N&per_page=M (page numbers), /linked?at=N (next links), /cursor?cursor=C, /bad (500)."""

    ITEMS = [{"id": i, "name": f"item {i}", "price": i * 1.5} for i in range(1, 8)]
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        Api.requests.append(self.path)
        if url.path == "/api/items":
            page, size = int(q.get("page", 1)), int(q.get("per_page", 3))
            body: Any = {"data": {"items": self.ITEMS[(page - 1) * size : page * size]}}
        elif url.path == "/api/linked":
            at = int(q.get("at", 0))
            nxt = f"/api/linked?at={at + 2}" if at + 2 < len(self.ITEMS) else None
            body = {"results": self.ITEMS[at : at + 2], "links": {"next": nxt}}
        elif url.path == "/api/evil":
            body = {"results": self.ITEMS[:1], "next": "http://example.invalid/steal"}
        elif url.path == "/api/cursor":
            at = int(q.get("cursor") or 0)
            body = {"records": self.ITEMS[at : at + 4], "meta": {"next": str(at + 4) if at + 4 < 7 else None}}
        else:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"boom")
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()


@pytest.fixture(scope="module", autouse=True)
def connections(staging_db: str, s3_endpoint: str, api_url: str) -> Iterator[None]:
    pg = {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": staging_db}
    aws = {"conn_type": "aws", "login": "k", "password": "s", "extra": {"endpoint_url": s3_endpoint}}
    http = {"conn_type": "http", "host": api_url, "schema": "http", "extra": {"X-Client": "tests", "timeout": 5}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"AIRFLOW_CONN_{DB_CONN.upper()}", json.dumps(pg))
        mp.setenv(f"AIRFLOW_CONN_{S3_CONN.upper()}", json.dumps(aws))
        mp.setenv(f"AIRFLOW_CONN_{API_CONN.upper()}", json.dumps(http))
        yield


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file root of tenant TENANT (the tenant of the DAG in `ctx`): where its file tasks read and write."""
    (tmp_path / "files" / TENANT).mkdir(parents=True)
    monkeypatch.setenv("PIPELINE_FILE_ROOT", str(tmp_path / "files"))
    return (tmp_path / "files" / TENANT).resolve()


@pytest.fixture
def ctx() -> Iterator[dict]:
    # A pipeline DAG's id is `<tenant>.<pipeline>`: the file tasks find their tenant's root from it.
    context = {"run_id": f"manual__{uuid.uuid4()}", "params": {}, "dag": SimpleNamespace(dag_id=f"{TENANT}.files")}
    PrepareStagingOperator(task_id="prepare", conn_ids=[DB_CONN]).execute(context)
    yield context
    CleanupStagingOperator(task_id="cleanup", conn_ids=[DB_CONN]).execute(context)


def staged(staging_db: str, ctx: dict, dataset: str, order: str = "1") -> list[tuple]:
    with psycopg.connect(pg_url(staging_db)) as conn:
        return conn.execute(f'SELECT * FROM "{run_schema(ctx)}"."{dataset}" ORDER BY {order}').fetchall()


def column_types(staging_db: str, ctx: dict, dataset: str) -> dict[str, str]:
    sql = "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
    with psycopg.connect(pg_url(staging_db)) as conn:
        return dict(conn.execute(sql, (run_schema(ctx), dataset)).fetchall())


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


# -- path safety ----------------------------------------------------------------------------------------------
def test_paths_stay_under_the_root(tmp_path: Path) -> None:
    root = (tmp_path / "root").resolve()
    root.mkdir()
    (tmp_path / "secret.csv").write_text("a\n1\n")
    assert safe_path(root, "in/a.csv") == root / "in" / "a.csv"
    for bad in ("../secret.csv", "in/../../secret.csv", "/etc/passwd"):
        with pytest.raises(DagFactoryError):
            safe_path(root, bad)
    (root / "link").symlink_to(tmp_path)  # a symlink leading out is refused too
    with pytest.raises(DagFactoryError, match="outside the file root"):
        safe_path(root, "link/secret.csv")
    assert LocalStore(root).list_keys("") == []  # the symlinked directory is not followed


@pytest.mark.parametrize(
    ("path", "message"),
    [("../etc", "'..'"), ("/etc/passwd", "not absolute"), ("a/../../b", "'..'"), ("C:/x", "not absolute")],
)
def test_definition_rejects_paths_leaving_the_root(path: str, message: str) -> None:
    d = {
        "sources": {"a": {"type": "file", "path": path, "format": "csv"}},
        "sinks": {"out": {"type": "file", "input": "a", "path": path}},
        "orchestration": {"staging_connection": "wh"},
    }
    with pytest.raises(DefinitionError) as err:
        validate_definition(d)
    paths = {e["path"]: e["message"] for e in err.value.errors}
    assert set(paths) == {"sources.a.path", "sinks.out.path"}
    assert message in paths["sources.a.path"]


def test_definition_checks_of_object_sinks_and_the_staging_connection() -> None:
    d = {
        "sources": {"a": {"type": "file", "path": "in", "glob": "../*", "format": "csv"}},
        "sinks": {"out": {"type": "file", "input": "a", "path": "out"}},
    }
    with pytest.raises(DefinitionError) as err:
        validate_definition(d)
    assert [e["path"] for e in err.value.errors] == ["sources.a.glob"]
    d["sources"]["a"]["glob"] = "*.csv"
    d["quality_checks"] = [{"name": "n", "dataset": "out", "expectation": "expect_table_row_count_to_be_between"}]
    with pytest.raises(DefinitionError) as err:
        validate_definition(d)
    assert [e["path"] for e in err.value.errors] == ["orchestration.staging_connection"]
    d["orchestration"] = {"staging_connection": "wh"}
    validate_definition(d)  # a file sink is checked through the dataset it writes


def test_schema_and_connection_names_know_the_new_types() -> None:
    d = validate_definition(
        {
            "sources": {
                "f": {"type": "file", "path": "in", "format": "jsonl"},
                "s": {"type": "s3", "connection": "lake", "bucket": "b-1", "prefix": "raw/", "format": "parquet"},
                "h": {"type": "http", "connection": "api", "pagination": {"type": "cursor", "cursor_path": "m.c"}},
            },
            "sinks": {
                "o": {"type": "s3", "connection": "lake", "bucket": "b-1", "prefix": "out", "input": "f"},
                "t": {"type": "postgres", "connection": "wh", "table": "t", "input": "s"},
            },
        }
    )
    assert d.connection_names() == ["api", "lake", "wh"]
    assert d.staging_connection() == "wh"  # the first sink writing a table, not the s3 one
    defs = PipelineDefinition.model_json_schema()["$defs"]
    assert {"FileSource", "S3Source", "HttpSource", "FileSink", "S3Sink", "CursorPagination"} <= set(defs)


def test_builder_dispatches_the_new_types() -> None:
    d = {
        "sources": {
            "f": {"type": "file", "path": "in", "format": "csv"},
            "h": {"type": "http", "connection": "api", "path": "/x", "max_pages": 3},
        },
        "sinks": {
            "o": {"type": "s3", "connection": "lake", "bucket": "b-1", "prefix": "out", "input": "f"},
            "t": {"type": "postgres", "connection": "wh", "table": "t", "input": "h"},
        },
    }
    dag = build_dag(d, dag_id="t.io", connections={"api": "t.api", "lake": "t.lake", "wh": "t.wh"})
    assert isinstance(dag.task_dict["sources.f"], StageObjectsOperator)
    assert isinstance(dag.task_dict["sources.h"], StageHttpOperator)
    sink = dag.task_dict["sinks.o"]
    assert isinstance(sink, WriteObjectsOperator) and (sink.conn_id, sink.bucket, sink.path) == ("t.lake", "b-1", "out")
    assert dag.task_dict["cleanup_staging"].conn_ids == ["t.wh"]  # the s3 sink has no staging schema


# -- formats and globbing --------------------------------------------------------------------------------------
def test_file_source_reads_csv_with_glob_and_infers_types(root: Path, staging_db: str, ctx: dict) -> None:
    (root / "landing" / "2026").mkdir(parents=True)
    (root / "landing" / "2026" / "orders-1.csv").write_text(ORDERS_CSV)
    (root / "landing" / "2026" / "orders-2.csv").write_text("id,customer,amount,ordered_at,note\n5,dan,1,,x\n")
    (root / "landing" / "readme.txt").write_text("not data")
    op = StageObjectsOperator(
        task_id="s", store="file", staging_conn_id=DB_CONN, dataset="orders", path="landing", glob="*.csv", format="csv"
    )
    out = op.execute(ctx)
    assert out["rows"] == 3 and out["files"] == 2
    rows = staged(staging_db, ctx, "orders")
    assert rows[0] == (1, "ada", 10.5, datetime(2026, 1, 1, 10), None)  # an empty field is NULL
    assert rows[1][4] == "NA"  # ... and "NA" stays a string
    assert column_types(staging_db, ctx, "orders") == {
        "id": "bigint",
        "customer": "text",
        "amount": "double precision",
        "ordered_at": "timestamp without time zone",
        "note": "text",
    }
    ns, name = op._named[0][0]
    assert ns == "file" and name == str(root / "landing" / "2026" / "orders-1.csv")


def test_jsonl_nested_values_become_jsonb(root: Path, staging_db: str, ctx: dict) -> None:
    (root / "events.jsonl").write_text(ORDERS_JSONL + '{"id": 4, "customer": null, "amount": 1}\n')
    op = StageObjectsOperator(
        task_id="s", store="file", staging_conn_id=DB_CONN, dataset="ev", path="events.jsonl", format="jsonl"
    )
    assert op.execute(ctx)["rows"] == 2
    assert staged(staging_db, ctx, "ev")[0] == (3, "cy", 7.25, ["a", "b"], {"vip": True})
    types = column_types(staging_db, ctx, "ev")
    assert types["tags"] == "jsonb" and types["meta"] == "jsonb"


def test_parquet_types_survive_a_round_trip(root: Path, staging_db: str, ctx: dict) -> None:
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int32()),
            "price": pa.array([Decimal("1.10"), None], pa.decimal128(10, 2)),
            "day": pa.array([date(2026, 1, 1), date(2026, 1, 2)]),
            "at": pa.array([datetime(2026, 1, 1, 8), None], pa.timestamp("us", tz="UTC")),
            "ok": [True, None],
            "label": ["", None],
        }
    )
    (root / "p").mkdir()
    (root / "p" / "a.parquet").write_bytes(parquet_bytes(table))
    StageObjectsOperator(
        task_id="s", store="file", staging_conn_id=DB_CONN, dataset="p", path="p", format="parquet"
    ).execute(ctx)
    types = column_types(staging_db, ctx, "p")
    assert types == {
        "id": "integer",
        "price": "numeric",
        "day": "date",
        "at": "timestamp with time zone",
        "ok": "boolean",
        "label": "text",
    }
    rows = staged(staging_db, ctx, "p")
    assert rows[0][1] == Decimal("1.10") and rows[0][5] == "" and rows[1][5] is None
    back = fetch_arrow(PostgresHook(DB_CONN), (run_schema(ctx), "p"))
    assert back.schema.field("price").type == pa.decimal128(10, 2)
    assert back.schema.field("id").type == pa.int32()
    assert back.column("at").to_pylist()[0].replace(tzinfo=None) == datetime(2026, 1, 1, 8)
    assert back.column("label").to_pylist() == ["", None]
    assert back.column("ok").to_pylist() == [True, None]


def test_no_matching_file_fails_clearly(root: Path, ctx: dict) -> None:
    op = StageObjectsOperator(
        task_id="s", store="file", staging_conn_id=DB_CONN, dataset="x", path="nothing", format="csv"
    )
    with pytest.raises(AirflowFailException, match="no file object under 'nothing'"):
        op.execute(ctx)
    bad = StageObjectsOperator(
        task_id="s", store="file", staging_conn_id=DB_CONN, dataset="x", path="../", format="csv"
    )
    with pytest.raises(AirflowFailException, match="outside the file root"):
        bad.execute(ctx)


# -- partitioned writes -----------------------------------------------------------------------------------------
def test_partitioned_write_overwrite_and_append(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    table = pa.table({"country": ["FR", "DE", "FR", None], "day": ["d1", "d1", "d2", "d1"], "n": [1, 2, 3, 4]})
    keys, size = write_dataset(store, "out", table, fmt="parquet", partition_by=["country"], mode="overwrite", tag="r1")
    assert sorted(keys) == [
        "out/country=DE/part-r1-0000.parquet",
        "out/country=FR/part-r1-0000.parquet",
        "out/country=__HIVE_DEFAULT_PARTITION__/part-r1-0000.parquet",
    ]
    assert size > 0
    fr = pq.read_table(tmp_path / "out" / "country=FR" / "part-r1-0000.parquet")
    assert fr.column_names == ["day", "n"] and fr.column("n").to_pylist() == [1, 3]
    write_dataset(store, "out", table, fmt="parquet", partition_by=["country"], mode="append", tag="r2")
    assert len(store.list_keys("out")) == 6
    keys, _ = write_dataset(store, "out", table.slice(0, 1), fmt="csv", partition_by=[], mode="overwrite", tag="r3")
    assert store.list_keys("out") == keys == ["out/part-r3-0000.csv"]  # overwrite replaced the whole prefix
    assert (tmp_path / "out" / "part-r3-0000.csv").read_text() == '"country","day","n"\n"FR","d1",1\n'
    with pytest.raises(DagFactoryError, match="partition_by column"):
        write_dataset(store, "out", table, fmt="csv", partition_by=["nope"], mode="append", tag="r4")


def test_file_sink_operator_writes_a_staged_dataset(root: Path, staging_db: str, ctx: dict) -> None:
    target = (run_schema(ctx), "sales")
    load_arrow(PostgresHook(DB_CONN), target, pa.table({"day": [date(2026, 1, 1)] * 2, "v": [1.5, 2.5]}))
    op = WriteObjectsOperator(
        task_id="w", store="file", staging_conn_id=DB_CONN, dataset="sales", path="exports/sales", partition_by=["day"]
    )
    assert op.execute(ctx)["rows"] == 2
    files = LocalStore(root).list_keys("exports")
    assert len(files) == 1 and files[0].startswith("exports/sales/day=2026-01-01/part-")
    assert pq.read_table(root / files[0]).column("v").to_pylist() == [1.5, 2.5]
    assert op._named[1][0][:2] == ("file", str(root / "exports" / "sales"))
    lineage = op.get_openlineage_facets_on_complete(None)
    assert (lineage.inputs[0].namespace, lineage.inputs[0].name.split(".")[0]) == (
        "postgres://127.0.0.1:5432",
        staging_db,
    )
    out = lineage.outputs[0]
    assert (out.namespace, out.name) == ("file", str(root / "exports" / "sales"))
    assert out.outputFacets["outputStatistics"].rowCount == 2 and out.outputFacets["outputStatistics"].size > 0


# -- S3 (moto) ----------------------------------------------------------------------------------------------------
def test_s3_source_and_partitioned_sink(s3_client: Any, staging_db: str, ctx: dict) -> None:
    s3_client.put_object(
        Bucket=BUCKET, Key="raw/a.parquet", Body=parquet_bytes(pa.table({"k": ["x", "y"], "v": [1, 2]}))
    )
    s3_client.put_object(Bucket=BUCKET, Key="raw/sub/b.parquet", Body=parquet_bytes(pa.table({"k": ["x"], "v": [3]})))
    s3_client.put_object(Bucket=BUCKET, Key="raw/c.csv", Body=b"k,v\nz,9\n")
    src = StageObjectsOperator(
        task_id="s",
        store="s3",
        conn_id=S3_CONN,
        bucket=BUCKET,
        staging_conn_id=DB_CONN,
        dataset="raw",
        path="raw/",
        glob="*.parquet",
        format="parquet",
    )
    assert src.execute(ctx)["files"] == 2
    assert staged(staging_db, ctx, "raw", "v") == [("x", 1), ("y", 2), ("x", 3)]
    assert src._named[0][0] == (f"s3://{BUCKET}", "raw/a.parquet")
    s3_client.put_object(Bucket=BUCKET, Key="curated/old.parquet", Body=b"stale")
    sink = WriteObjectsOperator(
        task_id="w",
        store="s3",
        conn_id=S3_CONN,
        bucket=BUCKET,
        staging_conn_id=DB_CONN,
        dataset="raw",
        path="curated",
        partition_by=["k"],
    )
    assert sink.execute(ctx)["files"] == 2
    store = S3Store(s3_client, BUCKET)
    keys = store.list_keys("curated/")
    assert [k.rsplit("/", 1)[0] for k in keys] == ["curated/k=x", "curated/k=y"]  # old.parquet replaced
    assert sorted(pq.read_table(io.BytesIO(store.read(keys[0]))).column("v").to_pylist()) == [1, 3]
    assert matching(store, "raw/", "*.csv") == ["raw/c.csv"]


# -- HTTP pagination ------------------------------------------------------------------------------------------------
def session() -> Any:
    import requests

    return requests.Session()


def test_http_page_number_pagination(api_url: str) -> None:
    pagination = {"type": "page_number", "page_param": "page", "size_param": "per_page", "size": 3}
    got = fetch_records(session(), api_url, "/items", records_path="data.items", pagination=pagination)
    assert [r["id"] for r in got.records] == list(range(1, 8)) and got.pages == 3  # 3 + 3 + 1 (< size: last)
    # Without a size, the walk stops at the first empty page.
    got = fetch_records(
        session(),
        api_url,
        "items",
        params={"per_page": 4},
        records_path="data.items",
        pagination={"type": "page_number"},
    )
    assert len(got.records) == 7 and got.pages == 3


def test_http_next_link_cursor_and_max_pages(api_url: str) -> None:
    pagination = {"type": "next_link", "next_path": "links.next"}
    got = fetch_records(session(), api_url, "/linked", records_path="results", pagination=pagination)
    assert [r["id"] for r in got.records] == list(range(1, 8)) and got.pages == 4
    got = fetch_records(session(), api_url, "/linked", records_path="results", pagination=pagination, max_pages=2)
    assert len(got.records) == 4 and got.truncated
    cursor = {"type": "cursor", "cursor_path": "meta.next", "cursor_param": "cursor"}
    got = fetch_records(session(), api_url, "/cursor", records_path="records", pagination=cursor)
    assert [r["id"] for r in got.records] == list(range(1, 8)) and got.pages == 2
    with pytest.raises(DagFactoryError, match="leaves the connection's host"):
        fetch_records(session(), api_url, "/evil", records_path="results", pagination={"type": "next_link"})
    with pytest.raises(DagFactoryError, match="HTTP 500"):
        fetch_records(session(), api_url, "/bad")


def test_http_source_operator_stages_every_page(staging_db: str, ctx: dict) -> None:
    Api.requests.clear()
    op = StageHttpOperator(
        task_id="h",
        conn_id=API_CONN,
        staging_conn_id=DB_CONN,
        dataset="items",
        path="/items",
        params_={"per_page": 5},
        records_path="data.items",
        pagination={"type": "page_number", "page_param": "page", "start": 1},
    )
    assert op.execute(ctx) | {"bytes": 0} == {"dataset": "items", "rows": 7, "pages": 3, "bytes": 0}
    assert staged(staging_db, ctx, "items")[6] == (7, "item 7", 10.5)
    assert Api.requests[0] == "/api/items?per_page=5&page=1"
    host = api_url_host = op._named[0][0]
    assert host[0].startswith("http://127.0.0.1:") and host[1] == "/api/items" and api_url_host


def test_http_params_and_paths_are_templated() -> None:
    import jinja2

    op = StageHttpOperator(
        task_id="h",
        conn_id=API_CONN,
        staging_conn_id=DB_CONN,
        dataset="d",
        path="/x",
        params_={"since": "{{ params.since }}", "n": 5},
    )
    op.render_template_fields({"params": {"since": "2026-01-01"}}, jinja_env=jinja2.Environment())
    assert op.params_ == {"since": "2026-01-01", "n": 5}
    files = StageObjectsOperator(
        task_id="f", store="file", staging_conn_id=DB_CONN, dataset="d", path="in/{{ params.day }}", format="csv"
    )
    files.render_template_fields({"params": {"day": "2026-01-02"}}, jinja_env=jinja2.Environment())
    assert files.path == "in/2026-01-02"


def test_dot_prefixes_list_like_plain_ones(root: Path) -> None:
    (root / "in").mkdir()
    (root / "in" / "a.csv").write_text("x\n1\n")
    store = LocalStore(root)
    assert matching(store, "./in/", "*.csv") == matching(store, "in", "*.csv") == ["in/a.csv"]
    assert matching(store, ".", "in/*.csv") == ["in/a.csv"]


def test_records_of_mixed_types_still_make_a_table() -> None:
    table = records_table([{"id": 1, "v": {"a": 1}}, {"id": "x-2", "w": True}])
    assert table.column_names == ["id", "v", "w"]
    assert table.column("id").to_pylist() == ["1", "x-2"]  # a number and a string: text
    assert table.column("w").to_pylist() == [None, True]


def test_the_stack_hands_the_file_root_to_airflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.stack import AirflowStack

    monkeypatch.delenv("PIPELINE_FILE_ROOT", raising=False)
    stack = AirflowStack(tmp_path / "data" / "airflow", 8080, tmp_path / "dags")
    assert stack.env()["PIPELINE_FILE_ROOT"] == str((tmp_path / "data" / "files").resolve())
    monkeypatch.setenv("PIPELINE_FILE_ROOT", str(tmp_path / "elsewhere"))
    assert stack.env()["PIPELINE_FILE_ROOT"] == str((tmp_path / "elsewhere").resolve())
