"""How a staged dataset is loaded into a sink table: the one definition of the load modes and their errors.

- append: insert the staged rows;
- overwrite: delete every row of the target, then insert (DELETE, not TRUNCATE: readers keep seeing the old
  rows until the load's transaction commits);
- merge: delete the target rows whose `keys` match a staged row, then insert (dbt's delete+insert: running it
  twice gives the same result, so retries are safe). Keys are compared with `=`, as dbt does, so that indexes
  on them are used: rows with NULL keys are never replaced.
Only the columns present in both the dataset and the table are written (in the table's order): the table's
other columns get their defaults. A missing table is created with the dataset's columns.

Each sink database supplies only the statements, as a `LoadTarget`, run in one transaction there: PostgreSQL
(`load_in_postgres`: the staged table is in the sink database, one INSERT ... SELECT) and any SQLAlchemy
database (`SqlHook.load_from_postgres`: the staged rows inserted in batches).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from psycopg import sql

from dag_factory.exceptions import DagFactoryError
from dag_factory.hooks.postgres import PgSession, column_list, split_table, table_ident

MODES = ("append", "overwrite", "merge")


class LoadError(DagFactoryError):
    """A load that cannot work as defined (its mode, keys or columns): a retry would fail the same way."""


class LoadTarget(Protocol):
    """The statements of a load into one table, in one transaction of its database."""

    def delete_all(self) -> None: ...

    def delete_matching(self, keys: Sequence[str]) -> None:
        """Delete the rows whose `keys` equal a staged row's."""

    def insert(self) -> int:
        """Insert the staged rows (the columns written); return how many."""


def check_mode(mode: str, keys: Sequence[str] | None) -> None:
    if mode not in MODES:
        raise LoadError(f"load mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "merge" and not keys:
        raise LoadError("load mode 'merge' needs keys (the columns that identify a row)")


def columns_written(
    dataset: str, table: str, staged: Collection[str], target: Sequence[str], mode: str, keys: Sequence[str] | None
) -> list[str]:
    """The columns of both the dataset (`staged`) and the table (`target`), in the table's order."""
    if mode == "merge":
        missing = [f"{k!r} (not in dataset {dataset!r})" for k in keys or [] if k not in staged]
        missing += [f"{k!r} (not in table {table!r})" for k in keys or [] if k not in target]
        if missing:
            raise LoadError("merge key columns missing: " + ", ".join(missing))
    names = [n for n in target if n in staged]
    if not names:
        raise LoadError(f"dataset {dataset!r} and table {table!r} share no column")
    return names


def load(target: LoadTarget, mode: str, keys: Sequence[str] | None) -> int:
    """Run a load whose mode was checked (check_mode); returns the rows inserted."""
    if mode == "overwrite":
        target.delete_all()
    elif mode == "merge":
        target.delete_matching(keys or [])
    return target.insert()


class _PostgresTarget:
    """A table of the database that holds the staged table (the staging one, or a copy shipped there)."""

    def __init__(self, session: PgSession, table: str, staged: tuple[str, str], names: list[str]):
        self.session = session
        self.target, self.source = table_ident(table), table_ident(staged)
        self.names = names

    def delete_all(self) -> None:
        self.session.execute(sql.SQL("DELETE FROM {}").format(self.target))

    def delete_matching(self, keys: Sequence[str]) -> None:
        match = sql.SQL(" AND ").join(sql.SQL("t.{k} = s.{k}").format(k=sql.Identifier(k)) for k in keys)
        self.session.execute(
            sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE {}").format(self.target, self.source, match)
        )

    def insert(self) -> int:
        cols = column_list(self.names)
        insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}")
        return self.session.execute(insert.format(self.target, cols, cols, self.source))


def load_in_postgres(
    s: PgSession, staged: tuple[str, str], table: str, *, mode: str, keys: Sequence[str] | None, where: str
) -> int:
    """Load the staged table `staged` into `table` of the same database (`where` names it in errors), in the
    session's transaction; the table (and its schema) is created from the dataset's columns when missing."""
    check_mode(mode, keys)
    staged_cols = s.require_columns(staged, where)
    if not s.exists(table):
        s.ensure_schema(split_table(table)[0])
        s.create_table(table, staged_cols)
    target_names = [n for n, _ in s.columns(table)]
    names = columns_written(staged[1], table, {n for n, _ in staged_cols}, target_names, mode, keys)
    return load(_PostgresTarget(s, table, staged, names), mode, keys)
