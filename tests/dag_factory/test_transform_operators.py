"""The generated SQL of every declarative transformation, and python steps, run against real PostgreSQL."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from dag_factory.builder.sql import transformation_sql
from dag_factory.operators import PythonStepOperator, SqlTransformOperator, StageTableOperator
from dag_factory.spec.models import Aggregate, Deduplicate, Filter, SelectColumns
from tests.dag_factory import test_operators as pg
from tests.dag_factory.test_operators import SRC, WH, query, stage, stg, transform

# The throwaway databases and the per-test staging schema of test_operators.
databases, ctx = pg.databases, pg.ctx


def run(ctx: dict, model: type, step: dict) -> list[tuple]:
    t = model.model_validate({"name": "out", **step})
    transform(ctx, "out", transformation_sql(t))
    return query(WH, f"SELECT * FROM {stg(ctx)}.out ORDER BY 1")


def test_filter_aggregate_deduplicate_select(ctx):
    stage(ctx, "t", "raw_transactions", SRC)
    assert run(ctx, Filter, {"type": "filter", "input": "t", "condition": "amount > 40 OR id = 1"})[0][0] == 1
    assert [r[0] for r in query(WH, f"SELECT * FROM {stg(ctx)}.out ORDER BY 1")] == [1, 8, 9, 10]
    aggs = {
        "n": {"function": "count"},
        "n_amount": {"function": "count", "column": "amount"},
        "total": {"function": "sum", "column": "amount"},
        "kinds": {"function": "count_distinct", "column": "kind"},
        "top": {"function": "max", "column": "amount"},
        "low": {"function": "min", "column": "amount"},
        "mean": {"function": "avg", "column": "fee"},
    }
    rows = run(ctx, Aggregate, {"type": "aggregate", "input": "t", "group_by": ["customer_id"], "aggregates": aggs})
    # customer 1: ids 3, 6, 9 and 11 (NULL amount, NULL kind, NULL fee)
    assert rows[0] == (1, 4, 3, 94.50, 2, 47.25, 15.75, 6)
    dedup = {"type": "deduplicate", "input": "t", "keys": ["customer_id"], "order_by": ["id"], "direction": "desc"}
    assert sorted((r[1], r[0]) for r in run(ctx, Deduplicate, dedup)) == [(1, 11), (2, 10), (3, 8)]
    dedup["direction"] = "asc"
    assert [r[0] for r in run(ctx, Deduplicate, dedup)] == [1, 2, 3]
    cols = {"ident": {"from": "id", "cast": "text"}, "amount": {"cast": "integer"}}
    rows = run(ctx, SelectColumns, {"type": "select_columns", "input": "t", "columns": cols})
    assert ("1", 5) in rows and len(rows[0]) == 2


def python_step(ctx: dict, path: str, monkeypatch, **options) -> dict:
    monkeypatch.setenv("PIPELINE_PYTHON_CALLABLES", "tests.dag_factory.steps.*")
    op = PythonStepOperator(
        task_id="py", staging_conn_id=WH, dataset="py_out", callable_path=path, inputs=["t"], options=options
    )
    return op.execute({**ctx, "params": {}})


def test_python_step_builds_the_output_table(ctx, monkeypatch):
    stage(ctx, "t", "raw_transactions", SRC)
    result = python_step(ctx, "tests.dag_factory.steps.copy_first", monkeypatch, note="hi")
    assert (result["dataset"], result["rows"]) == ("py_out", 11) and result["bytes"] > 0
    assert python_step(ctx, "tests.dag_factory.steps.copy_first", monkeypatch)["rows"] == 11  # retry starts clean
    with pytest.raises(AirflowFailException, match="did not create"):
        python_step(ctx, "tests.dag_factory.steps.forgets_the_table", monkeypatch)
    with pytest.raises(AirflowFailException, match="not allow-listed"):
        python_step(ctx, "os.system", monkeypatch)


def test_builtin_union_all(ctx, monkeypatch):
    stage(ctx, "t", "raw_transactions", SRC)
    stage(ctx, "u", "raw_transactions", SRC, where="id < 3")
    op = PythonStepOperator(
        task_id="u",
        staging_conn_id=WH,
        dataset="stacked",
        callable_path="dag_factory.callables.union_all",
        inputs=["t", "u"],
        options={"source_column": "origin"},
    )
    assert op.execute({**ctx, "params": {}})["rows"] == 13
    assert query(WH, f"SELECT origin, count(*) FROM {stg(ctx)}.stacked GROUP BY 1 ORDER BY 1") == [("t", 11), ("u", 2)]


def test_operators_report_lineage_with_row_counts(ctx):
    from dag_factory.operators import LoadTableOperator

    schema = stg(ctx)
    staged = StageTableOperator(
        task_id="s", source_conn_id=SRC, staging_conn_id=WH, table="public.raw_transactions", dataset="t"
    )
    staged.execute(ctx)
    lineage = staged.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("postgres://127.0.0.1:5432", f"{SRC}.public.raw_transactions")
    ]
    [out] = lineage.outputs
    assert out.name == f"{WH}.{schema}.t" and out.outputFacets["outputStatistics"].rowCount == 11
    size = query(WH, f"SELECT pg_total_relation_size('{schema}.t')")[0][0]
    assert out.outputFacets["outputStatistics"].size == size > 0
    assert staged.execute(ctx)["bytes"] == size

    sql_op = SqlTransformOperator(
        task_id="x",
        staging_conn_id=WH,
        dataset="j",
        sql="SELECT t.*, c.name FROM t JOIN public.customers c ON c.id = t.customer_id",
    )
    sql_op.execute(ctx)
    lineage = sql_op.get_openlineage_facets_on_complete(None)
    assert sorted(d.name for d in lineage.inputs) == [f"{WH}.public.customers", f"{WH}.{schema}.t"]
    assert lineage.outputs[0].outputFacets["outputStatistics"].rowCount == 11

    load = LoadTableOperator(task_id="l", staging_conn_id=WH, sink_conn_id=WH, dataset="t", table="lin.out")
    load.execute(ctx)
    lineage = load.get_openlineage_facets_on_complete(None)
    assert [d.name for d in lineage.inputs] == [f"{WH}.{schema}.t"]
    assert [(d.name, d.outputFacets["outputStatistics"].rowCount) for d in lineage.outputs] == [(f"{WH}.lin.out", 11)]
    assert lineage.outputs[0].outputFacets["outputStatistics"].size == size  # the dataset loaded

    view = SqlTransformOperator(task_id="v", staging_conn_id=WH, dataset="v", sql="SELECT * FROM t", materialize="view")
    assert view.execute(ctx)["bytes"] is None  # a view has no size of its own


def test_datasets_can_be_views_and_retries_switch_between_kinds(ctx):
    schema = stg(ctx)
    view = StageTableOperator(
        task_id="v", source_conn_id=WH, staging_conn_id=WH, table="customers", dataset="c", materialize="view"
    )
    assert view.execute(ctx) == {"dataset": "c", "rows": None, "bytes": None}
    assert query(WH, f"SELECT relkind::text FROM pg_class WHERE oid = '{schema}.c'::regclass") == [("v",)]
    op = SqlTransformOperator(task_id="x", staging_conn_id=WH, dataset="fr", sql="SELECT * FROM c WHERE country = 'FR'")
    assert op.execute(ctx)["rows"] == 2
    op.materialize = "view"
    assert op.execute(ctx)["rows"] is None  # a retry after a change of kind replaces the table by a view
    assert query(WH, f"SELECT count(*) FROM {schema}.fr") == [(2,)]
    op.materialize = "table"
    assert op.execute(ctx)["rows"] == 2
