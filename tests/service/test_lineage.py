"""The lineage read side: a pipeline's lineage from its definition and from stored OpenLineage events, column
lineage through each transformation type, and the impact of a dataset across a tenant's pipelines."""

from __future__ import annotations

import copy
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dag_factory.spec import validate_definition
from service.executions.models import Execution
from service.lineage.columns import ALL, ColumnLineage, SinkColumn, mark_stars, output_names
from service.lineage.models import LineageDataset, LineageEvent
from tests.service.helpers import Api, Service, example, expect_error

SALES_NS, WAREHOUSE_NS = "postgres://127.0.0.1:5432", "postgres://127.0.0.2:5433"
RAW, PRODUCTS = "sales.public.raw_transactions", "sales.public.products"
DAILY = "dw.analytics.daily_transactions"
EXAMPLE_FILE = Path(__file__).resolve().parents[2] / "examples" / "daily-sales-etl.json"


@pytest.fixture
def tenant(api: Api) -> Api:
    """acme with the example's connections on two distinct hosts and databases."""
    api.create_connection("sales-database", host="127.0.0.1", port=5432, database="sales")
    api.create_connection("warehouse", host="127.0.0.2", port=5433, database="dw")
    return api


def _lineage(api: Api, pipeline_id: str) -> dict[str, Any]:
    resp = api.get(f"/v1/pipelines/{pipeline_id}/lineage")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _columns(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["column"]: c for c in body["columns"]}


def test_lineage_before_any_run_comes_from_the_definition(tenant: Api) -> None:
    pipeline = tenant.create_pipeline(example())
    body = _lineage(tenant, pipeline["pipelineId"])
    assert body["pipelineId"] == pipeline["pipelineId"]
    assert body["origin"] == "definition" and body["originExecutionId"] is None and body["differences"] == []
    assert body["sources"] == [
        {"type": "TABLE", "fqn": RAW, "namespace": SALES_NS, "step": "raw_transactions"},
        {"type": "TABLE", "fqn": PRODUCTS, "namespace": SALES_NS, "step": "products"},
    ]
    assert body["sinks"] == [{"type": "TABLE", "fqn": DAILY, "namespace": WAREHOUSE_NS, "step": "daily_transactions"}]
    assert body["transformations"] == [
        {"name": "clean_transactions", "type": "sql_transform"},
        {"name": "enrich_with_products", "type": "lookup_join"},
    ]
    assert body["lastExecuted"] is None and body["lastExecution"] is None
    columns = _columns(body)
    assert set(columns) == {"transaction_id", "product_id", "amount", "sale_date", "category", "product_name"}
    amount = columns["amount"]
    assert amount["sink"] == "daily_transactions" and amount["known"] is True
    assert amount["sources"] == [{"step": "raw_transactions", "fqn": RAW, "namespace": SALES_NS, "column": "amount"}]
    assert amount["transformations"] == ["clean_transactions", "enrich_with_products"]
    assert [(s["fqn"], s["column"]) for s in columns["transaction_id"]["sources"]] == [(RAW, "id")]
    assert [(s["fqn"], s["column"]) for s in columns["sale_date"]["sources"]] == [(RAW, "created_at")]
    assert [(s["fqn"], s["column"]) for s in columns["category"]["sources"]] == [(PRODUCTS, "category")]
    assert columns["category"]["transformations"] == ["enrich_with_products"]


def test_a_query_source_names_the_tables_its_query_reads(tenant: Api) -> None:
    body = example()
    body["definition"]["sources"] = {
        "raw_transactions": {
            "type": "sql",
            "connection": "sales-database",
            "query": "SELECT id, amount, product_id, created_at FROM raw_transactions WHERE amount > 0",
        },
        "products": {
            "type": "sql",
            "connection": "sales-database",
            "query": "SELECT p.id, p.name AS product_name, c.label AS category "
            "FROM catalog.products p JOIN catalog.categories c ON c.id = p.category_id",
        },
    }
    lineage = _lineage(tenant, tenant.create_pipeline(body)["pipelineId"])
    assert sorted((s["step"], s["fqn"]) for s in lineage["sources"]) == [
        ("products", "sales.catalog.categories"),
        ("products", "sales.catalog.products"),
        ("raw_transactions", RAW),
    ]
    columns = _columns(lineage)
    assert columns["amount"]["sources"] == [
        {"step": "raw_transactions", "fqn": RAW, "namespace": SALES_NS, "column": "amount"}
    ]
    assert [(s["step"], s["fqn"], s["column"]) for s in columns["category"]["sources"]] == [
        ("products", "sales.catalog.categories", "label")
    ]
    assert [(s["fqn"], s["column"]) for s in columns["product_name"]["sources"]] == [("sales.catalog.products", "name")]
    assert columns["category"]["transformations"] == ["enrich_with_products"]  # a source is no transformation


def test_another_tenants_pipeline_has_no_lineage(svc: Service, tenant: Api) -> None:
    pipeline = tenant.create_pipeline(example())
    other = svc.api("globex")
    expect_error(other.get(f"/v1/pipelines/{pipeline['pipelineId']}/lineage"), 404, "not_found")
    expect_error(tenant.get("/v1/pipelines/pl-0000000000/lineage"), 404, "not_found")


def _event(
    svc: Service, pipeline_id: str, execution_id: str, task_id: str, datasets: list[tuple[str, str, str]]
) -> None:
    """One stored COMPLETE event of a task with its (direction, namespace, name) datasets, as the receiver
    stores them."""
    with svc.app.state.sessions.begin() as session:
        event = LineageEvent(
            dedup_key=uuid.uuid4().hex,
            tenant_id="acme",
            pipeline_id=pipeline_id,
            execution_id=execution_id,
            ol_run_id=str(uuid.uuid4()),
            event_type="COMPLETE",
            event_time=datetime.now(UTC),
            job_namespace="default",
            job_name=f"acme.daily-sales-etl.{task_id}",
            task_id=task_id,
            payload="{}",
        )
        session.add(event)
        session.flush()
        for direction, namespace, name in datasets:
            session.add(
                LineageDataset(
                    event_id=event.id,
                    tenant_id="acme",
                    pipeline_id=pipeline_id,
                    execution_id=execution_id,
                    task_id=task_id,
                    direction=direction,
                    namespace=namespace,
                    name=name,
                )
            )


def _execution(svc: Service, pipeline: dict[str, Any], execution_id: str, started: datetime) -> None:
    with svc.app.state.sessions.begin() as session:
        session.add(
            Execution(
                id=execution_id,
                tenant_id="acme",
                pipeline_id=pipeline["pipelineId"],
                pipeline_revision=1,
                dag_id=pipeline["dagId"],
                status="COMPLETED",
                submitted=True,
                submitted_at=started,
                started_at=started,
                finished_at=started + timedelta(seconds=4),
            )
        )


def _run_events(svc: Service, pipeline_id: str, execution_id: str, sink_ns: str = WAREHOUSE_NS) -> None:
    stg = "dw.stg_0123456789abcdef0123.{}"
    _event(svc, pipeline_id, execution_id, "prepare_staging", [])
    _event(
        svc,
        pipeline_id,
        execution_id,
        "sources.raw_transactions.part_0",
        [("input", SALES_NS, RAW), ("output", WAREHOUSE_NS, stg.format("raw_transactions_p0"))],
    )
    _event(
        svc,
        pipeline_id,
        execution_id,
        "sources.raw_transactions",
        [
            ("input", WAREHOUSE_NS, stg.format("raw_transactions_p0")),
            ("output", WAREHOUSE_NS, stg.format("raw_transactions")),
        ],
    )
    _event(
        svc,
        pipeline_id,
        execution_id,
        "sources.products",
        [("input", SALES_NS, PRODUCTS), ("output", WAREHOUSE_NS, stg.format("products"))],
    )
    _event(
        svc,
        pipeline_id,
        execution_id,
        "transformations.clean_transactions",
        [
            ("input", WAREHOUSE_NS, stg.format("raw_transactions")),
            ("output", WAREHOUSE_NS, stg.format("clean_transactions")),
        ],
    )
    _event(
        svc,
        pipeline_id,
        execution_id,
        "sinks.daily_transactions",
        [("input", WAREHOUSE_NS, stg.format("enrich_with_products")), ("output", sink_ns, DAILY)],
    )


def test_lineage_after_a_run_comes_from_its_events(svc: Service, tenant: Api) -> None:
    pipeline = tenant.create_pipeline(example())
    pid = pipeline["pipelineId"]
    started = datetime(2026, 2, 12, 6, 0, tzinfo=UTC)
    _execution(svc, pipeline, "manual__run1", started)
    _run_events(svc, pid, "manual__run1")
    body = _lineage(tenant, pid)
    assert body["origin"] == "events" and body["originExecutionId"] == "manual__run1"
    # Staging tables (what a source task writes, a sink task reads) are not lineage; partitions name the table once.
    assert [(s["step"], s["fqn"], s["namespace"], s["type"]) for s in body["sources"]] == [
        ("raw_transactions", RAW, SALES_NS, "TABLE"),
        ("products", PRODUCTS, SALES_NS, "TABLE"),
    ]
    assert [(s["fqn"], s["namespace"]) for s in body["sinks"]] == [(DAILY, WAREHOUSE_NS)]
    assert body["differences"] == []
    assert datetime.fromisoformat(body["lastExecuted"]) == started
    assert body["lastExecution"]["executionId"] == "manual__run1"
    assert body["lastExecution"]["status"] == "COMPLETED"
    assert datetime.fromisoformat(body["lastExecution"]["finishedAt"]) == started + timedelta(seconds=4)
    assert _columns(body)["amount"]["sources"][0]["namespace"] == SALES_NS


def test_events_win_over_a_changed_definition_and_say_so(svc: Service, tenant: Api) -> None:
    pipeline = tenant.create_pipeline(example())
    pid = pipeline["pipelineId"]
    _execution(svc, pipeline, "manual__old", datetime(2026, 2, 11, tzinfo=UTC))
    _run_events(svc, pid, "manual__old")
    # The last run wrote to another warehouse host than the connection names now.
    moved = "postgres://10.9.9.9:5432"
    _execution(svc, pipeline, "manual__new", datetime(2026, 2, 12, tzinfo=UTC))
    _run_events(svc, pid, "manual__new", sink_ns=moved)
    # A run that never reached its sinks does not count.
    _execution(svc, pipeline, "manual__failed", datetime(2026, 2, 13, tzinfo=UTC))
    _event(svc, pid, "manual__failed", "sources.products", [("input", "postgres://elsewhere:5432", PRODUCTS)])
    body = _lineage(tenant, pid)
    assert body["originExecutionId"] == "manual__new"
    assert body["sinks"] == [{"type": "TABLE", "fqn": DAILY, "namespace": moved, "step": "daily_transactions"}]
    assert body["differences"] == [
        {
            "role": "sink",
            "step": "daily_transactions",
            "definition": {"type": "TABLE", "fqn": DAILY, "namespace": WAREHOUSE_NS},
            "events": {"type": "TABLE", "fqn": DAILY, "namespace": moved},
        }
    ]
    assert body["lastExecution"]["executionId"] == "manual__failed"


def test_a_run_that_reported_no_sink_keeps_the_definitions_sink(svc: Service, tenant: Api) -> None:
    """A sql sink reports no table statistics (no output dataset): the sink stays the definition's."""
    pipeline = tenant.create_pipeline(example())
    pid = pipeline["pipelineId"]
    _execution(svc, pipeline, "manual__only", datetime(2026, 2, 12, tzinfo=UTC))
    _event(svc, pid, "manual__only", "sources.products", [("input", "postgres://127.0.0.9:5432", PRODUCTS)])
    body = _lineage(tenant, pid)
    assert body["origin"] == "events" and body["originExecutionId"] == "manual__only"
    assert [(s["step"], s["namespace"]) for s in body["sources"]] == [
        ("raw_transactions", SALES_NS),
        ("products", "postgres://127.0.0.9:5432"),
    ]
    assert body["sinks"] == [{"type": "TABLE", "fqn": DAILY, "namespace": WAREHOUSE_NS, "step": "daily_transactions"}]
    assert [(d["role"], d["step"]) for d in body["differences"]] == [("source", "products")]


def _definition(transformations: list[dict[str, Any]], sink_input: str) -> Any:
    d = copy.deepcopy(example()["definition"])
    d["transformations"] = transformations
    d["sinks"]["daily_transactions"]["input"] = sink_input
    d["quality_checks"] = []
    return validate_definition(d)


def _traced(columns: list[SinkColumn]) -> dict[str, tuple[set[tuple[str, str]], list[str], str | None]]:
    return {
        c.column: ({(r.dataset, r.column) for r in c.trace.sources}, list(c.trace.transformations), c.trace.unknown_at)
        for c in columns
    }


def test_columns_through_filter_deduplicate_select_and_aggregate() -> None:
    definition = _definition(
        [
            {
                "name": "big",
                "type": "filter",
                "input": "raw_transactions",
                "condition": "amount > {{ params.start_date }}",
            },
            {
                "name": "renamed",
                "type": "select_columns",
                "input": "big",
                "columns": {"tx": {"from": "id"}, "amount": {"cast": "numeric(10,2)"}, "product_id": {}},
            },
            {"name": "latest", "type": "deduplicate", "input": "renamed", "keys": ["tx"], "order_by": ["amount"]},
            {
                "name": "per_product",
                "type": "aggregate",
                "input": "latest",
                "group_by": ["product_id"],
                "aggregates": {"total": {"function": "sum", "column": "amount"}, "n": {"function": "count"}},
            },
        ],
        "per_product",
    )
    path = ["big", "renamed", "latest", "per_product"]
    assert _traced(ColumnLineage(definition).sink_columns()) == {
        "product_id": ({("raw_transactions", "product_id")}, path, None),
        "total": ({("raw_transactions", "amount")}, path, None),
        "n": (set(), ["per_product"], None),  # count(*) reads no column
    }
    # Without the aggregate: the renamed columns pass the deduplicate's `*` by name.
    definition = _definition(definition.model_dump(by_alias=True)["transformations"][:3], "latest")
    assert _traced(ColumnLineage(definition).sink_columns())["tx"] == ({("raw_transactions", "id")}, path[:3], None)


def test_columns_through_mask_join_and_a_python_step() -> None:
    definition = _definition(
        [
            {
                "name": "joined",
                "type": "sql_transform",
                "inputs": ["raw_transactions", "products"],
                "sql": "SELECT t.*, p.category AS product_category, upper(p.product_name) || t.note AS label "
                "FROM raw_transactions t JOIN products p ON t.product_id = p.id",
            },
            {
                "name": "masked",
                "type": "mask",
                "input": "joined",
                "columns": {"label": "hash", "product_category": "null", "absent": "redact"},
            },
            {"name": "py", "type": "python", "callable": "dag_factory.callables.union_all", "inputs": ["masked"]},
        ],
        "masked",
    )
    traced = _traced(ColumnLineage(definition).sink_columns())
    assert traced["label"] == ({("products", "product_name"), ("raw_transactions", "note")}, ["joined", "masked"], None)
    assert traced["product_category"] == (set(), ["masked"], None)  # masked to NULL: from no column
    assert "absent" not in traced  # a mask adds no column
    # raw_transactions' own columns are not known before a run: they pass through `t.*` by name.
    assert traced[ALL] == ({("raw_transactions", ALL)}, ["joined", "masked"], None)
    # Behind a python step nothing is known, and that is said.
    definition = _definition(definition.model_dump(by_alias=True)["transformations"], "py")
    assert _traced(ColumnLineage(definition).sink_columns()) == {ALL: (set(), ["py"], "py")}


def test_a_sink_fed_by_a_source_passes_every_column() -> None:
    definition = _definition([], "raw_transactions")
    assert _traced(ColumnLineage(definition).sink_columns()) == {ALL: ({("raw_transactions", ALL)}, [], None)}


def test_stars_are_told_from_multiplication_and_count() -> None:
    marked, qualified = mark_stars("SELECT count(*), a * 2, t.*, '*' AS s, \"*\" FROM x -- *\n")
    assert marked == "SELECT count(*), a * 2, t.__star_0__, '*' AS s, \"*\" FROM x -- *\n"
    assert qualified == [True]
    assert mark_stars("SELECT DISTINCT ON (k) * FROM x") == ("SELECT DISTINCT ON (k) __star_0__ FROM x", [False])
    assert mark_stars("SELECT * FROM (SELECT * FROM y) s")[1] == [False]  # only the outer select list


def test_outputs_computed_from_no_column_are_named() -> None:
    sql = (
        "WITH w AS (SELECT z FROM q) SELECT DISTINCT ON (k) k, t.amount, count(*)::bigint AS n, sum(a) total, "
        "'x' \"Label\", a + b, x IS NULL, * FROM w WHERE a > 0"
    )
    assert output_names(sql) == ["k", "amount", "n", "total", "Label"]


def _pipeline(api: Api, name: str, source_table: str, sink_table: str) -> dict[str, Any]:
    """A pipeline reading one warehouse table and writing another."""
    body = example(name)
    d = body["definition"]
    d["sources"] = {"src": {"type": "postgres", "connection": "warehouse", "table": source_table}}
    d["transformations"] = []
    d["sinks"] = {"out": {"type": "postgres", "connection": "warehouse", "table": sink_table, "input": "src"}}
    d["quality_checks"] = []
    return api.create_pipeline(body)


def _impact(api: Api, fqn: str, **params: Any) -> dict[str, Any]:
    resp = api.get("/v1/lineage/datasets", params={"fqn": fqn, **params})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_impact_follows_readers_transitively_and_stops_on_cycles(svc: Service, tenant: Api) -> None:
    etl = tenant.create_pipeline(example())
    summary = _pipeline(tenant, "summary", "analytics.daily_transactions", "analytics.summary")
    back = _pipeline(tenant, "feedback", "analytics.summary", "analytics.daily_transactions")  # a cycle
    body = _impact(tenant, RAW)
    assert body["datasets"] == [{"type": "TABLE", "fqn": RAW, "namespace": SALES_NS}]
    assert body["readers"] == [{"pipelineId": etl["pipelineId"], "name": "daily-sales-etl"}]
    assert body["writers"] == []
    assert [(p["name"], p["depth"], p["reads"]) for p in body["downstream"]["pipelines"]] == [
        ("daily-sales-etl", 1, [RAW]),
        ("summary", 2, [DAILY]),
        ("feedback", 3, ["dw.analytics.summary"]),
    ]
    assert [(d["fqn"], d["depth"], d["writtenBy"]) for d in body["downstream"]["datasets"]] == [
        (DAILY, 1, [etl["pipelineId"]]),
        ("dw.analytics.summary", 2, [summary["pipelineId"]]),
    ]
    assert body["truncated"] is False and body["maxDepth"] == 10

    body = _impact(tenant, DAILY, depth=1)
    assert {p["name"] for p in body["writers"]} == {"daily-sales-etl", "feedback"}
    assert [p["name"] for p in body["readers"]] == ["summary"]
    assert [(p["name"], p["depth"]) for p in body["downstream"]["pipelines"]] == [("summary", 1)]
    assert body["truncated"] is True  # feedback reads what summary writes, one level further
    assert back["pipelineId"] not in [p["pipelineId"] for p in body["downstream"]["pipelines"]]


def test_impact_uses_what_runs_reported(svc: Service, tenant: Api) -> None:
    etl = tenant.create_pipeline(example())
    _execution(svc, etl, "manual__r", datetime(2026, 2, 12, tzinfo=UTC))
    _run_events(svc, etl["pipelineId"], "manual__r", sink_ns="postgres://10.9.9.9:5432")
    body = _impact(tenant, DAILY, namespace="postgres://10.9.9.9:5432")
    assert body["datasets"] == [{"type": "TABLE", "fqn": DAILY, "namespace": "postgres://10.9.9.9:5432"}]
    assert [w["name"] for w in body["writers"]] == ["daily-sales-etl"]


def test_impact_is_tenant_scoped_and_unknown_is_empty(svc: Service, tenant: Api) -> None:
    tenant.create_pipeline(example())
    assert _impact(tenant, RAW)["readers"]
    other = svc.api("globex")
    other.create_connection("sales-database", host="127.0.0.1", port=5432, database="sales")
    empty = _impact(other, RAW)
    assert empty["datasets"] == [] and empty["readers"] == [] and empty["writers"] == []
    assert empty["downstream"] == {"pipelines": [], "datasets": []} and empty["truncated"] is False
    assert _impact(tenant, "nowhere.public.nothing")["datasets"] == []


def test_impact_needs_an_fqn(tenant: Api) -> None:
    expect_error(tenant.get("/v1/lineage/datasets"), 400, "validation_error", path="fqn")
    expect_error(tenant.get("/v1/lineage/datasets", params={"fqn": "  "}), 400, "validation_error", path="fqn")
    expect_error(
        tenant.get("/v1/lineage/datasets", params={"fqn": RAW, "depth": 0}), 400, "validation_error", path="depth"
    )


def test_the_lineage_read_side_loads_no_airflow() -> None:
    """Column lineage reads the builder's SQL from dag_factory.spec.transform_sql, not from the builder."""
    code = (
        "import sys, json; import service.main; from dag_factory.spec import validate_definition; "
        "from service.lineage.columns import ColumnLineage; "
        f"d = validate_definition(json.load(open({str(EXAMPLE_FILE)!r}))['definition']); "
        "assert ColumnLineage(d).sink_columns(); "
        "bad = [m for m in sys.modules if m.split('.')[0] == 'airflow']; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=EXAMPLE_FILE.parents[1])


def test_every_template_has_known_column_lineage() -> None:
    """Across the shipped templates (every transformation type but python): each sink column is traced, and
    only to the template's own sources (a column from no column is a count(*) or a literal)."""
    from service.templates import catalog

    for template_id, template in catalog.shipped().items():
        definition = validate_definition(catalog.render(template)[0])
        columns = ColumnLineage(definition).sink_columns()
        assert {c.sink for c in columns} == set(definition.sinks), template_id
        for c in columns:
            assert c.column != ALL and c.trace.unknown_at is None, (template_id, c)
            assert {r.dataset for r in c.trace.sources} <= set(definition.sources), (template_id, c)
