"""templates: tenant templates, and the template provenance of pipelines

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_templates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("template_id", sa.String(length=150), nullable=False),
        sa.Column("version", sa.String(length=40), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "template_id", "version", name="uq_tenant_templates_version"),
    )
    with op.batch_alter_table("tenant_templates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tenant_templates_tenant_id"), ["tenant_id"], unique=False)
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("template_id", sa.String(length=150), nullable=True))
        batch_op.add_column(sa.Column("template_version", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("template_inputs", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_column("template_inputs")
        batch_op.drop_column("template_version")
        batch_op.drop_column("template_id")
    with op.batch_alter_table("tenant_templates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tenant_templates_tenant_id"))
    op.drop_table("tenant_templates")
