"""Python transformations that ship with dag_factory (always allow-listed). Each follows the contract of
spec.PythonStep: build `schema.output` in the staging database from tables `schema.<input>`."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from dag_factory.hooks.postgres import PostgresHook


def union_all(
    *, conn_id: str, schema: str, inputs: list[str], output: str, params: dict[str, Any], options: dict[str, Any]
) -> None:
    """Stacks the inputs (the first one's columns, matched by name) and, with options.source_column, names
    the input each row came from. Runs as one statement in the database: rows never pass through Python."""
    hook = PostgresHook(conn_id)
    names = [n for n, _ in hook.require_columns((schema, inputs[0]))]
    tag = options.get("source_column")
    parts = []
    for name in inputs:
        cols: list[sql.Composable] = [sql.Identifier(c) for c in names]
        if tag:
            cols.append(sql.SQL("{} AS {}").format(sql.Literal(name), sql.Identifier(tag)))
        parts.append(sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(cols), sql.Identifier(schema, name)))
    query = sql.SQL(" UNION ALL ").join(parts)
    hook.run(sql.SQL("CREATE TABLE {} AS {}").format(sql.Identifier(schema, output), query))
