"""SQL that the builder generates for declarative transformations (no Airflow, no I/O)."""

from __future__ import annotations

from dag_factory.spec.models import LookupJoin


def quote(identifier: str) -> str:
    # Names are validated by the spec as plain identifiers; quoting keeps case and reserved words safe.
    return '"' + identifier.replace('"', '""') + '"'


def lookup_join_sql(t: LookupJoin) -> str:
    added = ", ".join(f"l.{quote(c)}" for c in t.columns)
    on = " AND ".join(f"i.{quote(a)} = l.{quote(b)}" for a, b in t.on.items())
    join = "LEFT JOIN" if t.how == "left" else "JOIN"
    return f"SELECT i.*, {added} FROM {quote(t.input)} AS i {join} {quote(t.lookup)} AS l ON {on}"
