"""SQLAlchemy access to any database behind an Airflow connection: the `sql` sources and sinks.

Rows move in batches: a source is streamed (server-side cursor where the driver has one) and COPY'd into
the staging PostgreSQL; a sink reads the staged dataset in batches and inserts them in one transaction of
the target. Conditions on key columns (incremental marks, partition ranges) are bound parameters here,
and literals (psycopg's quoting) on the PostgreSQL side; the user's `where` is SQL by design.
The connection password is scrubbed from every error this module raises.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from psycopg import sql

from dag_factory.exceptions import DagFactoryError
from dag_factory.hooks.load import check_mode, columns_written, load
from dag_factory.hooks.postgres import _LIBPQ_EXTRAS as LIBPQ_EXTRAS
from dag_factory.hooks.postgres import Columns, PostgresHook, checked_hostaddr, column_list, scrub, table_ident

log = logging.getLogger(__name__)

# Airflow conn_type -> SQLAlchemy dialect+driver. Only postgres and sqlite ship with this project; the
# others work once their driver is installed on the workers.
DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "sqlite": "sqlite",
    "mysql": "mysql+pymysql",
    "mssql": "mssql+pymssql",
    "oracle": "oracle+oracledb",
}

DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "mysql": 3306, "mssql": 1433, "oracle": 1521}

# A condition on a key column: (operator, column, value). `lt_or_null` keeps NULL keys too (the first
# partition takes them, so that no row falls between partitions); `none` matches nothing.
Condition = tuple[str, str, Any]
_OPS = {"gt": ">", "ge": ">=", "lt": "<"}


def sqlalchemy_url(conn: Any) -> str:
    """The SQLAlchemy URL of an Airflow connection, password included: pass it on, never log it."""
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    driver = DRIVERS.get(conn_type)
    if driver is None:
        raise DagFactoryError(f"connection type {conn_type!r} is not a SQL database ({', '.join(DRIVERS)})")
    auth = quote(conn.login or "", safe="")
    if conn.password:
        auth += ":" + quote(conn.password, safe="")
    host = conn.host or "localhost"
    port = f":{conn.port}" if conn.port else ""
    url = f"{driver}://{auth}@{host}{port}/{quote(conn.schema or '', safe='')}"
    # The network policy: the address checked now is the one connected to (PostgreSQL); other drivers
    # have no such option, so their host is only checked (see connections.network).
    address = checked_hostaddr(conn.host, int(conn.port or DEFAULT_PORTS.get(conn_type, 0)))
    if driver.startswith("postgresql"):  # sslmode, connect_timeout...: as the psycopg hook passes them
        extra = conn.extra_dejson or {}
        options = {k: extra[k] for k in LIBPQ_EXTRAS if extra.get(k) not in (None, "")}
        url += f"?{urlencode(options | {'hostaddr': address})}"
    return url


def split_name(table: str) -> tuple[str | None, str]:
    """`schema.table` -> (schema, table); a bare name stays in the database's default schema (None)."""
    schema, dot, name = table.partition(".")
    return (schema, name) if dot else (None, schema)


# -- types --------------------------------------------------------------------------------------------


def pg_type(t: sa.types.TypeEngine[Any], source_dialect: str) -> str:
    """The PostgreSQL column type for a source column (SQLite's loose types map to their closest one)."""
    if source_dialect == "postgresql":
        try:
            return str(t.compile(dialect=sa.dialects.registry.load("postgresql")()))
        except sa.exc.CompileError:
            return "text"
    checks: list[tuple[type, str]] = [
        (sa.Boolean, "boolean"),
        (sa.SmallInteger, "smallint"),
        (sa.Integer, "bigint"),  # SQLite INTEGER is 64-bit
        (sa.Float, "double precision"),
        (sa.Date, "date"),
        (sa.Time, "time"),
        (sa.Interval, "interval"),
        (sa.LargeBinary, "bytea"),
        (sa.JSON, "jsonb"),
        (sa.Uuid, "uuid"),
    ]
    if isinstance(t, sa.DateTime):
        return "timestamp with time zone" if t.timezone else "timestamp"
    if isinstance(t, sa.Numeric) and not isinstance(t, sa.Float):
        return f"numeric({t.precision},{t.scale or 0})" if t.precision else "numeric"
    return next((name for cls, name in checks if isinstance(t, cls)), "text")


def pg_type_of_value(value: Any) -> str | None:
    """The PostgreSQL type for a Python value (columns of a query source); None for NULL."""
    checks: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "boolean"),
        (int, "bigint"),
        (float, "double precision"),
        (Decimal, "numeric"),
        (dt.datetime, "timestamp"),
        (dt.date, "date"),
        (dt.time, "time"),
        (dt.timedelta, "interval"),
        ((bytes, bytearray, memoryview), "bytea"),
        ((dict, list), "jsonb"),
    ]
    if value is None:
        return None
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return "timestamp with time zone"
    return next((name for cls, name in checks if isinstance(value, cls)), "text")


def target_type(t: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
    """A staged (PostgreSQL) column type the target database can create: its generic form if need be."""
    for candidate in (t, t._type_affinity() if t._type_affinity else None):  # noqa: SLF001
        if candidate is None:
            continue
        try:
            candidate.compile(dialect=dialect)
            return candidate
        except (sa.exc.CompileError, TypeError):
            continue
    return sa.Text()


# -- values of key columns (marks, partition bounds) ---------------------------------------------------


def encode_value(value: Any) -> dict[str, str] | None:
    """A key value as JSON (XCom, the watermark table) that decodes to the same Python type."""
    if value is None:
        return None
    kinds: list[tuple[type, str]] = [
        (bool, "str"),
        (int, "int"),
        (float, "float"),
        (Decimal, "decimal"),
        (dt.datetime, "datetime"),
        (dt.date, "date"),
    ]
    kind = next((k for cls, k in kinds if isinstance(value, cls)), "str")
    text = value.isoformat() if kind in ("datetime", "date") else str(value)
    return {"kind": kind, "value": text}


def decode_value(encoded: dict[str, str] | None) -> Any:
    if encoded is None:
        return None
    kind, text = encoded["kind"], encoded["value"]
    decoders: dict[str, Any] = {
        "int": int,
        "float": float,
        "decimal": Decimal,
        "datetime": dt.datetime.fromisoformat,
        "date": dt.date.fromisoformat,
    }
    return decoders.get(kind, str)(text)


def split_points(low: Any, high: Any, count: int) -> list[Any]:
    """count-1 ascending points that cut [low, high] into `count` ranges of equal width."""
    if low is None or high is None or count < 2:
        return []
    if isinstance(low, bool) or not isinstance(low, int | float | Decimal | dt.date):
        raise DagFactoryError(
            f"cannot compute {count} ranges of a {type(low).__name__} column: partition a number, date or "
            "timestamp column, or give explicit partitions.bounds"
        )
    if isinstance(low, int) and isinstance(high, int):
        width = high - low + 1
        points = [low + width * i // count for i in range(1, count)]
    else:
        points = [low + (high - low) * i / count for i in range(1, count)]
    return points


def partition_conditions(column: str, splits: list[Any], index: int, count: int) -> list[Condition]:
    """The key range of partition `index` of `count`, given the split points (NULL keys go to the first)."""
    if len(splits) < count - 1 and index > len(splits):
        return [("none", column, None)]  # fewer ranges than tasks (no rows at planning time): nothing to do
    lower = splits[index - 1] if index > 0 else None
    upper = splits[index] if index < len(splits) else None
    conditions: list[Condition] = []
    if lower is not None:
        conditions.append(("ge", column, lower))
    if upper is not None:
        conditions.append(("lt" if index > 0 else "lt_or_null", column, upper))
    return conditions


def pg_conditions(conditions: Sequence[Condition]) -> list[sql.Composable]:
    """Conditions as PostgreSQL SQL, values as literals (psycopg's quoting: COPY takes no parameters)."""
    out: list[sql.Composable] = []
    for op, column, value in conditions:
        col = sql.Identifier(column)
        if op == "none":
            out.append(sql.SQL("false"))
        elif op == "lt_or_null":
            out.append(sql.SQL("({c} < {v} OR {c} IS NULL)").format(c=col, v=sql.Literal(value)))
        else:
            out.append(sql.SQL("{} {} {}").format(col, sql.SQL(_OPS[op]), sql.Literal(value)))
    return out


def _sa_condition(op: str, column: Any, value: Any) -> Any:
    if op == "none":
        return sa.false()
    if op == "lt_or_null":
        return sa.or_(column < value, column.is_(None))
    return {"gt": column > value, "ge": column >= value, "lt": column < value}[op]


# -- the hook -----------------------------------------------------------------------------------------


class SqlHook:
    """One Airflow connection as a SQLAlchemy engine (NullPool: a task opens few connections, briefly)."""

    def __init__(self, conn_id: str | None = None, *, url: str | None = None):
        self.conn_id = conn_id
        self._url = url
        self._engine: sa.Engine | None = None
        self._password: str | None = None

    def _airflow_connection(self) -> Any:
        from airflow.sdk import BaseHook  # lazy: importable without Airflow set up

        assert self.conn_id is not None, "a hook made from a URL has no Airflow connection"
        return BaseHook.get_connection(self.conn_id)

    @property
    def url(self) -> str:
        if self._url is None:
            conn = self._airflow_connection()
            self._password = conn.password
            self._url = sqlalchemy_url(conn)
        return self._url

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        return self._engine

    @property
    def dialect(self) -> str:
        return self.url.split(":", 1)[0].split("+", 1)[0]

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def dataset_name(self, table: str) -> tuple[str, str]:
        """OpenLineage's (namespace, name) of a table here: `<dialect>://host:port`, `database.schema.table`
        (a SQLite file: namespace `sqlite`, name `<path>.main.table`). No credentials."""
        url = sa.make_url(self.url)
        schema, dot, name = table.partition(".")
        schema, name = (schema, name) if dot else ("main" if self.dialect == "sqlite" else "public", schema)
        if self.dialect == "sqlite":
            return "sqlite", f"{url.database}.{schema}.{name}"
        where = f"{url.host or 'localhost'}:{url.port}" if url.port else (url.host or "localhost")
        return f"{self.dialect}://{where}", f"{url.database}.{schema}.{name}"

    def scrub(self, text: str) -> str:
        secret = self._password or sa.make_url(self.url).password
        return scrub(text, secret)

    @contextmanager
    def connect(self, *, write: bool = False) -> Iterator[sa.Connection]:
        """A connection (in one transaction committed at the end when `write`); errors without the password."""
        try:
            with self.engine.begin() if write else self.engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise DagFactoryError(
                f"{self.conn_id or 'database'}: {self.scrub(str(getattr(exc, 'orig', None) or exc))}"
            ) from None

    # -- reading -----------------------------------------------------------------------------------

    def reflect(self, table: str) -> sa.Table:
        schema, name = split_name(table)
        try:
            return sa.Table(name, sa.MetaData(), schema=schema, autoload_with=self.engine)
        except sa.exc.NoSuchTableError:
            raise DagFactoryError(f"table {table} not found in connection {self.conn_id}") from None

    def primary_key(self, table: str) -> str:
        """The single-column primary key of `table` (what partitions use when no column is given)."""
        keys = [c.name for c in self.reflect(table).primary_key.columns]
        if len(keys) != 1:
            raise DagFactoryError(
                f"table {table} has {'no' if not keys else 'a composite'} primary key: give partitions.column"
            )
        return keys[0]

    def source(self, *, table: str | None, query: str | None) -> tuple[Any, Any]:
        """(selectable, column lookup): a reflected table (typed columns), or a query as a subquery."""
        if table is not None:
            t = self.reflect(table)

            def column(name: str) -> Any:
                if name not in t.c:
                    raise DagFactoryError(f"column {name!r} not in table {table} ({', '.join(t.c.keys())})")
                return t.c[name]

            return t, column
        assert query is not None
        sub = query.strip().rstrip(";")

        def raw(name: str) -> Any:
            return sa.literal_column("q." + self.engine.dialect.identifier_preparer.quote(name))

        return sa.text(f"({sub}) AS q"), raw

    def select(
        self, *, table: str | None, query: str | None, where: str | None, conditions: Sequence[Condition]
    ) -> sa.Select[Any]:
        """SELECT * FROM the table or query, with the user's `where` and the key conditions."""
        src, column = self.source(table=table, query=query)
        stmt = sa.select(src) if table is not None else sa.select(sa.literal_column("*")).select_from(src)
        if where and where.strip():
            stmt = stmt.where(sa.text(f"({where})"))
        for op, name, value in conditions:
            stmt = stmt.where(_sa_condition(op, column(name), value))
        return stmt

    def min_max(
        self, column: str, *, table: str | None, query: str | None, where: str | None, conditions: Sequence[Condition]
    ) -> tuple[Any, Any]:
        src, col = self.source(table=table, query=query)
        stmt = sa.select(sa.func.min(col(column)), sa.func.max(col(column))).select_from(src)
        if where and where.strip():
            stmt = stmt.where(sa.text(f"({where})"))
        for op, name, value in conditions:
            stmt = stmt.where(_sa_condition(op, col(name), value))
        with self.connect() as conn:
            low, high = conn.execute(stmt).one()
        return low, high

    def copy_to_postgres(
        self,
        stmt: sa.Select[Any],
        dest: PostgresHook,
        dest_table: tuple[str, str],
        *,
        batch_size: int = 10_000,
        columns: Columns | None = None,
    ) -> int:
        """Stream `stmt`'s rows into a new (unlogged) staging table of `dest`, COPY'd in batches, in one
        destination transaction (a failed or retried copy leaves nothing behind). `columns` gives the
        table's columns; without it they are inferred from the first rows' values (text when all NULL)."""
        rows = 0
        with self.connect() as src, dest.session() as dst:
            result = src.execution_options(stream_results=True, yield_per=batch_size).execute(stmt)
            names = list(result.keys())
            batches = result.partitions(batch_size)
            first = next(batches, [])
            if columns is None:
                columns = infer_columns(names, first)
            dst.create_table(dest_table, columns, replace=True, unlogged=True)
            copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(
                table_ident(dest_table), column_list([n for n, _ in columns])
            )
            with dst.cur.copy(copy_in) as copy:
                for batch in _chain([first], batches):
                    for row in batch:
                        copy.write_row(tuple(row))
                    rows += len(batch)
        log.info("copied %s rows from %s into %s on %s", rows, self.conn_id, ".".join(dest_table), dest.conn_id)
        return rows

    # -- writing -----------------------------------------------------------------------------------

    def load_from_postgres(
        self,
        staging: PostgresHook,
        staged: tuple[str, str],
        table: str,
        *,
        mode: str,
        keys: list[str] | None = None,
        batch_size: int = 10_000,
    ) -> int:
        """Write the staged dataset into `table` (created from its columns when missing), in one transaction,
        as `mode` says (dag_factory.hooks.load). The staged rows are read in batches and inserted; merge puts
        them in a temporary table of this connection first (this database cannot join the staging one)."""
        check_mode(mode, keys)
        staged_table = SqlHook(url=staging.sqlalchemy_url()).reflect(".".join(staged))
        schema, name = split_name(table)
        with self.connect(write=True) as conn:
            target = self._target_table(conn, staged_table, schema, name)
            names = columns_written(staged[1], table, staged_table.c.keys(), target.c.keys(), mode, keys)
            return load(_SqlTarget(conn, target, _StagedRows(staging, staged, names, batch_size)), mode, keys)

    def _target_table(self, conn: sa.Connection, staged: sa.Table, schema: str | None, name: str) -> sa.Table:
        if not sa.inspect(conn).has_table(name, schema=schema):
            columns = [sa.Column(c.name, target_type(c.type, conn.dialect)) for c in staged.columns]
            sa.Table(name, sa.MetaData(), *columns, schema=schema).create(conn)
            log.info("created table %s from the dataset's columns", f"{schema + '.' if schema else ''}{name}")
        return sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)


@dataclass
class _StagedRows:
    """The columns `names` of a staged dataset, read in batches of `batch_size`."""

    staging: PostgresHook
    staged: tuple[str, str]
    names: list[str]
    batch_size: int

    def insert_into(self, conn: sa.Connection, into: sa.Table) -> int:
        return _insert_batches(conn, into, self.staging, self.staged, self.names, self.batch_size)


class _SqlTarget:
    """A table of a SQLAlchemy database (dag_factory.hooks.load.LoadTarget): the staged rows come in batches
    from the staging database; for a merge they go to a temporary table first, to be matched against."""

    def __init__(self, conn: sa.Connection, target: sa.Table, rows: _StagedRows):
        self.conn, self.target, self.rows = conn, target, rows
        self._merged: tuple[sa.Table, int] | None = None  # the temporary table, and the rows put in it

    def delete_all(self) -> None:
        self.conn.execute(self.target.delete())

    def delete_matching(self, keys: Sequence[str]) -> None:
        tmp = _temporary(self.conn, self.target, self.rows.names)
        self._merged = (tmp, self.rows.insert_into(self.conn, tmp))
        match = sa.and_(*(tmp.c[k] == self.target.c[k] for k in keys))
        self.conn.execute(self.target.delete().where(sa.exists().where(match)))

    def insert(self) -> int:
        if self._merged is None:
            return self.rows.insert_into(self.conn, self.target)
        tmp, rows = self._merged
        names = self.rows.names
        cols = [self.target.c[n] for n in names]
        self.conn.execute(self.target.insert().from_select(cols, sa.select(*(tmp.c[n] for n in names))))
        return rows


def _temporary(conn: sa.Connection, target: sa.Table, names: list[str]) -> sa.Table:
    tmp_name = "tmp_merge_" + hashlib.sha1(target.fullname.encode()).hexdigest()[:12]
    cols = [sa.Column(n, target.c[n].type) for n in names]
    tmp = sa.Table(tmp_name, sa.MetaData(), *cols, prefixes=["TEMPORARY"])
    tmp.create(conn)
    return tmp


def _chain(*iterables: Any) -> Iterator[Any]:
    for it in iterables:
        yield from it


# Numbers of mixed kinds in one column (SQLite stores 9.0 in a NUMERIC column as the integer 9): the widest.
_WIDER = {
    frozenset({"bigint", "double precision"}): "double precision",
    frozenset({"bigint", "numeric"}): "numeric",
    frozenset({"numeric", "double precision"}): "numeric",
    frozenset({"bigint", "numeric", "double precision"}): "numeric",
    frozenset({"timestamp", "timestamp with time zone"}): "timestamp with time zone",
}


def infer_columns(names: list[str], rows: Sequence[Any]) -> Columns:
    """Column types of a query's result from the values of its first batch (text when all NULL or mixed)."""
    columns = []
    for i, name in enumerate(names):
        found = {t for t in (pg_type_of_value(r[i]) for r in rows) if t is not None}
        columns.append((name, widest_type(found)))
    return columns


def widest_type(types: set[str]) -> str:
    """One PostgreSQL type for values typed `types` (none: text; numbers of several kinds: the widest)."""
    if len(types) == 1:
        return next(iter(types))
    return _WIDER.get(frozenset(types), "text")


def _insert_batches(
    conn: sa.Connection, into: sa.Table, staging: PostgresHook, staged: tuple[str, str], names: list[str], size: int
) -> int:
    """Read the staged columns in batches (a server-side cursor) and insert each batch (executemany)."""
    query = sql.SQL("SELECT {} FROM {}").format(column_list(names), table_ident(staged))
    written = 0
    with staging.session(read_only=True) as s, s.cur.connection.cursor(name="dag_factory_sink") as cur:
        cur.itersize = size
        cur.execute(query)
        while batch := cur.fetchmany(size):
            conn.execute(into.insert(), [dict(zip(names, row, strict=True)) for row in batch])
            written += len(batch)
    return written
