"""PostgreSQL access for the pipeline operators (psycopg 3). The hook owns all I/O; operators orchestrate.

Data moves between databases only as binary COPY streams; nothing is materialised row by row in Python.
The connection password is never logged and is scrubbed from every error this module raises. Every
connection obeys the network policy (connections.network): the host is resolved once, every address checked,
and libpq is given the checked address (`hostaddr`; `host` stays, for TLS), so DNS cannot swap it afterwards.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql

from dag_factory.exceptions import DagFactoryError

log = logging.getLogger(__name__)

# libpq options that may be given in the Airflow connection's extra (anything else there is ignored).
_LIBPQ_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name")

# Domains are replaced by their base type and enums by text: both are binary-COPY compatible with those,
# and neither exists in another database, so a staged copy must not refer to them.
_COLUMNS_SQL = """
SELECT a.attname,
       CASE t.typtype WHEN 'd' THEN format_type(t.typbasetype, t.typtypmod)
                      WHEN 'e' THEN 'text'
                      ELSE format_type(a.atttypid, a.atttypmod) END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# Connections opened in this (task) process, so that on_kill can cancel their queries.
_OPEN: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()


def cancel_open_queries() -> None:
    """Cancel every statement in flight on this process's connections (a task being killed)."""
    for conn in list(_OPEN):
        try:
            conn.cancel_safe(timeout=5)
        except Exception:  # noqa: BLE001 - best effort while the task is being stopped
            log.warning("could not cancel a running query", exc_info=True)


def _watch_client(conn: psycopg.Connection) -> None:
    """Ask the server (PostgreSQL 14+) to abort our query if this process dies mid-statement; without it a
    killed task's long query runs on, holding locks that block the run's teardown."""
    try:
        conn.execute("SET client_connection_check_interval = 2000")
        conn.commit()
    except psycopg.Error:
        conn.rollback()


def checked_hostaddr(host: str | None, port: int) -> str:
    """The address to connect to for host:port, allowed by the network policy (DagFactoryError if not).
    No host or a socket directory would reach the worker's local server through a Unix socket, which no
    address check can see: refused."""
    from connections.network import NetworkDenied, current_policy

    if not host or host.startswith("/") or "," in host:
        raise DagFactoryError(f"connection host {host!r} is not a single host name or address")
    try:
        return str(current_policy().check(host, port)[0])
    except NetworkDenied as exc:
        raise DagFactoryError(f"{exc}; {exc.hint}") from None
    except OSError as exc:
        raise DagFactoryError(f"cannot resolve {host!r}: {exc}") from None


Table = str | tuple[str, str]
Columns = list[tuple[str, str]]


def split_table(table: Table) -> tuple[str, str]:
    """`schema.table` -> (schema, table); a bare name lives in `public`. Splits on the first dot only."""
    if isinstance(table, tuple):
        return table
    schema, dot, name = table.partition(".")
    return (schema, name) if dot else ("public", schema)


def table_ident(table: Table) -> sql.Identifier:
    return sql.Identifier(*split_table(table))


def column_list(names: list[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def scrub(text: str, *secrets: str | None) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text


_TABLE_BYTES_SQL = sql.SQL(
    "SELECT pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'm')"
)


_STARTED = "pipeline staging; server started "
_RESTART_SQL = sql.SQL(
    "SELECT obj_description(n.oid, 'pg_namespace'), pg_postmaster_start_time()::text FROM pg_namespace n"
    " WHERE n.nspname = %s"
)


# What a session executes: composed with psycopg.sql (identifiers quoted), never a formatted string.
Statement = sql.SQL | sql.Composed


def _value(cur: psycopg.Cursor[Any]) -> Any:
    """The value the statement just run returns (one row, one column: an aggregate, a function)."""
    row = cur.fetchone()
    if row is None:
        raise DagFactoryError("the statement returned no row")
    return row[0]


class PgSession:
    """One transaction on one connection, with the few statements the operators need."""

    def __init__(self, cur: psycopg.Cursor):
        self.cur = cur

    def execute(self, statement: Statement, params: Any = None) -> int:
        self.cur.execute(statement, params)
        return self.cur.rowcount

    def table_bytes(self, table: Table) -> int | None:
        """On-disk size of a table (heap, TOAST, indexes): a catalog lookup, no scan. None for a view or a
        missing table."""
        self.cur.execute(_TABLE_BYTES_SQL, split_table(table))
        row = self.cur.fetchone()
        return int(row[0]) if row else None

    def columns(self, table: Table) -> Columns:
        self.cur.execute(_COLUMNS_SQL, split_table(table))
        return [(name, type_sql) for name, type_sql in self.cur.fetchall()]

    def require_columns(self, table: Table, where: str) -> Columns:
        cols = self.columns(table)
        if not cols:
            schema, name = split_table(table)
            raise DagFactoryError(f"table {schema}.{name} not found (or has no columns) in {where}")
        return cols

    def exists(self, table: Table) -> bool:
        return bool(self.columns(table))

    def create_dataset(self, table: tuple[str, str], query: sql.Composable, *, view: bool = False) -> int:
        """(Re)create a staging dataset from a query, as an unlogged table or a view; returns its rows
        (-1 for a view: nothing was computed). Unlogged: it lives for one run, so it need not survive a
        crash, nor fill the WAL (about half the cost of writing it)."""
        ident = sql.Identifier(*table)
        self.cur.execute(
            "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (".".join(f'"{p}"' for p in table),)
        )
        found = self.cur.fetchone()
        if found:  # a retry, maybe after the materialisation changed
            self.execute(sql.SQL("DROP VIEW {}" if found[0] == "v" else "DROP TABLE {}").format(ident))
        kind = sql.SQL("VIEW" if view else "UNLOGGED TABLE")
        rows = self.execute(sql.SQL("CREATE {} {} AS {}").format(kind, ident, query))
        return -1 if view else rows

    def ensure_schema(self, schema: str) -> None:
        # Concurrent `CREATE SCHEMA IF NOT EXISTS` can still fail on pg_namespace's unique index; the
        # transaction-scoped advisory lock serialises creators (tasks run in parallel) until commit.
        self.cur.execute("SELECT pg_advisory_xact_lock(hashtext('dag_factory:' || %s))", (schema,))
        self.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))

    def mark_server_start(self, schema: str) -> None:
        """Note on `schema` when the server started: see server_restart_since_mark."""
        self.cur.execute("SELECT pg_postmaster_start_time()::text")
        started = _value(self.cur)
        comment = sql.Literal(_STARTED + started)
        self.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(schema), comment))

    def server_restart_since_mark(self, schema: str) -> tuple[str, str] | None:
        """(then, now) when the server restarted since mark_server_start(schema); None when it did not, or
        nothing was marked. Crash recovery empties UNLOGGED tables: a restart means staged data may be gone."""
        self.cur.execute(_RESTART_SQL, (schema,))
        row = self.cur.fetchone()
        if not row or not (row[0] or "").startswith(_STARTED):
            return None
        then = row[0][len(_STARTED) :]
        return (then, row[1]) if then != row[1] else None

    def create_table(self, table: Table, columns: Columns, *, replace: bool = False, unlogged: bool = False) -> None:
        """Create `table` with `columns`; replace=True drops it first (so retries start clean).

        unlogged=True for staging tables: they live for one run and are dropped after it, so writing
        them to the WAL (about half the cost of a bulk load) buys nothing.
        """
        ident = table_ident(table)
        if replace:
            self.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
        defs = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns)
        exists = sql.SQL("") if replace else sql.SQL("IF NOT EXISTS ")
        kind = sql.SQL("UNLOGGED TABLE") if unlogged else sql.SQL("TABLE")
        self.execute(sql.SQL("CREATE {} {}{} ({})").format(kind, exists, ident, defs))


class PostgresHook:
    """psycopg 3 access to the database of one Airflow connection (conn.schema is the database name)."""

    def __init__(self, conn_id: str):
        self.conn_id = conn_id
        self._connection: Any = None

    def _airflow_connection(self) -> Any:
        if self._connection is None:
            from airflow.sdk import BaseHook  # lazy: keeps this module importable without Airflow set up

            self._connection = BaseHook.get_connection(self.conn_id)
        return self._connection

    def _password(self) -> str | None:
        password: str | None = self._airflow_connection().password
        return password

    def _extras(self) -> dict[str, Any]:
        extra = self._airflow_connection().extra_dejson or {}
        return {k: extra[k] for k in _LIBPQ_EXTRAS if extra.get(k) not in (None, "")}

    def get_conn(self) -> psycopg.Connection:
        c = self._airflow_connection()
        params = dict(host=c.host, port=c.port or 5432, user=c.login, password=c.password, dbname=c.schema)
        params = {k: v for k, v in params.items() if v} | self._extras()
        params["hostaddr"] = checked_hostaddr(c.host, int(c.port or 5432))
        try:
            conn = psycopg.connect(**params, autocommit=False)
        except psycopg.Error as exc:
            msg = scrub(str(exc), c.password)
            raise psycopg.OperationalError(f"cannot connect with conn_id {self.conn_id!r}: {msg}") from None
        _watch_client(conn)
        _OPEN.add(conn)
        return conn

    def same_database(self, other: PostgresHook) -> bool:
        """Whether both connections reach one database (two connection names for one database happen)."""

        def where(hook: PostgresHook) -> tuple[str, int, str]:
            c = hook._airflow_connection()
            host = c.host or "localhost"
            return ("127.0.0.1" if host == "localhost" else host, int(c.port or 5432), c.schema or "")

        return self.conn_id == other.conn_id or where(self) == where(other)

    def sqlalchemy_url(self) -> str:
        """`postgresql+psycopg://...` with the password in clear text: pass it on, never log it."""
        c = self._airflow_connection()
        auth = quote(c.login or "", safe="")
        if c.password:
            auth += ":" + quote(c.password, safe="")
        query = urlencode(self._extras() | {"hostaddr": checked_hostaddr(c.host, int(c.port or 5432))})
        db = quote(c.schema or "", safe="")
        url = f"postgresql+psycopg://{auth}@{c.host or 'localhost'}:{c.port or 5432}/{db}"
        return url + (f"?{query}" if query else "")

    def scrub(self, text: str) -> str:
        """`text` without this connection's password (for messages of errors raised by other libraries)."""
        return scrub(text, self._password())

    @contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[PgSession]:
        """One transaction: committed when the block ends normally, rolled back on error."""
        with self.get_conn() as conn:
            conn.read_only = read_only
            with conn.cursor() as cur:
                yield PgSession(cur)

    def run(self, *statements: Statement) -> int:
        """Run statements in one transaction; returns the row count of the last one."""
        rows = -1
        with self.session() as s:
            for statement in statements:
                rows = s.execute(statement)
        return rows

    def columns(self, table: Table) -> Columns:
        """[(name, type_sql)] of a table or view in attnum order; [] if it does not exist."""
        with self.session(read_only=True) as s:
            return s.columns(table)

    def require_columns(self, table: Table) -> Columns:
        """Like columns(), but a missing table is an error naming it and this connection."""
        with self.session(read_only=True) as s:
            return s.require_columns(table, f"connection {self.conn_id}")

    def row_count(self, table: Table) -> int | None:
        """Rows of a table; None when it does not exist."""
        with self.session(read_only=True) as s:
            if not s.exists(table):
                return None
            s.execute(sql.SQL("SELECT count(*) FROM {}").format(table_ident(table)))
            return int(_value(s.cur))

    def table_bytes(self, table: Table) -> int | None:
        with self.session(read_only=True) as s:
            return s.table_bytes(table)

    def ensure_schema(self, schema: str) -> None:
        with self.session() as s:
            s.ensure_schema(schema)

    def copy_query_to(
        self, query: sql.Composable, dest: PostgresHook, dest_table: Table, *, create: Columns | None = None
    ) -> int:
        """Stream `query`'s rows into `dest_table` of `dest` as binary COPY; returns the rows copied.

        With `create`, the destination table is (re)created (unlogged: a staging table) with those columns
        in the same destination transaction, so a failed or retried copy never leaves partial data behind;
        and, being new in this transaction, it is loaded with FREEZE (no later rewrite of every row's flags).
        """
        copy_out = sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query)
        options = sql.SQL("FORMAT BINARY, FREEZE" if create is not None else "FORMAT BINARY")
        copy_in = sql.SQL("COPY {} FROM STDIN ({})").format(table_ident(dest_table), options)
        with self.session(read_only=True) as src, dest.session() as dst:
            if create is not None:
                dst.create_table(dest_table, create, replace=True, unlogged=True)
            with src.cur.copy(copy_out) as out, dst.cur.copy(copy_in) as into:
                for block in out:
                    into.write(block)
            rows = dst.cur.rowcount
        dest_name = ".".join(split_table(dest_table))
        log.info("copied %s rows from %s into %s on %s", rows, self.conn_id, dest_name, dest.conn_id)
        return rows
