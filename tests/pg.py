"""Throwaway PostgreSQL databases on the local server (the tests' real database)."""

from __future__ import annotations

import os

import psycopg

PG_ADMIN_URL = os.environ.get("PIPELINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


def admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)
