"""Lineage read side through a real Airflow with OpenLineage on: before any run a pipeline's lineage is named
from its definition; after the example runs, from the events its tasks reported (source tables, sink table,
their namespace, the transformations, lastExecuted), with column lineage back to the source columns; the
impact of a dataset follows the readers; another tenant sees none of it."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.conftest import create_active, example, run_to_end

pytestmark = pytest.mark.e2e

NAMESPACE = "postgres://127.0.0.1:5432"  # both example connections (tests/e2e/fixtures.py)


def _lineage(api: httpx.Client, pipeline_id: str) -> dict[str, Any]:
    resp = api.get(f"/v1/pipelines/{pipeline_id}/lineage")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _impact(api: httpx.Client, fqn: str) -> dict[str, Any]:
    resp = api.get("/v1/lineage/datasets", params={"fqn": fqn})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _summary(api: httpx.Client, table: str, target: str) -> dict[str, Any]:
    """A pipeline of the warehouse: `table` aggregated into `target`."""
    body = example("lineage-summary", target)
    d = body["definition"]
    d["sources"] = {"daily": {"type": "postgres", "connection": "warehouse", "table": table}}
    d["transformations"] = [
        {
            "name": "per_category",
            "type": "aggregate",
            "input": "daily",
            "group_by": ["category"],
            "aggregates": {"total": {"function": "sum", "column": "amount"}},
        }
    ]
    d["sinks"]["daily_transactions"].update(input="per_category", keys=["category"])
    d["quality_checks"] = []
    resp = api.post("/v1/pipelines", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def test_lineage_of_the_example_before_and_after_its_run(running, tenant, sales_db, warehouse_db):
    schema = f"lineage_{uuid.uuid4().hex[:6]}"
    pipeline = create_active(tenant, example("lineage-read", f"{schema}.daily_transactions"))
    pid = pipeline["pipelineId"]
    raw, products = f"{sales_db}.public.raw_transactions", f"{sales_db}.public.products"
    sink = f"{warehouse_db}.{schema}.daily_transactions"

    before = _lineage(tenant, pid)
    assert before["origin"] == "definition" and before["lastExecuted"] is None
    assert [(s["fqn"], s["namespace"]) for s in before["sources"]] == [(raw, NAMESPACE), (products, NAMESPACE)]
    assert [(s["fqn"], s["namespace"]) for s in before["sinks"]] == [(sink, NAMESPACE)]

    done = run_to_end(tenant, pid)
    assert done["status"] == "COMPLETED", done
    # The sink task's COMPLETE event arrives from the task process shortly after the task ends.
    after = harness.wait_for(lambda: _lineage(tenant, pid), lambda b: b["origin"] == "events", timeout=60)
    assert after["origin"] == "events", after
    assert after["originExecutionId"] == done["executionId"]
    assert after["sources"] == [
        {"type": "TABLE", "fqn": raw, "namespace": NAMESPACE, "step": "raw_transactions"},
        {"type": "TABLE", "fqn": products, "namespace": NAMESPACE, "step": "products"},
    ]
    assert after["sinks"] == [{"type": "TABLE", "fqn": sink, "namespace": NAMESPACE, "step": "daily_transactions"}]
    assert after["differences"] == []
    assert after["transformations"] == [
        {"name": "clean_transactions", "type": "sql_transform"},
        {"name": "enrich_with_products", "type": "lookup_join"},
    ]
    assert after["lastExecution"]["executionId"] == done["executionId"]
    assert after["lastExecuted"] is not None and after["lastExecuted"] == after["lastExecution"]["startedAt"]
    assert after["lastExecution"]["finishedAt"] is not None

    columns = {(c["sink"], c["column"]): c for c in after["columns"]}
    amount = columns[("daily_transactions", "amount")]
    assert amount["known"] is True
    assert amount["sources"] == [{"step": "raw_transactions", "fqn": raw, "namespace": NAMESPACE, "column": "amount"}]
    assert amount["transformations"] == ["clean_transactions", "enrich_with_products"]
    assert [(s["fqn"], s["column"]) for s in columns[("daily_transactions", "transaction_id")]["sources"]] == [
        (raw, "id")
    ]
    assert [(s["fqn"], s["column"]) for s in columns[("daily_transactions", "category")]["sources"]] == [
        (products, "category")
    ]

    # A second pipeline reads the example's sink: changing raw_transactions reaches it, two levels down.
    downstream = _summary(tenant, f"{schema}.daily_transactions", f"{schema}.daily_summary")
    impact = _impact(tenant, raw)
    assert [r["pipelineId"] for r in impact["readers"]] == [pid]
    assert [(p["pipelineId"], p["depth"]) for p in impact["downstream"]["pipelines"]] == [
        (pid, 1),
        (downstream["pipelineId"], 2),
    ]
    assert [(d["fqn"], d["depth"]) for d in impact["downstream"]["datasets"]] == [
        (sink, 1),
        (f"{warehouse_db}.{schema}.daily_summary", 2),
    ]
    assert [w["pipelineId"] for w in _impact(tenant, sink)["writers"]] == [pid]

    other = running.client(tenant="t" + uuid.uuid4().hex[:10])
    resp = other.get(f"/v1/pipelines/{pid}/lineage")
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"]["code"] == "not_found"
    for fqn in (raw, sink):
        empty = _impact(other, fqn)
        assert empty["datasets"] == [] and empty["readers"] == [] and empty["writers"] == [], empty
        assert empty["downstream"] == {"pipelines": [], "datasets": []}
