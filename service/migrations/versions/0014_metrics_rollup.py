"""per-day metrics rollup (monitoring over long periods without reading every execution)

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _day_key() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("pipeline_id", sa.String(length=64), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "metrics_days",
        *_day_key(),
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
        sa.PrimaryKeyConstraint("tenant_id", "day", "pipeline_id"),
    )
    op.create_table(
        "metrics_day_durations",
        *_day_key(),
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "day", "pipeline_id", "bucket"),
    )
    op.create_table(
        "metrics_day_tasks",
        *_day_key(),
        sa.Column("task_id", sa.String(length=250), nullable=False),
        sa.Column("duration_sum_ms", sa.BigInteger(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "day", "pipeline_id", "task_id"),
    )
    rollup = op.create_table(
        "metrics_rollup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sealed_through", sa.Date(), nullable=True),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(rollup, [{"id": 1, "sealed_through": None, "watermark": None}])
    # The tasks of a period's executions without a join: each task row carries its execution's submission.
    op.add_column("execution_tasks", sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE execution_tasks SET submitted_at = "
        "(SELECT submitted_at FROM executions WHERE executions.id = execution_tasks.execution_id)"
    )
    op.execute("DROP INDEX IF EXISTS ix_execution_tasks_tenant_started")  # see _complete_0010_and_0013
    op.create_index("ix_execution_tasks_tenant_submitted", "execution_tasks", ["tenant_id", "submitted_at"])
    _complete_0010_and_0013()
    # The rollup finds the executions changed since its last pass.
    op.create_index("ix_executions_updated_at", "executions", ["updated_at"], unique=False)
    # The live cost of a period: the runs whose cost is not stored yet (few) without reading the settled ones.
    unsettled = "cost_settled_for IS NULL OR cost_settled_for <> finished_at"
    op.create_index(
        "ix_executions_unsettled",
        "executions",
        ["tenant_id", "submitted_at"],
        unique=False,
        postgresql_where=sa.text(unsettled),
        sqlite_where=sa.text(unsettled),
    )


def _complete_0010_and_0013() -> None:
    """0010 and 0013 gained their audit triggers and the executions' window indexes after a first version of
    them was on main (stop 21): a database migrated then has neither. Create them where missing (idempotent)."""
    op.execute("CREATE INDEX IF NOT EXISTS ix_executions_tenant_submitted ON executions (tenant_id, submitted_at)")
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_executions_tenant_pipeline_submitted "
        "ON executions (tenant_id, pipeline_id, submitted_at)"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = '42501'; END $$"
        )
        # DROP + CREATE rather than CREATE OR REPLACE TRIGGER (PostgreSQL 14+ only).
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change()"
        )
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute(
            "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER IF NOT EXISTS audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: {event} refused'); END"
            )


def downgrade() -> None:
    op.drop_index("ix_executions_unsettled", table_name="executions")
    op.drop_index("ix_execution_tasks_tenant_submitted", table_name="execution_tasks")
    op.create_index("ix_execution_tasks_tenant_started", "execution_tasks", ["tenant_id", "started_at"])
    with op.batch_alter_table("execution_tasks") as batch:
        batch.drop_column("submitted_at")
    op.drop_index("ix_executions_updated_at", table_name="executions")
    op.drop_table("metrics_rollup")
    op.drop_table("metrics_day_tasks")
    op.drop_table("metrics_day_durations")
    op.drop_table("metrics_days")
