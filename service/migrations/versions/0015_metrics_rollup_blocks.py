"""metrics rollup in aligned blocks of days (1, 2, 4 ... 64), failed executions' index

The rollup's tables gain `days` (the block's length) in their key: a 90-day window reads about a dozen blocks
per pipeline instead of 89 days. They hold derived data only: recreated empty, and the progress row reset so
that the metrics-rollup worker rebuilds them (until it has, the metrics read the raw rows, as before 0014).

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

FAILED_ONLY = "status = 'FAILED'"


def _tables(blocks: bool) -> None:
    key = ["tenant_id", "days", "day", "pipeline_id"] if blocks else ["tenant_id", "day", "pipeline_id"]

    def columns() -> list[sa.Column]:  # type: ignore[type-arg]
        first: list[sa.Column] = [sa.Column("tenant_id", sa.String(length=64), nullable=False)]  # type: ignore[type-arg]
        if blocks:
            first.append(sa.Column("days", sa.Integer(), autoincrement=False, nullable=False))
        return [
            *first,
            sa.Column("day", sa.Date(), nullable=False),
            sa.Column("pipeline_id", sa.String(length=64), nullable=False),
        ]

    op.create_table(
        "metrics_days",
        *columns(),
        sa.Column("executions", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("finished", sa.Integer(), nullable=False),
        sa.Column("duration_sum_ms", sa.Float(), nullable=False),
        sa.Column("duration_count", sa.Integer(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("settled_cost_usd", sa.Numeric(precision=18, scale=6), nullable=False),
        sa.Column("unsettled", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*key),
    )
    op.create_table(
        "metrics_day_durations",
        *columns(),
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*key, "bucket"),
    )
    op.create_table(
        "metrics_day_tasks",
        *columns(),
        sa.Column("task_id", sa.String(length=250), nullable=False),
        sa.Column("duration_sum_ms", sa.BigInteger(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*key, "task_id"),
    )


def _recreate(blocks: bool) -> None:
    for table in ("metrics_day_tasks", "metrics_day_durations", "metrics_days"):
        op.drop_table(table)
    _tables(blocks)
    op.execute("UPDATE metrics_rollup SET sealed_through = NULL, watermark = NULL")  # rebuilt by the worker


def upgrade() -> None:
    _recreate(blocks=True)
    op.create_index(
        "ix_executions_failed",
        "executions",
        ["tenant_id", "submitted_at"],
        unique=False,
        postgresql_where=sa.text(FAILED_ONLY),
        sqlite_where=sa.text(FAILED_ONLY),
    )


def downgrade() -> None:
    op.drop_index("ix_executions_failed", table_name="executions")
    _recreate(blocks=False)
