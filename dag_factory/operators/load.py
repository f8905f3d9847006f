"""Load a staged dataset into its sink table (append, overwrite or merge: dag_factory.hooks.load)."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException
from psycopg import sql

from dag_factory.hooks.load import LoadError, check_mode, load_in_postgres
from dag_factory.hooks.postgres import PostgresHook, column_list, table_ident
from dag_factory.operators.base import PipelineOperator
from dag_factory.operators.staging import run_schema


class LoadTableOperator(PipelineOperator):
    """Writes `<staging schema>.<dataset>` into `table` of the sink DB, in one transaction there, as `mode`
    says (dag_factory.hooks.load: append, overwrite, or merge on `keys`). A missing target table (and schema)
    is created with the staged dataset's columns. A mode, keys or columns that do not fit fail the task
    without retries: they would fail again.
    """

    def __init__(
        self,
        *,
        staging_conn_id: str,
        sink_conn_id: str,
        dataset: str,
        table: str,
        mode: str = "append",
        keys: list[str] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.staging_conn_id = staging_conn_id
        self.sink_conn_id = sink_conn_id
        self.dataset = dataset
        self.table = table
        self.mode = mode
        self.keys = keys

    def execute(self, context: Any) -> dict[str, Any]:
        try:
            return self._load(context)
        except LoadError as exc:
            raise AirflowFailException(str(exc)) from None

    def _load(self, context: Any) -> dict[str, Any]:
        check_mode(self.mode, self.keys)
        staged = (run_schema(context), self.dataset)
        sink = PostgresHook(self.sink_conn_id)
        staging = PostgresHook(self.staging_conn_id)
        if not sink.same_database(staging):
            # Shipping within one database would copy the staged table onto itself: the copy's reader waits
            # for the writer's lock on that same table, forever. There the sink reads the staged table as is.
            self._ship(staged, sink, staging)
        with sink.session() as s:
            where = f"connection {self.sink_conn_id}"
            rows = load_in_postgres(s, staged, self.table, mode=self.mode, keys=self.keys, where=where)
            size = s.table_bytes(staged)  # what was loaded, on disk (None: a view, the same database's)
        self.record_lineage([(self.staging_conn_id, staged)], [(self.sink_conn_id, self.table, rows, size)])
        self.log.info("%s: wrote %s rows into %s on %s", self.mode, rows, self.table, self.sink_conn_id)
        return {"table": self.table, "rows": rows, "bytes": size}

    def _ship(self, staged: tuple[str, str], sink: PostgresHook, staging: PostgresHook) -> None:
        """Copy the staged dataset into the same-named staging table of the sink DB (binary COPY)."""
        columns = staging.require_columns(staged)
        # Dropped by the cleanup task, to which the builder gives the sink connections too.
        sink.ensure_schema(staged[0])
        query = sql.SQL("SELECT {} FROM {}").format(column_list([n for n, _ in columns]), table_ident(staged))
        staging.copy_query_to(query, sink, staged, create=columns)
