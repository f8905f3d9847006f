"""A python transformation: an allow-listed callable, imported by dotted path, builds the output table."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException
from psycopg import sql

from dag_factory.hooks.postgres import PostgresHook
from dag_factory.operators.base import PipelineOperator
from dag_factory.operators.staging import run_schema
from dag_factory.spec.validate import ALLOWED_CALLABLES_ENV, allowed_callables, callable_allowed


def import_callable(path: str) -> Any:
    """The allow-listed callable. One matched by a `module.*` entry must be a function that module defines
    (not something it imported, nor a module attribute like `__builtins__`), as validation saw in its source."""
    module, _, name = path.rpartition(".")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise AirflowFailException(f"{path!r} is not a callable")
    if path not in allowed_callables() and not (inspect.isfunction(fn) and fn.__module__ == module):
        raise AirflowFailException(f"{path!r} is not a function defined in {module}")
    return fn


class PythonStepOperator(PipelineOperator):
    """Calls `callable_path(conn_id=, schema=, inputs=, output=, params=, options=)` (see spec.PythonStep).

    The allow-list is checked again here, on the worker: a DAG file edited by hand gains nothing.
    """

    template_fields: Sequence[str] = ("options",)

    def __init__(
        self,
        *,
        staging_conn_id: str,
        dataset: str,
        callable_path: str,
        inputs: list[str],
        options: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.staging_conn_id = staging_conn_id
        self.dataset = dataset
        self.callable_path = callable_path
        self.inputs = inputs
        self.options = options or {}

    def execute(self, context: Any) -> dict[str, Any]:
        if not callable_allowed(self.callable_path):
            raise AirflowFailException(f"{self.callable_path!r} is not allow-listed in {ALLOWED_CALLABLES_ENV}")
        fn = import_callable(self.callable_path)
        schema = run_schema(context)
        hook = PostgresHook(self.staging_conn_id)
        hook.run(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, self.dataset)))
        fn(
            conn_id=self.staging_conn_id,
            schema=schema,
            inputs=list(self.inputs),
            output=self.dataset,
            params=dict(context.get("params") or {}),
            options=dict(self.options),
        )
        rows = hook.row_count((schema, self.dataset))
        if rows is None:
            raise AirflowFailException(f"{self.callable_path} did not create the table {schema}.{self.dataset}")
        size = hook.table_bytes((schema, self.dataset))
        inputs = [(self.staging_conn_id, (schema, name)) for name in self.inputs]
        self.record_lineage(inputs, [(self.staging_conn_id, (schema, self.dataset), rows, size)])
        self.log.info("python step %s: %s rows in %s.%s", self.task_id, rows, schema, self.dataset)
        return {"dataset": self.dataset, "rows": rows, "bytes": size}
