"""Adapters: the LoRA adapter registry, and the adapter each job used.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('adapter',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('base_model', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('base_model_revision', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('base_weights_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('lora_config', sa.JSON(), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('training_dataset', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('training_config', sa.JSON(), nullable=True),
    sa.Column('training_metrics', sa.JSON(), nullable=True),
    sa.Column('training_run_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('trained_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('usage_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('deleted_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', 'version', name='uq_adapter_name_version')
    )
    with op.batch_alter_table('adapter', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adapter_base_model'), ['base_model'], unique=False)
        batch_op.create_index(batch_op.f('ix_adapter_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_adapter_deleted_at'), ['deleted_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_adapter_name'), ['name'], unique=False)

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('adapter_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_job_adapter_id'), ['adapter_id'], unique=False)
        batch_op.create_foreign_key('fk_job_adapter_id', 'adapter', ['adapter_id'], ['id'])



def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_constraint('fk_job_adapter_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_job_adapter_id'))
        batch_op.drop_column('adapter_id')

    with op.batch_alter_table('adapter', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adapter_name'))
        batch_op.drop_index(batch_op.f('ix_adapter_deleted_at'))
        batch_op.drop_index(batch_op.f('ix_adapter_created_at'))
        batch_op.drop_index(batch_op.f('ix_adapter_base_model'))

    op.drop_table('adapter')
