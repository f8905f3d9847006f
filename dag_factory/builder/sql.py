"""The SQL of declarative transformations: it lives in dag_factory.spec.transform_sql (no Airflow), where the
service reads it too; re-exported here for the builder."""

from __future__ import annotations

from dag_factory.spec.transform_sql import (
    aggregate_sql,
    deduplicate_sql,
    filter_sql,
    lookup_join_sql,
    mask_sql,
    quote,
    select_columns_sql,
    select_sql,
    transformation_sql,
)

__all__ = [
    "aggregate_sql",
    "deduplicate_sql",
    "filter_sql",
    "lookup_join_sql",
    "mask_sql",
    "quote",
    "select_columns_sql",
    "select_sql",
    "transformation_sql",
]
