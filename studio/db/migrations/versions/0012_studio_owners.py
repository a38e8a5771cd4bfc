"""The studio that runs each A/B test, evaluation run and training run (studios sharing one PostgreSQL database
take up only their own after a restart).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('abtest', schema=None) as batch_op:
        batch_op.add_column(sa.Column('runner', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))
        batch_op.create_index(batch_op.f('ix_abtest_runner'), ['runner'], unique=False)

    with op.batch_alter_table('evaluation', schema=None) as batch_op:
        batch_op.add_column(sa.Column('runner', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))
        batch_op.create_index(batch_op.f('ix_evaluation_runner'), ['runner'], unique=False)

    with op.batch_alter_table('training_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('runner', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))
        batch_op.create_index(batch_op.f('ix_training_run_runner'), ['runner'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('training_run', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_training_run_runner'))
        batch_op.drop_column('runner')

    with op.batch_alter_table('evaluation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evaluation_runner'))
        batch_op.drop_column('runner')

    with op.batch_alter_table('abtest', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_abtest_runner'))
        batch_op.drop_column('runner')
