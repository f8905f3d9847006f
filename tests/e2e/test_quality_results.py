"""Quality results through a real Airflow: the great-expectations checks' outcomes (success, observed values,
unexpected counts) are stored per execution and served as `qualityResults`: a failing `warn` check is recorded
while the run completes; a failing `error` check fails the run and is shown with its numbers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import create_active, query, run_to_end

pytestmark = pytest.mark.e2e
TIMEOUT = 240  # two cores shared with other engineers' Airflows
NEGATIVE = "SELECT count(*) FROM raw_transactions WHERE amount < 0"  # the seed's every 25th transaction


def checked(name: str, table: str, *checks: dict[str, Any]) -> dict[str, Any]:
    """Stage the seed's transactions, load them into `table`, check them."""
    source = {"type": "postgres", "connection": "sales-database", "table": "public.raw_transactions"}
    sink = {"type": "postgres", "connection": "warehouse", "table": table, "input": "raw", "mode": "overwrite"}
    return {
        "name": name,
        "version": "1.0.0",
        "definition": {
            "sources": {"raw": source},
            "sinks": {"loaded": sink},
            "quality_checks": list(checks),
            "orchestration": {"retries": 0},
        },
    }


def check(name: str, expectation: str, severity: str, **kwargs: Any) -> dict[str, Any]:
    return {"name": name, "dataset": "loaded", "expectation": expectation, "kwargs": kwargs, "severity": severity}


def by_name(execution: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in execution["qualityResults"]}


def test_a_failing_warn_check_is_recorded_and_the_run_completes(tenant, sales_db):
    negative = query(sales_db, NEGATIVE)[0][0]
    rows = query(sales_db, "SELECT count(*) FROM raw_transactions")[0][0]
    p = create_active(
        tenant,
        checked(
            "quality-warn",
            "qa.quality_warn",
            check("ids_present", "expect_column_values_to_not_be_null", "error", column="id"),
            check("row_count", "expect_table_row_count_to_be_between", "error", min_value=1),
            check("amounts_positive", "expect_column_values_to_be_between", "warn", column="amount", min_value=0),
        ),
    )
    done = run_to_end(tenant, p["pipelineId"], timeout=TIMEOUT)
    assert done["status"] == "COMPLETED", done
    assert done["metrics"]["bytesProcessed"] >= 8192, done["metrics"]  # the staged table: at least one page
    results = by_name(done)
    assert set(results) == {"ids_present", "row_count", "amounts_positive"}, done["qualityResults"]
    ids, count, amounts = results["ids_present"], results["row_count"], results["amounts_positive"]
    assert (ids["success"], ids["severity"], ids["unexpectedCount"], ids["elementCount"]) == (True, "error", 0, rows)
    assert (count["success"], count["observedValue"]) == (True, rows)
    assert (amounts["success"], amounts["severity"], amounts["unexpectedCount"]) == (False, "warn", negative)
    assert amounts["expectation"] == "expect_column_values_to_be_between"
    assert (amounts["dataset"], amounts["table"]) == ("loaded", "qa.quality_warn")
    assert amounts["details"]["partial_unexpected_list"] and all(
        v < 0 for v in amounts["details"]["partial_unexpected_list"]
    )
    # stored: the execution list and a later read show the same results
    again = tenant.get(f"/v1/pipelines/executions/{done['executionId']}").json()
    assert again["qualityResults"] == done["qualityResults"]


def test_a_failing_error_check_fails_the_run_and_shows_in_the_results(tenant, sales_db):
    negative = query(sales_db, NEGATIVE)[0][0]
    p = create_active(
        tenant,
        checked(
            "quality-error",
            "qa.quality_error",
            check("amounts_positive", "expect_column_values_to_be_between", "error", column="amount", min_value=0),
        ),
    )
    done = run_to_end(tenant, p["pipelineId"], timeout=TIMEOUT)
    assert done["status"] == "FAILED", done
    assert "quality.loaded" in done["errorMessage"], done["errorMessage"]
    [result] = done["qualityResults"]
    assert (result["name"], result["success"], result["severity"]) == ("amounts_positive", False, "error")
    assert result["unexpectedCount"] == negative and result["unexpectedPercent"] > 0
    assert result["taskId"] == "quality.loaded"
    # a pipeline without checks has none
    plain = checked("quality-none", "qa.quality_none")
    plain_done = run_to_end(tenant, create_active(tenant, plain)["pipelineId"], timeout=TIMEOUT)
    assert (plain_done["status"], plain_done["qualityResults"]) == ("COMPLETED", [])


def test_an_error_check_on_a_staged_source_keeps_its_data_from_the_sinks(tenant, sales_db, warehouse_db):
    negative = query(sales_db, NEGATIVE)[0][0]
    body = checked("quality-staged", "qa.quality_staged")
    body["definition"]["quality_checks"] = [
        {"name": "staged_positive", "dataset": "raw", "expectation": "expect_column_values_to_be_between",
         "kwargs": {"column": "amount", "min_value": 0}},
    ]  # fmt: skip
    done = run_to_end(tenant, create_active(tenant, body)["pipelineId"], timeout=TIMEOUT)
    assert done["status"] == "FAILED" and "quality.raw" in done["errorMessage"], done
    states = {t["taskId"]: t["state"] for t in done["tasks"]}
    assert states["quality.raw"] == "failed" and states["sinks.loaded"] == "upstream_failed", states
    [result] = done["qualityResults"]
    assert (result["dataset"], result["success"], result["unexpectedCount"]) == ("raw", False, negative)
    assert result["table"].endswith(".raw") and result["table"] != "raw"  # the run's staging schema
    exists = query(warehouse_db, "SELECT to_regclass('qa.quality_staged') IS NOT NULL")
    assert exists == [(False,)]  # never loaded
