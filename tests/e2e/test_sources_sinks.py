"""File, S3 and HTTP sources and sinks end to end through a real Airflow: one pipeline reads a CSV, a JSON
lines and a Parquet file, a Parquet object from S3 (moto's server on loopback) and a paginated JSON API (a
local http.server), transforms in the staging database, and writes a PostgreSQL table, hive-partitioned
Parquet objects to S3 and hive-partitioned CSV files under the file root. Plus the 400s for definitions
that reach outside the file root or use a connection of the wrong type."""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from tests.e2e import harness
from tests.e2e.conftest import create_active, query, run_to_end

pytestmark = pytest.mark.e2e

BUCKET = "io-e2e"
ITEMS = [{"sku": f"S{i}", "title": f"item {i}", "stock": {"qty": i}} for i in range(1, 8)]


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    from moto.server import ThreadedMotoServer

    port = harness.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    client.create_bucket(Bucket=BUCKET)
    yield url, client
    server.stop()


class ItemsApi(BaseHTTPRequestHandler):
    """GET /v2/items?offset=N: two items per page and a `next` link (relative) while more remain."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        offset = int(parse_qs(url.query).get("offset", ["0"])[0])
        nxt = f"/v2/items?offset={offset + 2}" if offset + 2 < len(ITEMS) else None
        body = json.dumps({"data": ITEMS[offset : offset + 2], "paging": {"next": nxt}}).encode()
        self.send_response(200 if url.path == "/v2/items" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def items_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ItemsApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def landing_files(root: Path, run: str) -> None:
    folder = root / "landing" / run
    folder.mkdir(parents=True)
    (folder / "orders-a.csv").write_text("id,customer,amount,day\n1,ada,10.50,2026-03-01\n2,bob,20,2026-03-01\n")
    (folder / "orders-b.jsonl").write_text('{"id": 3, "customer": "cy", "amount": 7.25, "day": "2026-03-02"}\n')
    (folder / "orders-c.parquet").write_bytes(
        parquet(pa.table({"id": [4, 5], "customer": ["ada", "dan"], "amount": [1.0, 2.0], "day": ["2026-03-02"] * 2}))
    )


def connections(api: httpx.Client, s3_url: str, api_url: str) -> None:
    for body in (
        {
            "name": "lake",
            "type": "s3",
            "credentials": {"username": "AKIAIO", "password": "io-secret"},
            "properties": {"bucket": BUCKET, "endpointUrl": s3_url},
        },
        {"name": "items-api", "type": "http", "url": api_url},
    ):
        resp = api.post("/v1/pipelines/connections", json=body)
        assert resp.status_code == 201, resp.text


def definition(run: str, schema: str) -> dict[str, Any]:
    landing = f"landing/{run}"
    union = " UNION ALL ".join(
        f"SELECT id::int AS id, customer, amount::numeric(10,2) AS amount, day::date AS day FROM {t}"
        for t in ("csv_orders", "jsonl_orders", "parquet_orders")
    )
    return {
        "sources": {
            "csv_orders": {"type": "file", "path": landing, "glob": "*.csv", "format": "csv"},
            "jsonl_orders": {"type": "file", "path": f"{landing}/orders-b.jsonl", "format": "jsonl"},
            "parquet_orders": {"type": "file", "path": landing, "glob": "orders-*.parquet", "format": "parquet"},
            "regions": {
                "type": "s3",
                "connection": "lake",
                "bucket": BUCKET,
                "prefix": f"raw/{run}/",
                "format": "parquet",
            },
            "items": {
                "type": "http",
                "connection": "items-api",
                "path": "/v2/items",
                "records_path": "data",
                "pagination": {"type": "next_link", "next_path": "paging.next"},
                "max_pages": 10,
            },
        },
        "transformations": [
            {
                "name": "orders",
                "type": "sql_transform",
                "inputs": ["csv_orders", "jsonl_orders", "parquet_orders", "regions"],
                "sql": f"SELECT o.*, r.region FROM ({union}) o LEFT JOIN regions r USING (customer)",
            }
        ],
        "sinks": {
            "orders_table": {
                "type": "postgres",
                "connection": "warehouse",
                "table": f"{schema}.orders",
                "input": "orders",
            },
            "items_table": {
                "type": "postgres",
                "connection": "warehouse",
                "table": f"{schema}.items",
                "input": "items",
            },
            "orders_lake": {
                "type": "s3",
                "connection": "lake",
                "bucket": BUCKET,
                "prefix": f"curated/{run}/orders",
                "input": "orders",
                "partition_by": ["region"],
            },
            "orders_export": {
                "type": "file",
                "path": f"exports/{run}/orders",
                "input": "orders",
                "format": "csv",
                "partition_by": ["day"],
            },
        },
        # Checks on a file sink (its staged input, before it is written) and on an http source (as staged).
        "quality_checks": [
            {
                "name": "export_rows",
                "dataset": "orders_export",
                "expectation": "expect_table_row_count_to_equal",
                "kwargs": {"value": 5},
            },
            {
                "name": "skus",
                "dataset": "items",
                "expectation": "expect_column_values_to_be_unique",
                "kwargs": {"column": "sku"},
                "severity": "warn",
            },
        ],
        # One retry: on a loaded machine the first task of a fresh Airflow can fail to start (the api-server
        # answers the task's start call too late); every step here is idempotent, so a retry is harmless.
        "orchestration": {"retries": 1, "retry_delay_seconds": 2},
    }


def test_files_s3_and_http_in_one_pipeline(
    running: harness.Running, tenant: httpx.Client, warehouse_db: str, s3: tuple[str, Any], items_api: str
) -> None:
    s3_url, client = s3
    run, schema = uuid.uuid4().hex[:8], "io_" + uuid.uuid4().hex[:8]
    root = running.stack.file_root / tenant.headers["X-Tenant-ID"]  # each tenant's files live in its own root
    landing_files(root, run)
    regions = pa.table({"customer": ["ada", "bob", "cy"], "region": ["EU", "US", "EU"]})
    client.put_object(Bucket=BUCKET, Key=f"raw/{run}/regions.parquet", Body=parquet(regions))
    connections(tenant, s3_url, items_api)
    pipeline = create_active(tenant, {"name": f"io-{run}", "definition": definition(run, schema)})

    # 11 tasks: a generous bound, for a machine shared with other test sessions.
    done = run_to_end(tenant, pipeline["pipelineId"], timeout=480)
    if done["status"] != "COMPLETED":  # say why: the failed tasks' last log lines
        logs = tenant.get(f"/v1/pipelines/executions/{done['executionId']}/logs", params={"lines": 40}).text
        pytest.fail(f"{json.dumps(done)[:3000]}\n{logs[-6000:]}")

    orders = query(warehouse_db, f"SELECT id, customer, amount, day::text, region FROM {schema}.orders ORDER BY id")
    assert orders == [
        (1, "ada", Decimal("10.50"), "2026-03-01", "EU"),
        (2, "bob", Decimal("20.00"), "2026-03-01", "US"),
        (3, "cy", Decimal("7.25"), "2026-03-02", "EU"),
        (4, "ada", Decimal("1.00"), "2026-03-02", "EU"),
        (5, "dan", Decimal("2.00"), "2026-03-02", None),
    ]
    items = query(warehouse_db, f"SELECT sku, title, stock FROM {schema}.items ORDER BY sku")
    assert [i[0] for i in items] == [f"S{i}" for i in range(1, 8)] and items[0][2] == {"qty": 1}

    # S3 sink: hive-partitioned Parquet, one part per region, the partition column out of the files.
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"curated/{run}/orders/")["Contents"]
    keys = sorted(o["Key"] for o in listed)
    assert [k.split("/")[3] for k in keys] == ["region=EU", "region=US", "region=__HIVE_DEFAULT_PARTITION__"]
    assert all(k.rsplit("/", 1)[1].startswith("part-") and k.endswith(".parquet") for k in keys)
    eu = pq.read_table(io.BytesIO(client.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read()))
    assert "region" not in eu.column_names and sorted(eu.column("id").to_pylist()) == [1, 3, 4]
    assert eu.schema.field("amount").type == pa.decimal128(10, 2)

    # File sink: CSV partitioned by day under the tenant's file root.
    export = root / "exports" / run / "orders"
    files = sorted(p.relative_to(export).as_posix() for p in export.rglob("*.csv"))
    assert [f.split("/")[0] for f in files] == ["day=2026-03-01", "day=2026-03-02"]
    march_2 = pcsv.read_csv(export / files[1])
    assert sorted(march_2.column("id").to_pylist()) == [3, 4, 5]

    status = tenant.get(f"/v1/pipelines/executions/{done['executionId']}").json()
    assert status["progress"]["percentage"] == 100
    checks = {r["name"]: r for r in status["qualityResults"]}
    assert (checks["export_rows"]["success"], checks["export_rows"]["observedValue"]) == (True, 5), checks
    assert (checks["skus"]["success"], checks["skus"]["dataset"], checks["skus"]["elementCount"]) == (True, "items", 7)
    # Read: 2 csv + 1 jsonl + 2 parquet + 3 s3 + 7 http rows; written: 5 + 7 into tables, 5 + 5 as files.
    assert (status["metrics"]["rowsProcessed"], status["metrics"]["rowsWritten"]) == (15, 22), status["metrics"]
    landed = sum(f.stat().st_size for f in (root / "landing" / run).iterdir())  # one source reads each
    assert status["metrics"]["bytesProcessed"] > landed, status["metrics"]  # + the s3 object, http pages


def test_paths_and_connection_types_are_checked_on_create(
    running: harness.Running, tenant: httpx.Client, s3: tuple[str, Any], items_api: str
) -> None:
    connections(tenant, s3[0], items_api)
    d = definition("x", "io_x")
    d["sources"]["csv_orders"]["path"] = "../../etc"
    d["sources"]["regions"]["connection"] = "warehouse"  # a postgres connection for an s3 source
    d["sources"]["items"]["connection"] = "lake"  # an s3 connection for an http source
    resp = tenant.post("/v1/pipelines", json={"name": "io-bad", "definition": d})
    assert resp.status_code == 400, resp.text
    assert [e["path"] for e in resp.json()["error"]["details"]] == ["definition.sources.csv_orders.path"]
    d["sources"]["csv_orders"]["path"] = "landing"
    resp = tenant.post("/v1/pipelines", json={"name": "io-bad", "definition": d})
    assert resp.status_code == 400, resp.text
    details = {e["path"]: e["message"] for e in resp.json()["error"]["details"]}
    assert set(details) == {"definition.sources.regions.connection", "definition.sources.items.connection"}
    assert "needs s3" in details["definition.sources.regions.connection"]
    schema = tenant.get("/v1/pipelines/schema").json()
    assert {"FileSource", "S3Source", "HttpSource", "FileSink", "S3Sink"} <= set(schema["$defs"])
