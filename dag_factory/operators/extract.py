"""Extraction of database sources beyond the plain copy: `sql` sources (any SQLAlchemy database),
incremental extraction (rows past the last successful high-water mark) and partitioned extraction
(N tasks, one key range each, then their union).

Task layout of a source `orders`:
- plain or incremental: `sources.orders` (ExtractOperator) stages the dataset; incremental, it also
  returns the new mark (the largest staged key) for `commit_watermarks`;
- partitioned: `sources.orders.bounds` (PlanPartitionsOperator) reads the mark once for the run and
  computes the split points; `sources.orders.part_<i>` (ExtractOperator) each stage one range as
  `orders__part_<i>`; `sources.orders` (UnionPartitionsOperator) makes `orders` the view over the parts
  (UNION ALL: ranges are disjoint) and returns the new mark.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from psycopg import sql

from dag_factory.exceptions import DagFactoryError
from dag_factory.hooks.postgres import PostgresHook, column_list, table_ident
from dag_factory.hooks.sql import (
    Condition,
    SqlHook,
    decode_value,
    encode_value,
    partition_conditions,
    pg_conditions,
    pg_type,
    split_points,
    widest_type,
)
from dag_factory.operators.base import PipelineOperator
from dag_factory.operators.staging import run_schema
from dag_factory.operators.watermark import WatermarkStore

_PRIMARY_KEY_SQL = """
SELECT a.attname FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = to_regclass(%s) AND i.indisprimary
"""


def part_dataset(dataset: str, index: int) -> str:
    """The staging table of one partition; a long dataset name is hashed, since PostgreSQL would cut
    identifiers at 63 bytes and so give two partitions the same table."""
    name = f"{dataset}__part_{index}"
    if len(name) <= 63:
        return name
    return f"{dataset[:32]}_{hashlib.sha1(dataset.encode()).hexdigest()[:12]}__part_{index}"


class _SourceReader(PipelineOperator):
    """What the extraction tasks share: where the source is, and how to query it with key conditions."""

    template_fields: Sequence[str] = ("where", "query")

    def __init__(
        self,
        *,
        kind: str,
        source_conn_id: str,
        staging_conn_id: str,
        dataset: str,
        table: str | None = None,
        query: str | None = None,
        where: str | None = None,
        incremental: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.kind = kind
        self.source_conn_id = source_conn_id
        self.staging_conn_id = staging_conn_id
        self.dataset = dataset
        self.table = table
        self.query = query
        self.where = where
        self.incremental = incremental

    def _on_postgres(self) -> bool:
        """A postgres source, or a sql table on a PostgreSQL connection: moved with binary COPY (or CREATE
        TABLE AS on the staging database itself) rather than row batches."""
        if self.kind == "postgres":
            return True
        return self.table is not None and SqlHook(self.source_conn_id).is_postgres

    def _mark(self, context: Any) -> Any:
        """The last successful mark of this source (initial_value on the first run); None: extract all."""
        if not self.incremental:
            return None
        store = WatermarkStore(PostgresHook(self.staging_conn_id))
        saved = store.get(context["ti"].dag_id, self.dataset, self.incremental["column"])
        if saved is None:
            self.log.info("no high-water mark yet: initial_value %r", self.incremental.get("initial_value"))
            return self.incremental.get("initial_value")
        self.log.info("extracting rows with %s > %s", self.incremental["column"], saved["value"])
        return decode_value(saved)

    def _incremental_conditions(self, mark: Any) -> list[Condition]:
        if self.incremental and mark is not None:
            return [("gt", self.incremental["column"], mark)]
        return []

    def _pg_select(self, columns: sql.Composable, conditions: Sequence[Condition]) -> sql.Composed:
        assert self.table is not None
        parts: list[sql.Composable] = []
        if self.where and self.where.strip():
            parts.append(sql.SQL("({})").format(sql.SQL(self.where)))
        parts += pg_conditions(conditions)
        query = sql.SQL("SELECT {} FROM {}").format(columns, table_ident(self.table))
        return sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(parts)) if parts else query


class ExtractOperator(_SourceReader):
    """Stages a source (or one key range of it) as a table of the run's staging schema.

    Without `partition`: the dataset itself; incremental, only rows past the mark, and the new mark is
    returned. With `partition` {"index", "count", "plan_task_id"}: the rows of one range, as
    `<dataset>__part_<index>`, with the mark and ranges read from the plan task's XCom.
    """

    def __init__(self, *, partition: dict[str, Any] | None = None, batch_size: int = 10_000, **kwargs: Any):
        super().__init__(**kwargs)
        self.partition = partition
        self.batch_size = batch_size

    def execute(self, context: Any) -> dict[str, Any]:
        schema = run_schema(context)
        if self.partition is None:
            name, mark = self.dataset, self._mark(context)
            conditions = self._incremental_conditions(mark)
        else:
            plan = context["ti"].xcom_pull(task_ids=self.partition["plan_task_id"])
            if not plan:
                raise DagFactoryError(f"no key ranges from {self.partition['plan_task_id']} (did it run?)")
            index, count = self.partition["index"], self.partition["count"]
            name, mark = part_dataset(self.dataset, index), decode_value(plan["mark"])
            splits = [decode_value(s) for s in plan["splits"]]
            conditions = self._incremental_conditions(mark)
            conditions += partition_conditions(plan["column"], splits, index, count)
            self.log.info("partition %s of %s: %s", index + 1, count, conditions or "every row")
        target = (schema, name)
        rows = self._stage(target, conditions)
        size = PostgresHook(self.staging_conn_id).table_bytes(target)
        source = self.table or "query"
        self.record_lineage(
            [(self.source_conn_id, self.table)] if self.table and self._lineage_source() else [],
            [(self.staging_conn_id, target, rows, size)],
        )
        self.log.info("staged %s rows of %s as %s.%s", rows, source, *target)
        result: dict[str, Any] = {"dataset": self.dataset, "rows": rows, "bytes": size}
        if self.partition is None and self.incremental:
            result["watermark"] = _max_key(PostgresHook(self.staging_conn_id), target, self.incremental["column"])
        return result

    def _lineage_source(self) -> bool:
        # OpenLineage names PostgreSQL tables only (see base.dataset_name).
        return self.table is not None and self._on_postgres()

    def _stage(self, target: tuple[str, str], conditions: list[Condition]) -> int:
        staging = PostgresHook(self.staging_conn_id)
        if self._on_postgres():
            if self.source_conn_id == self.staging_conn_id:
                with staging.session() as s:
                    return s.create_dataset(target, self._pg_select(sql.SQL("*"), conditions))
            source = PostgresHook(self.source_conn_id)
            assert self.table is not None
            columns = source.require_columns(self.table)
            query = self._pg_select(column_list([n for n, _ in columns]), conditions)
            return source.copy_query_to(query, staging, target, create=columns)
        hook = SqlHook(self.source_conn_id)
        stmt = hook.select(table=self.table, query=self.query, where=self.where, conditions=conditions)
        # A table's columns are typed by reflection; a query's from its values (None: inferred).
        typed = [(c.name, pg_type(c.type, hook.dialect)) for c in stmt.selected_columns] if self.table else None
        return hook.copy_to_postgres(stmt, staging, target, batch_size=self.batch_size, columns=typed)


class PlanPartitionsOperator(_SourceReader):
    """`sources.<name>.bounds`: the run's key ranges. Reads the mark once (every part extracts past the same
    mark), resolves the column (given, or the table's primary key) and computes split points from the
    column's min and max (or takes the explicit bounds). Returns {column, mark, splits, count}."""

    def __init__(self, *, column: str | None, count: int, bounds: list[Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.column = column
        self.count = count
        self.bounds = bounds

    def execute(self, context: Any) -> dict[str, Any]:
        mark = self._mark(context)
        column = self.column or self._primary_key()
        if self.bounds is not None:
            splits = list(self.bounds)
        else:
            low, high = self._min_max(column, self._incremental_conditions(mark))
            splits = split_points(low, high, self.count)
            self.log.info("%s from %s to %s: split at %s", column, low, high, splits)
        return {
            "column": column,
            "mark": encode_value(mark),
            "splits": [encode_value(s) for s in splits],
            "count": self.count,
        }

    def _primary_key(self) -> str:
        assert self.table is not None  # the spec requires a column for a query source
        if not self._on_postgres():
            return SqlHook(self.source_conn_id).primary_key(self.table)
        with PostgresHook(self.source_conn_id).session(read_only=True) as s:
            s.execute(sql.SQL(_PRIMARY_KEY_SQL), (".".join(f'"{p}"' for p in _split(self.table)),))
            keys = [r[0] for r in s.cur.fetchall()]
        if len(keys) != 1:
            kind = "no" if not keys else "a composite"
            raise DagFactoryError(f"table {self.table} has {kind} primary key: give partitions.column")
        return str(keys[0])

    def _min_max(self, column: str, conditions: list[Condition]) -> tuple[Any, Any]:
        if not self._on_postgres():
            hook = SqlHook(self.source_conn_id)
            return hook.min_max(column, table=self.table, query=self.query, where=self.where, conditions=conditions)
        col = sql.Identifier(column)
        query = self._pg_select(sql.SQL("min({}), max({})").format(col, col), conditions)
        with PostgresHook(self.source_conn_id).session(read_only=True) as s:
            s.execute(query)
            row = s.cur.fetchone()
        return (row[0], row[1]) if row else (None, None)


class UnionPartitionsOperator(PipelineOperator):
    """`sources.<name>`: the dataset as a view over its parts (UNION ALL of disjoint ranges). Parts typed
    differently (a query's columns are typed from values; an all-NULL part is text) are cast to the widest
    of their types. Incremental: returns the new mark, the largest key staged by all parts."""

    def __init__(
        self, *, staging_conn_id: str, dataset: str, count: int, incremental_column: str | None = None, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.staging_conn_id = staging_conn_id
        self.dataset = dataset
        self.count = count
        self.incremental_column = incremental_column

    def execute(self, context: Any) -> dict[str, Any]:
        schema = run_schema(context)
        staging = PostgresHook(self.staging_conn_id)
        parts = [(schema, part_dataset(self.dataset, i)) for i in range(self.count)]
        with staging.session() as s:
            typed = [s.require_columns(p, f"connection {self.staging_conn_id}") for p in parts]
            columns = _union_types(typed)
            selects = []
            for part, cols in zip(parts, typed, strict=True):
                have = dict(cols)
                items = [
                    sql.SQL("{}").format(sql.Identifier(n))
                    if have.get(n) == t
                    else sql.SQL("CAST({} AS {}) AS {}").format(sql.Identifier(n), sql.SQL(t), sql.Identifier(n))
                    for n, t in columns
                ]
                selects.append(sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(items), table_ident(part)))
            s.create_dataset((schema, self.dataset), sql.SQL(" UNION ALL ").join(selects), view=True)
            s.execute(sql.SQL("SELECT count(*) FROM {}").format(table_ident((schema, self.dataset))))
            row = s.cur.fetchone()
            total = int(row[0]) if row else 0
        self.record_lineage(
            [(self.staging_conn_id, p) for p in parts], [(self.staging_conn_id, (schema, self.dataset), total, None)]
        )
        self.log.info("%s = union of %s parts, %s rows", self.dataset, self.count, total)
        # `staged_rows`, not `rows`: the parts already count as the rows read from the source.
        result: dict[str, Any] = {"dataset": self.dataset, "parts": self.count, "staged_rows": total}
        if self.incremental_column:
            result["watermark"] = _max_key(staging, (schema, self.dataset), self.incremental_column)
        return result


def _union_types(typed: list[list[tuple[str, str]]]) -> list[tuple[str, str]]:
    names = [n for n, _ in typed[0]]
    for cols in typed[1:]:
        if [n for n, _ in cols] != names:
            raise DagFactoryError("the partitions of a source have different columns: is the query deterministic?")
    # A part whose column was all NULL is typed text: it takes the others' type.
    return [(n, widest_type({dict(c)[n] for c in typed} - {"text"} or {"text"})) for n in names]


def _max_key(staging: PostgresHook, table: tuple[str, str], column: str) -> dict[str, str] | None:
    """The largest staged value of the incremental column, encoded; None when nothing was staged."""
    with staging.session(read_only=True) as s:
        s.execute(sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(column), table_ident(table)))
        row = s.cur.fetchone()
        return encode_value(row[0] if row else None)


def _split(table: str) -> tuple[str, str]:
    schema, dot, name = table.partition(".")
    return (schema, name) if dot else ("public", schema)
