"""SQL transformations, pushed down into the staging database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql

from dag_factory.hooks.postgres import PostgresHook
from dag_factory.operators.base import PipelineOperator
from dag_factory.operators.staging import staging_schema


def strip_statement(text: str) -> str:
    """The user's SELECT without surrounding blanks and one trailing `;` (it goes into CREATE TABLE AS)."""
    text = text.strip()
    return text[:-1].rstrip() if text.endswith(";") else text


class SqlTransformOperator(PipelineOperator):
    """Runs one SELECT in the staging DB and stores its result as `<staging schema>.<dataset>`.

    Bare table names in the SELECT resolve to the run's staging schema first (earlier datasets), then public.
    """

    template_fields: Sequence[str] = ("sql",)

    def __init__(self, *, staging_conn_id: str, dataset: str, sql: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.staging_conn_id = staging_conn_id
        self.dataset = dataset
        self.sql = sql

    def execute(self, context: Any) -> dict[str, Any]:
        schema = staging_schema(context["run_id"])
        target = sql.Identifier(schema, self.dataset)
        rows = PostgresHook(self.staging_conn_id).run(
            # SET LOCAL: the search_path lasts for this transaction only.
            sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema)),
            sql.SQL("DROP TABLE IF EXISTS {}").format(target),
            sql.SQL("CREATE TABLE {} AS {}").format(target, sql.SQL(strip_statement(self.sql))),
        )
        self.log.info("transformation %s: %s rows in %s.%s", self.task_id, rows, schema, self.dataset)
        return {"dataset": self.dataset, "rows": rows}
