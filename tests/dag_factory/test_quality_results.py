"""QualityCheckOperator's results as XCom: returned when every error check passes, pushed as the return value
before the task fails otherwise, so that the service can show failed checks too (real PostgreSQL)."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowException

from dag_factory.operators import QualityCheckOperator
from tests.pg import pg_url


class TaskInstance:
    """What the Task SDK's RuntimeTaskInstance offers for XComs, recording the pushes."""

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))  # what reaches Airflow is JSON


@pytest.fixture(scope="module")
def conn_id(make_database, request) -> str:  # type: ignore[no-untyped-def]
    db = make_database("df_quality")
    with psycopg.connect(pg_url(db), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA mart")
        conn.execute("CREATE TABLE mart.sales AS SELECT i AS id, i * 10 AS amount FROM generate_series(1, 5) i")
    mp = pytest.MonkeyPatch()
    url = psycopg.conninfo.conninfo_to_dict(pg_url(db))
    mp.setenv(
        "AIRFLOW_CONN_DF_QUALITY",
        json.dumps(
            {"conn_type": "postgres", "login": "postgres", "host": url.get("host", "127.0.0.1"),
             "port": int(url.get("port", 5432)), "schema": db}
        ),
    )  # fmt: skip
    request.addfinalizer(mp.undo)
    return "df_quality"


def check(name: str, expectation: str, severity: str = "error", **kwargs: Any) -> dict[str, Any]:
    return {"name": name, "expectation": expectation, "kwargs": kwargs, "severity": severity}


def operator(conn_id: str, *checks: dict[str, Any], table: str = "mart.sales") -> QualityCheckOperator:
    return QualityCheckOperator(
        task_id="quality.sales", conn_id=conn_id, table=table, checks=list(checks), dataset="sales"
    )


def test_results_are_returned_with_the_dataset_when_no_error_check_fails(conn_id: str) -> None:
    ti = TaskInstance()
    results = operator(
        conn_id,
        check("ids", "expect_column_values_to_not_be_null", column="id"),
        check("small", "expect_column_values_to_be_between", "warn", column="amount", max_value=20),
    ).execute({"ti": ti})
    assert [(r["name"], r["dataset"], r["table"], r["success"]) for r in results] == [
        ("ids", "sales", "mart.sales", True),
        ("small", "sales", "mart.sales", False),
    ]
    assert results[1]["result"]["unexpected_count"] == 3
    assert ti.xcoms == {}  # Airflow stores the returned value itself


def test_a_failed_error_check_pushes_every_result_before_failing(conn_id: str) -> None:
    ti = TaskInstance()
    with pytest.raises(AirflowException, match="rows"):
        operator(
            conn_id,
            check("ids", "expect_column_values_to_not_be_null", column="id"),
            check("rows", "expect_table_row_count_to_be_between", min_value=10),
        ).execute({"ti": ti})
    pushed = ti.xcoms["return_value"]
    assert [(r["name"], r["success"], r["severity"]) for r in pushed] == [
        ("ids", True, "error"),
        ("rows", False, "error"),
    ]
    assert pushed[1]["result"]["observed_value"] == 5


def test_a_check_that_cannot_run_is_pushed_as_failed_with_its_error(conn_id: str) -> None:
    ti = TaskInstance()
    with pytest.raises(AirflowException):
        operator(conn_id, check("ids", "expect_column_values_to_not_be_null", column="id"), table="mart.nope").execute(
            {"ti": ti}
        )
    [result] = ti.xcoms["return_value"]
    assert result["success"] is False and "nope" in result["result"]["errors"][0]
