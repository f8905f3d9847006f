"""admission locks, encrypted http headers

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written (upserted) by every execute, per tenant and per pipeline: they serialise the check of the
    # rate limit and of max_active_runs with the insert of the execution (service/executions/limits.py).
    op.create_table(
        "admission_locks",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("locked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    # Every header value of an http connection is a secret: encrypted here, masked in `properties`.
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("headers_encrypted", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_column("headers_encrypted")
    op.drop_table("admission_locks")
