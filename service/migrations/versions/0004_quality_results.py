"""quality results

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The results of an execution's quality checks (a JSON list), read from Airflow when the run finishes.
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quality_results", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_column("quality_results")
