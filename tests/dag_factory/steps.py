"""A python-step callable for the tests (allow-listed there through PIPELINE_PYTHON_CALLABLES)."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from dag_factory.hooks import PostgresHook


def copy_first(
    *, conn_id: str, schema: str, inputs: list[str], output: str, params: dict[str, Any], options: dict[str, Any]
) -> None:
    query = sql.SQL("CREATE TABLE {} AS SELECT *, {} AS note_from_options FROM {}").format(
        sql.Identifier(schema, output), sql.Literal(options.get("note", "")), sql.Identifier(schema, inputs[0])
    )
    PostgresHook(conn_id).run(query)


def forgets_the_table(**_: Any) -> None:
    """Breaks the contract: creates nothing."""
