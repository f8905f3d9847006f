"""The definition language end to end through a real Airflow: one pipeline exercising every new
transformation type (filter, aggregate, deduplicate, select_columns, python), depends_on, concurrency,
priority, per-task timeout, append and overwrite sinks and a check; a failing one that calls its webhook;
and the validate / schema endpoints."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import harness
from tests.e2e.conftest import create_active, example, query, run_to_end

pytestmark = pytest.mark.e2e


def definition_language(table_prefix: str) -> dict[str, Any]:
    body = example("language", f"{table_prefix}.daily")
    d = body["definition"]
    d["transformations"] += [
        {
            "name": "big",
            "type": "filter",
            "input": "enrich_with_products",
            "condition": "amount >= 100",
            "materialize": "view",
        },
        {
            "name": "per_category",
            "type": "aggregate",
            "input": "big",
            "group_by": ["category"],
            "aggregates": {
                "n": {"function": "count"},
                "total": {"function": "sum", "column": "amount"},
                "products": {"function": "count_distinct", "column": "product_id"},
            },
            "timeout_seconds": 120,
        },
        {
            "name": "latest_per_product",
            "type": "deduplicate",
            "input": "enrich_with_products",
            "keys": ["product_id"],
            "order_by": ["sale_date", "transaction_id"],
        },
        {
            "name": "typed",
            "type": "select_columns",
            "input": "latest_per_product",
            "columns": {"product": {"from": "product_id", "cast": "text"}, "last_sale": {"from": "sale_date"}},
        },
        {
            "name": "both",
            "type": "python",
            "callable": "dag_factory.callables.union_all",
            "inputs": ["typed", "typed"],
            "options": {"source_column": "origin"},
            "depends_on": ["per_category"],
        },
    ]
    d["sinks"]["per_category"] = {
        "type": "postgres",
        "connection": "warehouse",
        "table": f"{table_prefix}.per_category",
        "input": "per_category",
        "mode": "overwrite",
    }
    d["sinks"]["both"] = {
        "type": "postgres",
        "connection": "warehouse",
        "table": f"{table_prefix}.both",
        "input": "both",
        "mode": "append",
        "depends_on": ["daily_transactions"],
    }
    d["quality_checks"].append(
        {
            "name": "categories_unique",
            "dataset": "per_category",
            "expectation": "expect_column_values_to_be_unique",
            "kwargs": {"column": "category"},
        }
    )
    d["orchestration"].update(concurrency=2, priority=5)
    return body


def test_every_transformation_type_in_one_run(tenant, running, sales_db, warehouse_db):
    p = create_active(tenant, definition_language("lang"))
    dag = running.airflow().get(f"/dags/{p['dagId']}/details").json()
    assert dag["max_active_tasks"] == 2 and dag["owners"] == ["tester"], dag
    done = run_to_end(tenant, p["pipelineId"])
    assert done["status"] == "COMPLETED", done

    window = "created_at >= '2026-02-01' AND created_at < '2026-02-12' AND amount > 0"
    expected = query(
        sales_db,
        f"SELECT p.category, count(*), sum(amount), count(DISTINCT product_id) FROM raw_transactions t "
        f"JOIN products p ON p.id = t.product_id WHERE {window} AND amount >= 100 GROUP BY 1 ORDER BY 1",
    )
    assert query(warehouse_db, "SELECT category, n, total, products FROM lang.per_category ORDER BY 1") == expected
    latest = query(
        sales_db,
        f"SELECT DISTINCT ON (product_id) product_id::text, created_at::date FROM raw_transactions "
        f"WHERE {window} ORDER BY product_id, created_at::date DESC, id DESC",
    )
    both = query(warehouse_db, "SELECT origin, product, last_sale FROM lang.both ORDER BY product")
    assert sorted((p, d) for o, p, d in both) == sorted(latest + latest)
    assert {o for o, _, _ in both} == {"typed"}
    assert isinstance(expected[0][2], Decimal)


class Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    requests: list[tuple[str, str | None]] = []  # (path, Authorization header)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        Hook.requests.append((self.path, self.headers.get("Authorization")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_failed_run_posts_its_summary_to_the_webhook(tenant):
    server = HTTPServer(("127.0.0.1", harness.free_port()), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = example("notifying", "lang.notifying")
        body["definition"]["transformations"][0]["sql"] = "SELECT 1 / 0 AS boom FROM raw_transactions"
        del body["definition"]["quality_checks"]
        body["definition"]["sinks"]["daily_transactions"]["mode"] = "append"
        body["definition"]["orchestration"]["on_failure"] = {"webhook": f"http://127.0.0.1:{server.server_port}/x"}
        p = create_active(tenant, body)
        done = run_to_end(tenant, p["pipelineId"])
        assert done["status"] == "FAILED"
        got = harness.wait_for(lambda: list(Hook.received), bool, timeout=60)
        assert got and got[0]["event"] == "pipeline_run_failed" and got[0]["dag_id"] == p["dagId"], got
        assert got[0]["run_id"] == done["executionId"]
        assert "password" not in json.dumps(got)
    finally:
        server.shutdown()


def test_a_failed_run_notifies_through_an_http_connection(tenant, running):
    """The webhook's URL and token live in an http connection: not in the definition, nor the DAG file."""
    token = "hook-" + uuid.uuid4().hex
    server = HTTPServer(("127.0.0.1", harness.free_port()), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.received, Hook.requests = [], []
    try:
        conn = {
            "name": "alerts",
            "type": "http",
            "url": f"http://127.0.0.1:{server.server_port}/hooks",
            "credentials": {"username": "ops", "password": token},
        }
        created = tenant.post("/v1/pipelines/connections", json=conn)
        assert created.status_code == 201, created.text
        body = example("notifying-conn", "lang.notifying_conn")
        body["definition"]["transformations"][0]["sql"] = "SELECT 1 / 0 AS boom FROM raw_transactions"
        del body["definition"]["quality_checks"]
        body["definition"]["orchestration"]["on_failure"] = {"connection": "sales-database"}
        r = tenant.post("/v1/pipelines", json=body)  # a postgres connection cannot take notifications
        assert r.status_code == 400, r.text
        assert r.json()["error"]["details"][0]["path"] == "definition.orchestration.on_failure.connection"
        body["definition"]["orchestration"]["on_failure"] = {"connection": "alerts", "path": "/failed"}
        p = create_active(tenant, body)
        dag_file = next(Path(running.settings.dags_dir).glob(f"pipeline_*{p['name']}.py")).read_text()
        assert token not in dag_file and str(server.server_port) not in dag_file
        done = run_to_end(tenant, p["pipelineId"])
        assert done["status"] == "FAILED"
        got = harness.wait_for(lambda: list(Hook.received), bool, timeout=60)
        assert got[0]["event"] == "pipeline_run_failed" and got[0]["run_id"] == done["executionId"], got
        path, auth = Hook.requests[0]
        assert path == "/hooks/failed" and auth == "Basic " + base64.b64encode(f"ops:{token}".encode()).decode()
        r = tenant.delete(f"/v1/pipelines/connections/{created.json()['connectionId']}")  # in use: 409
        assert r.status_code == 409 and p["name"] in r.json()["error"]["details"]["pipelines"], r.text
    finally:
        server.shutdown()


def test_validate_and_schema_endpoints(tenant):
    schema = tenant.get("/v1/pipelines/schema")
    assert schema.status_code == 200 and "Deduplicate" in schema.json()["$defs"]
    assert tenant.post("/v1/pipelines/validate", json=definition_language("x")).json() == {"valid": True}
    bad = definition_language("x")
    bad["definition"]["transformations"][2]["input"] = "nope"
    bad["definition"]["sinks"]["both"]["connection"] = "elsewhere"
    r = tenant.post("/v1/pipelines/validate", json=bad)
    assert r.status_code == 400
    assert [d["path"] for d in r.json()["error"]["details"]] == ["definition.transformations[2].input"]
    r = tenant.post("/v1/pipelines", json=bad)
    assert r.status_code == 400
