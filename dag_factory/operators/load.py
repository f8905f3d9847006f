"""Load a staged dataset into its sink table (append, overwrite or merge)."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException
from psycopg import sql

from dag_factory.hooks.postgres import PgSession, PostgresHook, column_list, split_table, table_ident
from dag_factory.operators.base import PipelineOperator
from dag_factory.operators.staging import run_schema

MODES = ("append", "overwrite", "merge")


class LoadTableOperator(PipelineOperator):
    """Writes `<staging schema>.<dataset>` into `table` of the sink DB, in one transaction there.

    - append: insert the staged rows;
    - overwrite: delete every row of the target, then insert;
    - merge: delete the target rows whose `keys` match a staged row, then insert (dbt's delete+insert:
      running it twice gives the same result, so retries are safe). Keys are compared with `=`, as dbt
      does, so that indexes on them are used: rows with NULL keys are never replaced.
    Only the columns present in both tables are written (target order): extra target columns get defaults.
    A missing target table (and schema) is created with the staged dataset's columns.
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
        self._check_mode()
        staged = (run_schema(context), self.dataset)
        sink = PostgresHook(self.sink_conn_id)
        staging = PostgresHook(self.staging_conn_id)
        if not sink.same_database(staging):
            # Shipping within one database would copy the staged table onto itself: the copy's reader waits
            # for the writer's lock on that same table, forever. There the sink reads the staged table as is.
            self._ship(staged, sink, staging)
        with sink.session() as s:
            rows = self._write(s, staged)
            size = s.table_bytes(staged)  # what was loaded, on disk (None: a view, the same database's)
        self.record_lineage([(self.staging_conn_id, staged)], [(self.sink_conn_id, self.table, rows, size)])
        self.log.info("%s: wrote %s rows into %s on %s", self.mode, rows, self.table, self.sink_conn_id)
        return {"table": self.table, "rows": rows, "bytes": size}

    def _check_mode(self) -> None:
        if self.mode not in MODES:
            raise AirflowFailException(f"load mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.mode == "merge" and not self.keys:
            raise AirflowFailException("load mode 'merge' needs keys (the columns that identify a row)")

    def _ship(self, staged: tuple[str, str], sink: PostgresHook, staging: PostgresHook) -> None:
        """Copy the staged dataset into the same-named staging table of the sink DB (binary COPY)."""
        columns = staging.require_columns(staged)
        # Dropped by the cleanup task, to which the builder gives the sink connections too.
        sink.ensure_schema(staged[0])
        query = sql.SQL("SELECT {} FROM {}").format(column_list([n for n, _ in columns]), table_ident(staged))
        staging.copy_query_to(query, sink, staged, create=columns)

    def _write(self, s: PgSession, staged: tuple[str, str]) -> int:
        staged_cols = s.require_columns(staged, f"connection {self.sink_conn_id}")
        if not s.exists(self.table):
            s.ensure_schema(split_table(self.table)[0])
            s.create_table(self.table, staged_cols)
        names = self._insert_columns(s, {n for n, _ in staged_cols})
        target, source = table_ident(self.table), table_ident(staged)
        if self.mode == "overwrite":
            # DELETE, not TRUNCATE: readers keep seeing the old rows until this transaction commits.
            s.execute(sql.SQL("DELETE FROM {}").format(target))
        elif self.mode == "merge":
            match = sql.SQL(" AND ").join(sql.SQL("t.{k} = s.{k}").format(k=sql.Identifier(k)) for k in self.keys or [])
            s.execute(sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE {}").format(target, source, match))
        cols = column_list(names)
        return s.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(target, cols, cols, source))

    def _insert_columns(self, s: PgSession, staged_names: set[str]) -> list[str]:
        target_names = [n for n, _ in s.columns(self.table)]
        if self.mode == "merge":
            keys = self.keys or []
            missing = [f"{k!r} (not in dataset {self.dataset!r})" for k in keys if k not in staged_names]
            missing += [f"{k!r} (not in table {self.table!r})" for k in keys if k not in target_names]
            if missing:
                raise AirflowFailException("merge key columns missing: " + ", ".join(missing))
        names = [n for n in target_names if n in staged_names]
        if not names:
            raise AirflowFailException(f"dataset {self.dataset!r} and table {self.table!r} share no column")
        return names
