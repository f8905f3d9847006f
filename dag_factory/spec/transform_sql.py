"""SQL that the builder generates for declarative transformations (no Airflow, no I/O): here, in the spec,
so that the service reads the same SQL (column-level lineage, service/lineage/columns.py) without loading the
builder, which imports Airflow.

Each function returns one SELECT over earlier datasets (tables of the run's staging schema, found through
the search_path the SqlTransformOperator sets). Identifiers are quoted; values never appear in it except
through Jinja (`{{ params.x }}`) in user-written predicates, rendered on the worker with the restricted
environment of dag_factory.spec.templating.
"""

from __future__ import annotations

from dag_factory.spec.models import (
    Aggregate,
    Aggregation,
    Deduplicate,
    Filter,
    LookupJoin,
    Mask,
    PythonStep,
    SelectColumns,
    SqlStep,
    SqlTransform,
    Transformation,
)


def quote(identifier: str) -> str:
    # Names are validated by the spec as plain identifiers; quoting keeps case and reserved words safe.
    return '"' + identifier.replace('"', '""') + '"'


def lookup_join_sql(t: LookupJoin) -> str:
    added = ", ".join(f"l.{quote(c)}" for c in t.columns)
    on = " AND ".join(f"i.{quote(a)} = l.{quote(b)}" for a, b in t.on.items())
    join = "LEFT JOIN" if t.how == "left" else "JOIN"
    return f"SELECT i.*, {added} FROM {quote(t.input)} AS i {join} {quote(t.lookup)} AS l ON {on}"


def filter_sql(t: Filter) -> str:
    # Parenthesised so that a condition with OR stays one predicate.
    return f"SELECT * FROM {quote(t.input)} WHERE ({t.condition})"


def _aggregation(a: Aggregation) -> str:
    if a.function == "count":
        return f"count({quote(a.column)})" if a.column else "count(*)"
    if a.function == "count_distinct":
        return f"count(DISTINCT {quote(a.column or '')})"
    return f"{a.function}({quote(a.column or '')})"


def aggregate_sql(t: Aggregate) -> str:
    keys = [quote(c) for c in t.group_by]
    outputs = keys + [f"{_aggregation(a)} AS {quote(name)}" for name, a in t.aggregates.items()]
    group = f" GROUP BY {', '.join(keys)}" if keys else ""
    return f"SELECT {', '.join(outputs)} FROM {quote(t.input)}{group}"


def deduplicate_sql(t: Deduplicate) -> str:
    """DISTINCT ON keeps the first row of each key group in ORDER BY order (PostgreSQL)."""
    keys = ", ".join(quote(k) for k in t.keys)
    order = ", ".join([*(quote(k) for k in t.keys), *(f"{quote(c)} {t.direction.upper()}" for c in t.order_by)])
    return f"SELECT DISTINCT ON ({keys}) * FROM {quote(t.input)} ORDER BY {order}"


def select_columns_sql(t: SelectColumns) -> str:
    columns = []
    for name, c in t.columns.items():
        expr = quote(c.from_ or name)
        if c.cast:
            expr = f"CAST({expr} AS {c.cast})"
        columns.append(f"{expr} AS {quote(name)}")
    return f"SELECT {', '.join(columns)} FROM {quote(t.input)}"


def _masked(column: str, strategy: str) -> str:
    # The value is read through to_jsonb(row) so that a column the input lacks yields NULL, not an error.
    value = f"(to_jsonb(i) ->> '{column}')"
    return {
        "hash": f"encode(sha256(convert_to({value}, 'UTF8')), 'hex')",
        "last4": f"repeat('*', greatest(length({value}) - 4, 0)) || right({value}, 4)",
        "redact": f"CASE WHEN {value} IS NULL THEN NULL ELSE '[REDACTED]' END",
        "null": "NULL",
    }[strategy]


def mask_sql(t: Mask) -> str:
    """jsonb_populate_record overwrites the masked keys of each row and keeps every other column as it is;
    keys that are not columns of the input are ignored. Column names are plain identifiers (spec)."""
    pairs = ", ".join(f"'{c}', {_masked(c, s)}" for c, s in t.columns.items())
    return f"SELECT m.* FROM {quote(t.input)} AS i, LATERAL jsonb_populate_record(i, jsonb_build_object({pairs})) AS m"


def select_sql(t: SqlStep) -> str:
    """The SELECT of a SQL-based transformation."""
    match t:
        case SqlTransform():
            return t.sql
        case Mask():
            return mask_sql(t)
        case LookupJoin():
            return lookup_join_sql(t)
        case Filter():
            return filter_sql(t)
        case Aggregate():
            return aggregate_sql(t)
        case Deduplicate():
            return deduplicate_sql(t)
        case SelectColumns():
            return select_columns_sql(t)


def transformation_sql(t: Transformation) -> str | None:
    """The SELECT of a SQL-based transformation; None for the others (python)."""
    return None if isinstance(t, PythonStep) else select_sql(t)
