"""Definition -> Airflow DAG: shape, task wiring, params and orchestration settings."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path

import pytest

from dag_factory import build_dag

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((REPO / "examples" / "daily-sales-etl.json").read_text())
CONNS = {"sales-database": "acme.sales-database", "warehouse": "acme.warehouse"}


@pytest.fixture(scope="module")
def dag():
    return build_dag(
        EXAMPLE["definition"],
        dag_id="acme.daily-sales-etl",
        connections=CONNS,
        description="Daily sales",
        tags=["tenant:acme"],
        owner="alice",
    )


def upstream(dag, task_id):
    return sorted(dag.get_task(task_id).upstream_task_ids)


def test_tasks_are_grouped_and_readable(dag):
    assert sorted(dag.task_ids) == [
        "cleanup_staging",
        "prepare_staging",
        "quality.daily_transactions",
        "sinks.daily_transactions",
        "sources.products",
        "sources.raw_transactions",
        "transformations.clean_transactions",
        "transformations.enrich_with_products",
    ]
    assert all(dag.get_task(t).doc_md for t in dag.task_ids)
    assert dag.tags == {"tenant:acme"} or sorted(dag.tags) == ["tenant:acme"]
    assert dag.doc_md == "Daily sales"


def test_edges_follow_the_data(dag):
    assert upstream(dag, "sources.raw_transactions") == ["prepare_staging"]
    assert upstream(dag, "transformations.clean_transactions") == ["sources.raw_transactions"]
    assert upstream(dag, "transformations.enrich_with_products") == [
        "sources.products",
        "transformations.clean_transactions",
    ]
    assert upstream(dag, "sinks.daily_transactions") == ["transformations.enrich_with_products"]
    assert upstream(dag, "quality.daily_transactions") == ["sinks.daily_transactions"]
    assert "quality.daily_transactions" in upstream(dag, "cleanup_staging")


def test_cleanup_is_a_teardown_that_does_not_decide_the_run(dag):
    assert dag.get_task("cleanup_staging").is_teardown
    assert dag.get_task("prepare_staging").is_setup


def test_orchestration_and_params(dag):
    task = dag.get_task("sinks.daily_transactions")
    assert task.retries == 2 and task.retry_delay == timedelta(seconds=60)
    assert task.execution_timeout == timedelta(seconds=3600)
    assert task.owner == "alice"
    assert dag.max_active_runs == 1 and dag.dagrun_timeout == timedelta(seconds=3600)
    assert dag.params["start_date"] == "2026-02-01"
    assert dag.get_task("quality.daily_transactions").retries == 0


def test_connections_sql_and_templates(dag):
    src = dag.get_task("sources.raw_transactions")
    assert (src.source_conn_id, src.staging_conn_id) == ("acme.sales-database", "acme.warehouse")
    assert "{{ params.start_date }}" in src.where and "where" in src.template_fields
    join = dag.get_task("transformations.enrich_with_products")
    assert join.sql == (
        'SELECT i.*, l."category", l."product_name" FROM "clean_transactions" AS i '
        'LEFT JOIN "products" AS l ON i."product_id" = l."id"'
    )
    load = dag.get_task("sinks.daily_transactions")
    assert (load.mode, load.keys, load.table) == ("merge", ["transaction_id"], "analytics.daily_transactions")
    checks = dag.get_task("quality.daily_transactions").checks
    assert [(c["name"], c["severity"]) for c in checks] == [
        ("transaction_id_not_null", "error"),
        ("amount_in_range", "warn"),
    ]


def test_checks_of_staged_datasets_sit_between_the_dataset_and_its_readers():
    d = copy.deepcopy(EXAMPLE["definition"])
    d["sinks"]["export"] = {"type": "file", "input": "clean_transactions", "path": "out"}
    d["quality_checks"] += [
        {"name": "ids", "dataset": "clean_transactions", "expectation": "expect_column_values_to_not_be_null",
         "kwargs": {"column": "id"}},
        {"name": "rows", "dataset": "products", "expectation": "expect_table_row_count_to_be_between",
         "kwargs": {"min_value": 1}, "severity": "warn"},
        {"name": "export_rows", "dataset": "export", "expectation": "expect_table_row_count_to_be_between",
         "kwargs": {"min_value": 1}},
    ]  # fmt: skip
    dag = build_dag(d, dag_id="acme.x", connections=CONNS)
    clean = dag.get_task("quality.clean_transactions")
    assert (clean.conn_id, clean.table, clean.staged, clean.dataset) == (
        "acme.warehouse", "clean_transactions", True, "clean_transactions"
    )  # fmt: skip
    assert upstream(dag, "quality.clean_transactions") == ["transformations.clean_transactions"]
    # an error check gates every reader of the dataset; a warn-only one gates nothing
    assert "quality.clean_transactions" in upstream(dag, "transformations.enrich_with_products")
    assert "quality.clean_transactions" in upstream(dag, "sinks.export")
    assert upstream(dag, "quality.products") == ["sources.products"]
    assert "quality.products" not in upstream(dag, "transformations.enrich_with_products")
    # a file sink: its staged input, checked before it is written
    export = dag.get_task("quality.export")
    assert (export.table, export.staged, export.dataset) == ("clean_transactions", True, "export")
    assert "quality.export" in upstream(dag, "sinks.export")
    assert {"quality.clean_transactions", "quality.products", "quality.export"} <= set(upstream(dag, "cleanup_staging"))


def test_a_sink_on_another_connection_is_cleaned_too():
    d = copy.deepcopy(EXAMPLE["definition"])
    d["orchestration"]["staging_connection"] = "sales-database"
    dag = build_dag(d, dag_id="acme.x", connections=CONNS)
    assert dag.get_task("cleanup_staging").conn_ids == ["acme.sales-database", "acme.warehouse"]
    assert dag.get_task("prepare_staging").conn_ids == ["acme.sales-database"]
