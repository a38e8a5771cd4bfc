"""Jobs record what their audio file measures: integrated loudness and true peak.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'  # 0004_adapter_content_hash (the adapters branch)
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('loudness_lufs', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('true_peak_dbtp', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('true_peak_dbtp')
        batch_op.drop_column('loudness_lufs')
