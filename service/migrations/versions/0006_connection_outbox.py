"""connections reach Airflow through an outbox

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Connections stored before this revision were materialised in Airflow by the request that stored them.
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("airflow_version", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("airflow_synced_version", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("airflow_sync_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_column("airflow_sync_error")
        batch_op.drop_column("airflow_synced_version")
        batch_op.drop_column("airflow_version")
