"""great-expectations checks on a table: a loaded sink table, or a dataset staged by the run (a source or a
transformation, checked before anything reads it). great_expectations is imported inside execute only: it
takes seconds to import, and DAG files are parsed far more often than these tasks run."""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import warnings
from decimal import Decimal
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from dag_factory.hooks.sql import SqlHook, split_name
from dag_factory.operators.base import PipelineOperator
from dag_factory.operators.staging import run_schema

SEVERITIES = ("error", "warn")
XCOM_RETURN_KEY = "return_value"  # the key a task's returned value is stored under (BaseXCom.XCOM_RETURN_KEY)
# Result entries worth a place in the one log line per check.
_HEADLINE = ("observed_value", "element_count", "unexpected_count", "unexpected_percent", "missing_count")


def expectation_class_name(expectation: str) -> str:
    """`expect_column_values_to_not_be_null` -> `ExpectColumnValuesToNotBeNull`."""
    return "".join(part.capitalize() for part in expectation.split("_"))


def jsonable(value: Any) -> Any:
    """GE results hold Decimals, numpy numbers, dates...: make them JSON (XCom) friendly."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real | Decimal):
        f = float(value)
        return f if math.isfinite(f) else str(f)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _exception_messages(info: Any) -> list[str]:
    """Messages of the exceptions GE caught while validating (its exception_info is flat or per metric)."""
    if not isinstance(info, dict):
        return []
    if "raised_exception" in info:
        return [str(info.get("exception_message"))] if info.get("raised_exception") else []
    return [m for sub in info.values() for m in _exception_messages(sub)]


def _expectation_class(gx: Any, expectation: str) -> Any:
    """By the registry (the names dag_factory.spec knows), so `expect_column_kl_divergence_...` resolves too."""
    from great_expectations.expectations.registry import get_expectation_impl

    try:
        return get_expectation_impl(expectation)
    except Exception:  # noqa: BLE001 - unregistered: fall back to the class name
        return getattr(gx.expectations, expectation_class_name(expectation), None)


def _push_results(context: Any, results: list[dict[str, Any]]) -> None:
    """The results as the task's XCom return value, also when the task is about to fail."""
    ti = context.get("ti") if hasattr(context, "get") else None
    if ti is not None:
        ti.xcom_push(key=XCOM_RETURN_KEY, value=results)


class QualityCheckOperator(PipelineOperator):
    """Runs great-expectations checks on `table` (`schema.table`, or a bare name in the database's default
    schema) of connection `conn_id`, any SQL database; or, with `staged`, on the run's staged dataset of that
    name (`table` is then the dataset name, in the run's staging schema of `conn_id`).

    Each check is {"name", "expectation", "kwargs", "severity": "error" | "warn"}. A failed `error`
    check fails the task (without retries: data does not get better by asking again); a failed `warn`
    check is only logged. Returns the results of every check.
    """

    def __init__(
        self,
        *,
        conn_id: str,
        table: str,
        checks: list[dict[str, Any]],
        dataset: str | None = None,
        staged: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.table = table
        self.checks = checks
        self.dataset = dataset  # the definition's name of what is checked (a sink or a dataset), for the results
        self.staged = staged

    def staging_conn(self) -> str | None:
        return self.conn_id if self.staged else None

    def execute(self, context: Any) -> list[dict[str, Any]]:
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no usage statistics sent from workers
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        if self.staged:  # object.__setattr__: not a constructor argument being changed
            object.__setattr__(self, "table", f"{run_schema(context)}.{self.table}")
        planned = [(check, self._expectation(gx, check)) for check in self.checks]  # config errors first
        hook = SqlHook(self.conn_id)
        hook.url  # noqa: B018 - a connection that is no SQL database fails here, with its own message
        try:
            with self._batch(gx, hook, ProgressBarsConfig(globally=False)) as batch:
                results = [self._validate(batch, check, expectation, hook) for check, expectation in planned]
        except AirflowException as exc:  # no batch (table missing, database down): every check failed with it
            _push_results(context, [self._outcome(check, False, {"errors": [str(exc)]}) for check in self.checks])
            raise
        failed = [r["name"] for r in results if not r["success"] and r["severity"] == "error"]
        if failed:
            # A failing task returns nothing: push the results as its return value before failing, so that
            # the failed checks (observed values, unexpected counts) are as readable as the passed ones.
            _push_results(context, results)
            raise AirflowFailException(f"quality checks failed on {self.table}: {', '.join(failed)}")
        return results

    def _expectation(self, gx: Any, check: dict[str, Any]) -> Any:
        name, expectation = check.get("name"), check.get("expectation", "")
        if check.get("severity", "error") not in SEVERITIES:
            raise AirflowFailException(f"check {name!r}: severity must be 'error' or 'warn'")
        cls = _expectation_class(gx, expectation)
        if not (isinstance(cls, type) and issubclass(cls, gx.expectations.Expectation)):
            raise AirflowFailException(f"check {name!r}: unknown great-expectations expectation {expectation!r}")
        try:
            return cls(**(check.get("kwargs") or {}))
        except Exception as exc:  # pydantic validation of the kwargs
            raise AirflowFailException(f"check {name!r}: invalid kwargs for {expectation!r}: {exc}") from None

    @contextlib.contextmanager
    def _batch(self, gx: Any, hook: SqlHook, no_progress_bars: Any) -> Any:
        """The whole table as one GE batch. GE errors are re-raised without the connection string."""
        schema, table = split_name(self.table)
        datasource = None
        try:
            ctx = gx.get_context(mode="ephemeral")
            ctx.variables.progress_bars = no_progress_bars  # tqdm bars would flood the task log
            add = {"postgresql": "add_postgres", "sqlite": "add_sqlite"}.get(hook.dialect, "add_sql")
            datasource = getattr(ctx.data_sources, add)("db", connection_string=hook.url)
            with warnings.catch_warnings():
                # GE 1.14+ deprecates schema_name, but PostgresDatasource offers no other way to name
                # a schema except the search_path; the table must be qualified, so keep using it.
                warnings.simplefilter("ignore", DeprecationWarning)
                asset = datasource.add_table_asset("t", table_name=table, schema_name=schema)
            yield asset.add_batch_definition_whole_table("whole").get_batch()
        except AirflowException:
            raise
        except Exception as exc:
            msg = hook.scrub(f"{type(exc).__name__}: {exc}")
            where = f"{self.table} ({self.conn_id})"
            raise AirflowException(f"great-expectations on {where}: {msg}") from None
        finally:
            if datasource is not None:  # close pooled connections now rather than at garbage collection
                for engine in (datasource.get_engine, lambda: datasource.get_execution_engine().engine):
                    with contextlib.suppress(Exception):
                        engine().dispose()

    def _validate(self, batch: Any, check: dict[str, Any], expectation: Any, hook: SqlHook) -> dict[str, Any]:
        res = batch.validate(expectation)
        result = jsonable(res.result or {})
        errors = [hook.scrub(m) for m in _exception_messages(res.exception_info)]
        if errors:
            result["errors"] = errors
        out = self._outcome(check, bool(res.success), result)
        self._log_result(out)
        return out

    def _outcome(self, check: dict[str, Any], success: bool, result: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": check.get("name"),
            "dataset": self.dataset,
            "table": self.table,
            "expectation": check.get("expectation"),
            "severity": check.get("severity", "error"),
            "success": success,
            "result": result,
        }

    def _log_result(self, r: dict[str, Any]) -> None:
        numbers_ = ", ".join(f"{k}={r['result'][k]}" for k in _HEADLINE if k in r["result"])
        errors = "; ".join(r["result"].get("errors", []))
        line = "check %s (%s, %s): %s%s%s"
        args = (
            r["name"],
            r["expectation"],
            r["severity"],
            "passed" if r["success"] else "FAILED",
            f" [{numbers_}]" if numbers_ else "",
            f" error: {errors}" if errors else "",
        )
        (self.log.info if r["success"] else self.log.warning)(line, *args)
