"""Adapters: a hash of each adapter's content (weights + LoRA configuration), to spot identical registrations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Null for adapters registered before: they are not compared (their files are not read back here).
    with op.batch_alter_table('adapter', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.create_index(batch_op.f('ix_adapter_content_hash'), ['content_hash'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('adapter', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adapter_content_hash'))
        batch_op.drop_column('content_hash')
