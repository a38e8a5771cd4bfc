"""Training: datasets and their clips, training runs and their checkpoints; audition clips on jobs.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dataset',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('model_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('sample_rate', sa.Integer(), nullable=False),
    sa.Column('channels', sa.Integer(), nullable=False),
    sa.Column('max_clip_s', sa.Float(), nullable=False),
    sa.Column('overlap_s', sa.Float(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('folder', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('content_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('deleted_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('dataset', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_dataset_deleted_at'), ['deleted_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_dataset_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dataset_name'), ['name'], unique=False)

    op.create_table('dataset_clip',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('source_file', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('start_s', sa.Float(), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('caption', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('excluded', sa.Boolean(), nullable=False),
    sa.Column('file', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('hash', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dataset_id', 'position', name='uq_dataset_clip_position')
    )
    with op.batch_alter_table('dataset_clip', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_clip_dataset_id'), ['dataset_id'], unique=False)

    op.create_table('training_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('method', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('model_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('base_model_revision', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('base_weights_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('dataset_id', sa.Integer(), nullable=True),
    sa.Column('dataset_version', sa.Integer(), nullable=True),
    sa.Column('dataset_hash', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('abtest_id', sa.Integer(), nullable=True),
    sa.Column('start_adapter_id', sa.Integer(), nullable=True),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('audition_prompts', sa.JSON(), nullable=False),
    sa.Column('audition_seeds', sa.JSON(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('error_code', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('total_steps', sa.Integer(), nullable=False),
    sa.Column('loss', sa.Float(), nullable=True),
    sa.Column('folder', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('auto_register', sa.Boolean(), nullable=False),
    sa.Column('adapter_id', sa.Integer(), nullable=True),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['abtest_id'], ['abtest.id'], ),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapter.id'], ),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], ),
    sa.ForeignKeyConstraint(['start_adapter_id'], ['adapter.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('training_run', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_training_run_abtest_id'), ['abtest_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_training_run_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_training_run_dataset_id'), ['dataset_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_training_run_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_training_run_status'), ['status'], unique=False)

    op.create_table('training_checkpoint',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('loss', sa.Float(), nullable=True),
    sa.Column('folder', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('adapter_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapter.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['training_run.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', 'step', name='uq_training_checkpoint_step')
    )
    with op.batch_alter_table('training_checkpoint', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_training_checkpoint_run_id'), ['run_id'], unique=False)

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('training_run_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('checkpoint_step', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_job_training_run_id'), ['training_run_id'], unique=False)
        batch_op.create_foreign_key('fk_job_training_run_id', 'training_run', ['training_run_id'], ['id'])



def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_constraint('fk_job_training_run_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_job_training_run_id'))
        batch_op.drop_column('checkpoint_step')
        batch_op.drop_column('training_run_id')

    with op.batch_alter_table('training_checkpoint', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_training_checkpoint_run_id'))

    op.drop_table('training_checkpoint')
    with op.batch_alter_table('training_run', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_training_run_status'))
        batch_op.drop_index(batch_op.f('ix_training_run_model_id'))
        batch_op.drop_index(batch_op.f('ix_training_run_dataset_id'))
        batch_op.drop_index(batch_op.f('ix_training_run_created_at'))
        batch_op.drop_index(batch_op.f('ix_training_run_abtest_id'))

    op.drop_table('training_run')
    with op.batch_alter_table('dataset_clip', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_clip_dataset_id'))

    op.drop_table('dataset_clip')
    with op.batch_alter_table('dataset', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_name'))
        batch_op.drop_index(batch_op.f('ix_dataset_model_id'))
        batch_op.drop_index(batch_op.f('ix_dataset_deleted_at'))
        batch_op.drop_index(batch_op.f('ix_dataset_created_at'))

    op.drop_table('dataset')
