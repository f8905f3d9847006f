"""The run's staging schema: create it, fill it from sources, drop it.

Every run stages its datasets in its own schema of the staging database (named from the run_id), so
concurrent runs never see each other's tables and a teardown can drop everything at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException
from psycopg import sql

from dag_factory.hooks.postgres import PostgresHook, column_list, table_ident
from dag_factory.operators.base import PipelineOperator


def staging_schema(run_id: str, dag_id: str = "") -> str:
    """Schema of one run: deterministic (every task of the run computes it) and a valid identifier. Named
    from the DAG and the run: run ids are unique per DAG only (Airflow's own `scheduled__<time>` and
    `manual__<time>` repeat across DAGs, and two pipelines may stage in one database)."""
    key = f"{dag_id}\x00{run_id}" if dag_id else run_id
    return "stg_" + hashlib.sha1(key.encode()).hexdigest()[:20]


def run_schema(context: Any) -> str:
    """The staging schema of the run a task context belongs to."""
    dag_id = getattr(context.get("dag"), "dag_id", None) or getattr(context.get("ti"), "dag_id", None) or ""
    return staging_schema(context["run_id"], dag_id)


class PrepareStagingOperator(PipelineOperator):
    """Creates the run's staging schema in each connection."""

    def __init__(self, *, conn_ids: list[str], **kwargs: Any):
        super().__init__(**kwargs)
        self.conn_ids = conn_ids

    def execute(self, context: Any) -> str:
        schema = run_schema(context)
        for conn_id in dict.fromkeys(self.conn_ids):
            with PostgresHook(conn_id).session() as s:
                s.ensure_schema(schema)
                s.mark_server_start(schema)
            self.log.info("staging schema %s ready on %s", schema, conn_id)
        return schema


def assert_staging_intact(conn_id: str, schema: str) -> None:
    """Fail (without retries: a retry of one task cannot bring staged data back) when the staging database
    restarted since the run created its staging schema: crash recovery empties UNLOGGED tables, and loading
    an emptied dataset would silently write nothing."""
    with PostgresHook(conn_id).session(read_only=True) as s:
        restart = s.server_restart_since_mark(schema)
    if restart:
        raise AirflowFailException(
            f"the staging database of connection {conn_id} restarted during this run (server started {restart[0]}, "
            f"now {restart[1]}): after a crash PostgreSQL empties the run's unlogged staging tables. "
            "Retry the execution: its staging is rebuilt."
        )


class CleanupStagingOperator(PipelineOperator):
    """Drops the run's staging schema (and every table in it) in each connection."""

    def __init__(self, *, conn_ids: list[str], **kwargs: Any):
        super().__init__(**kwargs)
        self.conn_ids = conn_ids

    def execute(self, context: Any) -> str:
        schema = run_schema(context)
        drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        for conn_id in dict.fromkeys(self.conn_ids):
            hook = PostgresHook(conn_id)
            if hook._airflow_connection().conn_type not in ("postgres", "postgresql"):
                continue  # a `sql` sink on another database (SQLite...): nothing is staged there
            # A bounded wait: a lock held by a stuck statement fails the teardown instead of hanging it.
            hook.run(sql.SQL("SET LOCAL lock_timeout = '120s'"), drop)
            self.log.info("dropped staging schema %s on %s", schema, conn_id)
        return schema


class StageTableOperator(PipelineOperator):
    """Materialises `SELECT * FROM table [WHERE where]` as `<staging schema>.<dataset>` in the staging DB."""

    template_fields: Sequence[str] = ("where",)

    def __init__(
        self,
        *,
        source_conn_id: str,
        staging_conn_id: str,
        table: str,
        dataset: str,
        where: str | None = None,
        materialize: str = "table",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.source_conn_id = source_conn_id
        self.staging_conn_id = staging_conn_id
        self.table = table
        self.dataset = dataset
        self.where = where
        self.materialize = materialize

    def _select(self, columns: sql.Composable) -> sql.Composed:
        query = sql.SQL("SELECT {} FROM {}").format(columns, table_ident(self.table))
        if self.where and self.where.strip():
            # Parenthesised so that a predicate with OR cannot change the meaning of anything appended.
            query = sql.SQL("{} WHERE ({})").format(query, sql.SQL(self.where))
        return query

    def execute(self, context: Any) -> dict[str, Any]:
        target = (run_schema(context), self.dataset)
        staging = PostgresHook(self.staging_conn_id)
        if self.source_conn_id == self.staging_conn_id:
            # Same database: no data leaves the server (a view: not even a copy is written).
            with staging.session() as s:
                rows = s.create_dataset(target, self._select(sql.SQL("*")), view=self.materialize == "view")
                size = s.table_bytes(target)
        else:
            source = PostgresHook(self.source_conn_id)
            columns = source.require_columns(self.table)
            query = self._select(column_list([name for name, _ in columns]))
            rows = source.copy_query_to(query, staging, target, create=columns)
            size = staging.table_bytes(target)
        self.record_lineage([(self.source_conn_id, self.table)], [(self.staging_conn_id, target, rows, size)])
        self.log.info("staged %s of %s as %s.%s", "a view" if rows < 0 else f"{rows} rows", self.table, *target)
        return {"dataset": self.dataset, "rows": rows if rows >= 0 else None, "bytes": size}
