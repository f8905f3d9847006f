"""SQL transformations, pushed down into the staging database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql

from dag_factory.hooks.postgres import PostgresHook
from dag_factory.operators.base import PipelineOperator
from dag_factory.operators.staging import run_schema


def strip_statement(text: str) -> str:
    """The user's SELECT without surrounding blanks and one trailing `;` (it goes into CREATE TABLE AS)."""
    text = text.strip()
    return text[:-1].rstrip() if text.endswith(";") else text


class SqlTransformOperator(PipelineOperator):
    """Runs one SELECT in the staging DB and stores its result as `<staging schema>.<dataset>`.

    Bare table names in the SELECT resolve to the run's staging schema first (earlier datasets), then public.
    """

    template_fields: Sequence[str] = ("sql",)

    def __init__(self, *, staging_conn_id: str, dataset: str, sql: str, materialize: str = "table", **kwargs: Any):
        super().__init__(**kwargs)
        self.staging_conn_id = staging_conn_id
        self.dataset = dataset
        self.sql = sql
        self.materialize = materialize

    def _inputs(self, schema: str) -> list[tuple[str, tuple[str, str]]]:
        """Tables the SELECT reads: bare names are datasets of this run's schema (lineage only: best effort)."""
        from dag_factory.spec import sql_table_refs

        refs = sql_table_refs(self.sql) or []
        return [(self.staging_conn_id, (s or schema, name)) for s, name in refs]

    def execute(self, context: Any) -> dict[str, Any]:
        schema = run_schema(context)
        with PostgresHook(self.staging_conn_id).session() as session:
            # SET LOCAL: the search_path lasts for this transaction only.
            session.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema)))
            query = sql.SQL(strip_statement(self.sql))
            rows = session.create_dataset((schema, self.dataset), query, view=self.materialize == "view")
            size = session.table_bytes((schema, self.dataset))
        self.record_lineage(self._inputs(schema), [(self.staging_conn_id, (schema, self.dataset), rows, size)])
        what = "a view" if rows < 0 else f"{rows} rows"
        self.log.info("transformation %s: %s in %s.%s", self.task_id, what, schema, self.dataset)
        return {"dataset": self.dataset, "rows": rows if rows >= 0 else None, "bytes": size}
