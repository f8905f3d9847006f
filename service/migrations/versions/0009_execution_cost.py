"""the cost of a finished execution, settled once its late events are in

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PARTS = ("cost_compute_usd", "cost_storage_usd", "cost_network_usd")


def upgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        for name in PARTS:
            batch_op.add_column(sa.Column(name, sa.Numeric(precision=18, scale=6), nullable=True))
        batch_op.add_column(sa.Column("cost_settled_for", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_column("cost_settled_for")
        for name in reversed(PARTS):
            batch_op.drop_column(name)
