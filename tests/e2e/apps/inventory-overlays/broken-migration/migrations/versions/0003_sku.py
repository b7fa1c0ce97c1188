"""item.sku, NOT NULL without a default: SQLite refuses to add it to a table

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("item", sa.Column("sku", sa.String(length=20), nullable=False))


def downgrade():
    op.drop_column("item", "sku")
