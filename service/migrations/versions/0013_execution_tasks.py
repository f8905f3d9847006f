"""finished executions' task instances (the monitoring report sums them)

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "execution_tasks",
        sa.Column("execution_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("pipeline_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=True),
        sa.Column("try_number", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["execution_id"], ["executions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("execution_id", "task_id"),
    )
    op.create_index("ix_execution_tasks_pipeline", "execution_tasks", ["tenant_id", "pipeline_id"], unique=False)
    op.create_index("ix_execution_tasks_tenant_started", "execution_tasks", ["tenant_id", "started_at"], unique=False)
    # The monitoring metrics' windows: a tenant's and a pipeline's executions by submission time.
    op.create_index("ix_executions_tenant_submitted", "executions", ["tenant_id", "submitted_at"], unique=False)
    op.create_index(
        "ix_executions_tenant_pipeline_submitted",
        "executions",
        ["tenant_id", "pipeline_id", "submitted_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_executions_tenant_pipeline_submitted", table_name="executions")
    op.drop_index("ix_executions_tenant_submitted", table_name="executions")
    op.drop_table("execution_tasks")
