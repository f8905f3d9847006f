"""lineage events from Airflow's openlineage provider

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lineage_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dedup_key", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("pipeline_id", sa.String(length=64), nullable=False),
        sa.Column("execution_id", sa.String(length=250), nullable=False),
        sa.Column("ol_run_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=16), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_namespace", sa.String(length=500), nullable=False),
        sa.Column("job_name", sa.String(length=500), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("forward_pending", sa.Boolean(), nullable=False),
        sa.Column("forward_attempts", sa.Integer(), nullable=False),
        sa.Column("forward_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("forward_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key"),
    )
    with op.batch_alter_table("lineage_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lineage_events_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lineage_events_pipeline_id"), ["pipeline_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lineage_events_execution_id"), ["execution_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lineage_events_forward_pending"), ["forward_pending"], unique=False)
    op.create_table(
        "lineage_datasets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("pipeline_id", sa.String(length=64), nullable=False),
        sa.Column("execution_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=True),
        sa.Column("direction", sa.String(length=6), nullable=False),
        sa.Column("namespace", sa.String(length=500), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["event_id"], ["lineage_events.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("lineage_datasets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lineage_datasets_event_id"), ["event_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lineage_datasets_pipeline_id"), ["pipeline_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lineage_datasets_execution_id"), ["execution_id"], unique=False)
        batch_op.create_index("ix_lineage_datasets_tenant_name", ["tenant_id", "name"], unique=False)
    # Rows and bytes of an execution from its tasks' OpenLineage output statistics (the receiver sums them).
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rows_processed", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("bytes_processed", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("rows_written", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_column("rows_written")
        batch_op.drop_column("bytes_processed")
        batch_op.drop_column("rows_processed")
    op.drop_table("lineage_datasets")
    op.drop_table("lineage_events")
