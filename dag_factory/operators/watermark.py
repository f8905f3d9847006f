"""High-water marks of incremental sources, and the task that saves them when a run has succeeded.

A mark lives in the staging database, table `pipeline_state.watermarks`, one row per (dag_id, source):
the largest value of the source's incremental column that a successful run staged. Tasks cannot reach
Airflow's metadata database, and the staging database is where every run of the pipeline works anyway.

The extraction task of a source computes the new mark from the rows it staged and returns it (XCom);
`commit_watermarks` runs after every sink and quality check and saves the marks in one transaction. A run
that fails before it (a sink, an error-severity check) saves nothing: the next run extracts the same rows.
A mark recorded for another column (the definition changed) is ignored: the source starts over.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from dag_factory.hooks.postgres import PostgresHook
from dag_factory.hooks.sql import decode_value
from dag_factory.operators.base import PipelineOperator
from dag_factory.spec.task_ids import source_task

STATE_SCHEMA = "pipeline_state"
_TABLE = sql.Identifier(STATE_SCHEMA, "watermarks")
_DDL = sql.SQL(
    """CREATE TABLE IF NOT EXISTS {} (
    dag_id text NOT NULL,
    source text NOT NULL,
    column_name text NOT NULL,
    kind text NOT NULL,
    value text NOT NULL,
    run_id text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dag_id, source)
)"""
).format(_TABLE)


class WatermarkStore:
    """The marks of one staging database."""

    def __init__(self, hook: PostgresHook):
        self.hook = hook

    def get(self, dag_id: str, source: str, column: str) -> dict[str, str] | None:
        """The encoded mark ({"kind", "value"}) of a source, or None (first run, or another column)."""
        with self.hook.session(read_only=True) as s:
            s.execute(sql.SQL("SELECT to_regclass({})").format(sql.Literal(f"{STATE_SCHEMA}.watermarks")))
            exists = s.cur.fetchone()
            if exists is None or exists[0] is None:
                return None
            query = sql.SQL("SELECT column_name, kind, value FROM {} WHERE dag_id = %s AND source = %s").format(_TABLE)
            s.execute(query, (dag_id, source))
            found = s.cur.fetchone()
        if found is None or found[0] != column:
            return None
        return {"kind": found[1], "value": found[2]}

    def put(self, dag_id: str, run_id: str, marks: list[tuple[str, str, dict[str, str]]]) -> list[str]:
        """Save (source, column, encoded mark) of several sources in one transaction; returns the sources
        saved. A mark never moves back: with concurrent runs, the one finishing last may have read less."""
        upsert = sql.SQL(
            "INSERT INTO {} (dag_id, source, column_name, kind, value, run_id) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (dag_id, source) DO UPDATE SET column_name = EXCLUDED.column_name, kind = EXCLUDED.kind, "
            "value = EXCLUDED.value, run_id = EXCLUDED.run_id, updated_at = now()"
        ).format(_TABLE)
        if not marks:
            return []
        current = sql.SQL("SELECT column_name, kind, value FROM {} WHERE dag_id = %s AND source = %s FOR UPDATE")
        saved = []
        with self.hook.session() as s:
            s.ensure_schema(STATE_SCHEMA)
            s.execute(_DDL)
            for source, column, mark in marks:
                s.execute(current.format(_TABLE), (dag_id, source))
                found = s.cur.fetchone()
                if found and found[0] == column and _not_after(mark, {"kind": found[1], "value": found[2]}):
                    continue
                s.execute(upsert, (dag_id, source, column, mark["kind"], mark["value"], run_id))
                saved.append(source)
        return saved


def _not_after(new: dict[str, str], old: dict[str, str]) -> bool:
    try:
        return bool(decode_value(new) <= decode_value(old))
    except (TypeError, ValueError):  # values of different kinds (the column's type changed): take the new one
        return False


class CommitWatermarksOperator(PipelineOperator):
    """Saves the marks that this run's incremental sources returned: `sources` maps source -> column.

    The mark of a source comes from the XCom of its task `sources.<name>` (key `watermark`); a source
    that staged no row keeps its previous mark."""

    def __init__(self, *, staging_conn_id: str, sources: dict[str, str], **kwargs: Any):
        super().__init__(**kwargs)
        self.staging_conn_id = staging_conn_id
        self.sources = sources

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        marks = []
        for name, column in self.sources.items():
            result = ti.xcom_pull(task_ids=source_task(name)) or {}
            mark = result.get("watermark") if isinstance(result, dict) else None
            if mark:
                marks.append((name, column, mark))
            else:
                self.log.info("source %s staged no new row: its mark stays", name)
        saved = WatermarkStore(PostgresHook(self.staging_conn_id)).put(ti.dag_id, context["run_id"], marks)
        for name, column, mark in marks:
            if name in saved:
                self.log.info("source %s: high-water mark of %s is now %s", name, column, mark["value"])
            else:
                self.log.info("source %s: a later mark of %s is already saved (a concurrent run)", name, column)
        return {name: mark for name, _, mark in marks if name in saved}
