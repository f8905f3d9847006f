"""The definition language beyond the skeleton: new transformation types (their SQL), cross-reference
validation (SQL table references, depends_on, cycles, expectations, python allow-list), orchestration."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from dag_factory import build_dag
from dag_factory.builder.sql import transformation_sql
from dag_factory.exceptions import DefinitionError
from dag_factory.spec import PipelineDefinition, sql_table_refs, validate_definition
from dag_factory.spec.validate import find_cycle

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((REPO / "examples" / "daily-sales-etl.json").read_text())
CONNS = {"sales-database": "acme.sales-database", "warehouse": "acme.warehouse"}


def definition(*transformations: dict, **orchestration) -> dict:
    d = copy.deepcopy(EXAMPLE["definition"])
    d["transformations"] += list(transformations)
    d["orchestration"].update(orchestration)
    return d


def errors(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as info:
        validate_definition(data)
    return [(e["path"], e["message"]) for e in info.value.errors]


def sql_of(step: dict) -> str:
    d = validate_definition(definition(step))
    return transformation_sql(d.transformations[-1])


# -- generated SQL ------------------------------------------------------------------------------------
def test_filter_sql_keeps_the_condition_one_predicate():
    step = {"name": "big", "type": "filter", "input": "products", "condition": "a > 1 OR b = '{{ params.start_date }}'"}
    assert sql_of(step) == "SELECT * FROM \"products\" WHERE (a > 1 OR b = '{{ params.start_date }}')"


def test_aggregate_sql():
    step = {
        "name": "per_category",
        "type": "aggregate",
        "input": "enrich_with_products",
        "group_by": ["category", "sale_date"],
        "aggregates": {
            "total": {"function": "sum", "column": "amount"},
            "n": {"function": "count"},
            "n_amount": {"function": "count", "column": "amount"},
            "products": {"function": "count_distinct", "column": "product_id"},
            "average": {"function": "avg", "column": "amount"},
            "lowest": {"function": "min", "column": "amount"},
            "highest": {"function": "max", "column": "amount"},
        },
    }
    assert sql_of(step) == (
        'SELECT "category", "sale_date", sum("amount") AS "total", count(*) AS "n", count("amount") AS "n_amount", '
        'count(DISTINCT "product_id") AS "products", avg("amount") AS "average", min("amount") AS "lowest", '
        'max("amount") AS "highest" FROM "enrich_with_products" GROUP BY "category", "sale_date"'
    )
    no_groups = {"name": "totals", "type": "aggregate", "input": "products", "aggregates": {"n": {"function": "count"}}}
    assert sql_of(no_groups) == 'SELECT count(*) AS "n" FROM "products"'


def test_deduplicate_sql_keeps_the_first_row_per_key():
    step = {
        "name": "latest",
        "type": "deduplicate",
        "input": "clean_transactions",
        "keys": ["product_id"],
        "order_by": ["sale_date", "transaction_id"],
    }
    assert sql_of(step) == (
        'SELECT DISTINCT ON ("product_id") * FROM "clean_transactions" '
        'ORDER BY "product_id", "sale_date" DESC, "transaction_id" DESC'
    )
    step.update(direction="asc", order_by=[])
    assert sql_of(step) == 'SELECT DISTINCT ON ("product_id") * FROM "clean_transactions" ORDER BY "product_id"'


def test_select_columns_renames_and_casts():
    step = {
        "name": "typed",
        "type": "select_columns",
        "input": "clean_transactions",
        "columns": {
            "id": {"from": "transaction_id"},
            "amount": {"cast": "numeric(12, 2)"},
            "day": {"from": "sale_date", "cast": "timestamp with time zone"},
        },
    }
    assert sql_of(step) == (
        'SELECT "transaction_id" AS "id", CAST("amount" AS numeric(12, 2)) AS "amount", '
        'CAST("sale_date" AS timestamp with time zone) AS "day" FROM "clean_transactions"'
    )


# -- validation errors ----------------------------------------------------------------------------------
def test_new_types_reject_unknown_keys_and_bad_values_with_paths():
    bad = [
        {"name": "f", "type": "filter", "input": "products", "condition": "x", "colour": 1},
        {"name": "a", "type": "aggregate", "input": "products", "aggregates": {"t": {"function": "sum"}}},
        {"name": "a2", "type": "aggregate", "input": "products", "aggregates": {"t": {"function": "median"}}},
        {"name": "d", "type": "deduplicate", "input": "products", "keys": [], "direction": "up"},
        {"name": "s", "type": "select_columns", "input": "products", "columns": {"x": {"cast": "int; DROP TABLE t"}}},
        {"name": "p", "type": "python", "callable": "os.system('x')"},
    ]
    got = [p for p, _ in errors(definition(*bad))]
    assert got == [
        "transformations[2].colour",
        "transformations[3].aggregates.t",
        "transformations[4].aggregates.t.function",
        "transformations[5].keys",
        "transformations[5].direction",
        "transformations[6].columns.x.cast",
        "transformations[7].callable",
    ]


def test_sql_must_only_read_its_inputs_or_schema_qualified_tables():
    d = definition()
    d["transformations"][0]["sql"] = (
        "WITH recent AS (SELECT * FROM raw_transactions WHERE created_at > '{{ params.start_date }}') "
        "SELECT r.*, g FROM recent r JOIN public.calendar c ON true JOIN products p ON true "
        "JOIN typo_table t ON true, generate_series(1, 2) g"
    )
    got = errors(d)
    assert [p for p, _ in got] == ["transformations[0].sql", "transformations[0].sql"]
    assert "'products' which is not in its inputs" in got[0][1] or "'products' which is not in its inputs" in got[1][1]
    assert any("unknown table 'typo_table'" in m and "public.typo_table" in m for _, m in got)


def test_filter_conditions_are_checked_for_subqueries_too():
    step = {"name": "f", "type": "filter", "input": "products", "condition": "id IN (SELECT id FROM nowhere)"}
    assert [p for p, _ in errors(definition(step))] == ["transformations[2].condition"]


def test_sql_table_refs():
    assert sql_table_refs('SELECT * FROM a JOIN s.b ON true JOIN "C" ON true') == [(None, "C"), (None, "a"), ("s", "b")]
    assert sql_table_refs("SELEC nothing") is None


def test_depends_on_must_name_steps_and_not_cycle():
    d = definition()
    d["transformations"][0]["depends_on"] = ["nope"]
    d["sinks"]["daily_transactions"]["depends_on"] = ["daily_transactions"]
    assert [p for p, _ in errors(d)] == [
        "transformations[0].depends_on[0]",
        "sinks.daily_transactions.depends_on[0]",
    ]
    d = definition()
    d["sources"]["products"]["depends_on"] = ["daily_transactions"]  # the sink reads a join of products
    (path, message), *_ = errors(d)
    assert path.endswith(".depends_on") and message.startswith("dependency cycle:") and "daily_transactions" in message


def test_find_cycle():
    assert find_cycle({1: [2], 2: [3], 3: []}) is None
    assert find_cycle({1: [2], 2: [3], 3: [1]}) == [1, 2, 3, 1]


def test_unknown_expectation_suggests_close_names():
    d = definition()
    d["quality_checks"][0]["expectation"] = "expect_column_values_to_be_not_null"
    [(path, message)] = errors(d)
    assert path == "quality_checks[0].expectation" and "expect_column_values_to_not_be_null" in message


def test_python_callables_come_from_the_allow_list(monkeypatch):
    step = {"name": "p", "type": "python", "callable": "tests.dag_factory.steps.copy_first", "inputs": ["products"]}
    [(path, message)] = errors(definition(step))
    assert path == "transformations[2].callable" and "PIPELINE_PYTHON_CALLABLES" in message
    monkeypatch.setenv("PIPELINE_PYTHON_CALLABLES", "other.module.*, tests.dag_factory.steps.*")
    validate_definition(definition(step))
    builtin = {"name": "u", "type": "python", "callable": "dag_factory.callables.union_all", "inputs": ["products"]}
    monkeypatch.delenv("PIPELINE_PYTHON_CALLABLES")
    validate_definition(definition(builtin))


def test_orchestration_fields_are_validated():
    d = definition(concurrency=0, priority=5, sla_seconds=-1, on_failure={"webhook": "ftp://x"})
    assert [p for p, _ in errors(d)] == [
        "orchestration.concurrency",
        "orchestration.sla_seconds",
        "orchestration.on_failure.webhook",
    ]


def test_json_schema_is_published():
    schema = PipelineDefinition.model_json_schema()
    kinds = {
        d["properties"]["type"].get("const") for d in schema["$defs"].values() if "type" in d.get("properties", {})
    }
    assert kinds >= {"sql_transform", "lookup_join", "filter", "aggregate", "deduplicate", "select_columns", "python"}


def test_the_spec_imports_neither_airflow_nor_great_expectations():
    code = (
        "import sys, json; from dag_factory.spec import validate_definition; "
        f"validate_definition(json.load(open({str(REPO / 'examples' / 'daily-sales-etl.json')!r}))['definition']); "
        "import service.pipelines.router; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('airflow', 'great_expectations')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# -- orchestration in the DAG ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dag():
    d = definition(
        {"name": "by_product", "type": "aggregate", "input": "enrich_with_products", "group_by": ["product_id"],
         "aggregates": {"n": {"function": "count"}}, "timeout_seconds": 30},
        {"name": "stacked", "type": "python", "callable": "dag_factory.callables.union_all",
         "inputs": ["products"], "depends_on": ["clean_transactions"]},
        concurrency=3, priority=7, sla_seconds=600, on_failure={"webhook": "http://127.0.0.1:9/hook"},
    )  # fmt: skip
    d["sinks"]["daily_transactions"]["depends_on"] = ["stacked"]
    return build_dag(d, dag_id="acme.x", connections=CONNS, description="desc", tags=["t"], owner="alice")


def test_orchestration_reaches_the_dag(dag):
    assert dag.max_active_tasks == 3
    assert dag.get_task("transformations.by_product").priority_weight == 7
    assert dag.get_task("transformations.by_product").execution_timeout == timedelta(seconds=30)
    assert dag.get_task("transformations.clean_transactions").execution_timeout == timedelta(seconds=3600)
    assert dag.deadline is not None
    deadline = dag.deadline[0] if isinstance(dag.deadline, list) else dag.deadline
    assert deadline.interval == timedelta(seconds=600)
    assert dag.on_failure_callback is not None and dag.owner == "alice" and dag.description == "desc"


def test_depends_on_adds_edges(dag):
    assert sorted(dag.get_task("transformations.stacked").upstream_task_ids) == [
        "sources.products",
        "transformations.clean_transactions",
    ]
    assert "transformations.stacked" in dag.get_task("sinks.daily_transactions").upstream_task_ids


def test_every_task_has_a_readable_id_and_a_doc(dag):
    assert all("." in t or t in ("prepare_staging", "cleanup_staging") for t in dag.task_ids)
    assert all(dag.get_task(t).doc_md for t in dag.task_ids)
    assert "union_all" in dag.get_task("transformations.stacked").doc_md


def test_a_source_view_must_be_on_the_staging_connection():
    d = definition()
    d["sources"]["products"]["materialize"] = "view"
    assert [p for p, _ in errors(d)] == ["sources.products.materialize"]
    d["orchestration"]["staging_connection"] = "sales-database"
    validate_definition(d)


def test_a_sink_needs_an_input_that_exists():
    d = definition()
    del d["sinks"]["daily_transactions"]["input"]
    assert errors(d) == [("sinks.daily_transactions.input", "Field required")]
    d["sinks"]["daily_transactions"]["input"] = "nowhere"
    [(path, message)] = errors(d)
    assert path == "sinks.daily_transactions.input" and message.startswith("unknown dataset 'nowhere'")
