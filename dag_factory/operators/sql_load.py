"""Load a staged dataset into a table of any SQLAlchemy database (the `sql` sink)."""

from __future__ import annotations

from typing import Any

from dag_factory.hooks.load import check_mode
from dag_factory.hooks.sql import SqlHook
from dag_factory.operators.load import LoadTableOperator
from dag_factory.operators.staging import run_schema


class SqlLoadOperator(LoadTableOperator):
    """append / overwrite / merge (delete+insert on `keys`) of `<staging schema>.<dataset>` into `table`,
    created from the dataset's columns when missing; one transaction in the target database.

    On a PostgreSQL connection this is the postgres sink (binary COPY, then one INSERT ... SELECT); on any
    other database the staged rows are read in batches and inserted through SQLAlchemy (merge goes through a
    temporary table of the target, since the target cannot join the staging database).
    """

    def __init__(self, *, batch_size: int = 10_000, **kwargs: Any):
        super().__init__(**kwargs)
        self.batch_size = batch_size

    def _load(self, context: Any) -> dict[str, Any]:
        target = SqlHook(self.sink_conn_id)
        if target.is_postgres:
            return super()._load(context)
        check_mode(self.mode, self.keys)
        from dag_factory.hooks.postgres import PostgresHook

        staged = (run_schema(context), self.dataset)
        rows = target.load_from_postgres(
            PostgresHook(self.staging_conn_id),
            staged,
            self.table,
            mode=self.mode,
            keys=self.keys,
            batch_size=self.batch_size,
        )
        self.record_lineage([(self.staging_conn_id, staged)], [])
        self.record_named_outputs([(*target.dataset_name(self.table), rows, None)])
        self.log.info("%s: wrote %s rows into %s on %s", self.mode, rows, self.table, self.sink_conn_id)
        return {"table": self.table, "rows": rows}
