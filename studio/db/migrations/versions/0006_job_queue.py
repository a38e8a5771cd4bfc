"""Jobs go through a queue: who submitted them, when they started, their batch, their codes and error code.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('error_code', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('submitted_by', sa.String(), nullable=False, server_default='local'))
        batch_op.add_column(sa.Column('codes_file', sa.String(), nullable=True))
        batch_op.add_column(sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('batch_size', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        for name in ('batch_size', 'started_at', 'codes_file', 'submitted_by', 'error_code'):
            batch_op.drop_column(name)
