"""Database hooks of dag_factory (own hooks, not the Airflow providers')."""

from dag_factory.hooks.postgres import PgSession, PostgresHook, split_table

__all__ = ["PgSession", "PostgresHook", "split_table"]
