"""Generation settings: each model's stored settings and their audit trail.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('generation_config',
    sa.Column('model_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('values', sa.JSON(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_by', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint('model_id')
    )
    op.create_table('generation_config_change',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('changed_by', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('changed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('old_values', sa.JSON(), nullable=False),
    sa.Column('new_values', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('generation_config_change', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_generation_config_change_changed_at'), ['changed_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_generation_config_change_model_id'), ['model_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('generation_config_change', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_generation_config_change_model_id'))
        batch_op.drop_index(batch_op.f('ix_generation_config_change_changed_at'))

    op.drop_table('generation_config_change')
    op.drop_table('generation_config')
