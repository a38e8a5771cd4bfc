"""Seeds (0 to 2**32 - 1) and file sizes (adapters up to 5 GB) as 64-bit integers: PostgreSQL's integer is 32-bit,
so half of the random seeds failed there. SQLite's INTEGER is 64-bit already: nothing changes on SQLite.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

COLUMNS = [('job', 'seed'), ('abtest_pair', 'seed'), ('adapter', 'size_bytes'), ('audio_upload', 'size_bytes')]


def upgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
