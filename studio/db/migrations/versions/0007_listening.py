"""Listening and evaluation: ratings, blind A/B tests (pairs, votes), automatic scores and evaluation runs.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('abtest',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('model_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('side_a', sa.JSON(), nullable=False),
    sa.Column('side_b', sa.JSON(), nullable=False),
    sa.Column('prompts', sa.JSON(), nullable=False),
    sa.Column('seeds_per_prompt', sa.Integer(), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('secret', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('closed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('abtest', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_abtest_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_abtest_model_id'), ['model_id'], unique=False)

    op.create_table('evaluation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('adapter_id', sa.Integer(), nullable=True),
    sa.Column('scorer', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('prompts', sa.JSON(), nullable=False),
    sa.Column('seeds', sa.JSON(), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('mean_score', sa.Float(), nullable=True),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapter.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('evaluation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evaluation_adapter_id'), ['adapter_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_evaluation_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_evaluation_model_id'), ['model_id'], unique=False)

    op.create_table('abtest_pair',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('abtest_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('prompt', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('job_a_id', sa.Integer(), nullable=True),
    sa.Column('job_b_id', sa.Integer(), nullable=True),
    sa.Column('clip_a', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('clip_b', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.ForeignKeyConstraint(['abtest_id'], ['abtest.id'], ),
    sa.ForeignKeyConstraint(['job_a_id'], ['job.id'], ),
    sa.ForeignKeyConstraint(['job_b_id'], ['job.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('abtest_id', 'position', name='uq_abtest_pair_position')
    )
    with op.batch_alter_table('abtest_pair', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_abtest_pair_abtest_id'), ['abtest_id'], unique=False)

    op.create_table('rating',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('user', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('stars', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'user', name='uq_rating_job_user')
    )
    with op.batch_alter_table('rating', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rating_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rating_user'), ['user'], unique=False)

    op.create_table('score',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('scorer', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'scorer', name='uq_score_job_scorer')
    )
    with op.batch_alter_table('score', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_score_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_score_scorer'), ['scorer'], unique=False)

    op.create_table('abtest_vote',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('abtest_id', sa.Integer(), nullable=False),
    sa.Column('pair_id', sa.Integer(), nullable=False),
    sa.Column('listener', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('choice', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['abtest_id'], ['abtest.id'], ),
    sa.ForeignKeyConstraint(['pair_id'], ['abtest_pair.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('pair_id', 'listener', name='uq_abtest_vote_pair_listener')
    )
    with op.batch_alter_table('abtest_vote', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_abtest_vote_abtest_id'), ['abtest_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_abtest_vote_listener'), ['listener'], unique=False)
        batch_op.create_index(batch_op.f('ix_abtest_vote_pair_id'), ['pair_id'], unique=False)

    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('abtest_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('evaluation_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_job_abtest_id'), ['abtest_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_job_evaluation_id'), ['evaluation_id'], unique=False)
        batch_op.create_foreign_key('fk_job_evaluation_id', 'evaluation', ['evaluation_id'], ['id'])
        batch_op.create_foreign_key('fk_job_abtest_id', 'abtest', ['abtest_id'], ['id'])



def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_constraint('fk_job_abtest_id', type_='foreignkey')
        batch_op.drop_constraint('fk_job_evaluation_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_job_evaluation_id'))
        batch_op.drop_index(batch_op.f('ix_job_abtest_id'))
        batch_op.drop_column('evaluation_id')
        batch_op.drop_column('abtest_id')

    with op.batch_alter_table('abtest_vote', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_abtest_vote_pair_id'))
        batch_op.drop_index(batch_op.f('ix_abtest_vote_listener'))
        batch_op.drop_index(batch_op.f('ix_abtest_vote_abtest_id'))

    op.drop_table('abtest_vote')
    with op.batch_alter_table('score', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_score_scorer'))
        batch_op.drop_index(batch_op.f('ix_score_job_id'))

    op.drop_table('score')
    with op.batch_alter_table('rating', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rating_user'))
        batch_op.drop_index(batch_op.f('ix_rating_job_id'))

    op.drop_table('rating')
    with op.batch_alter_table('abtest_pair', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_abtest_pair_abtest_id'))

    op.drop_table('abtest_pair')
    with op.batch_alter_table('evaluation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evaluation_model_id'))
        batch_op.drop_index(batch_op.f('ix_evaluation_created_at'))
        batch_op.drop_index(batch_op.f('ix_evaluation_adapter_id'))

    op.drop_table('evaluation')
    with op.batch_alter_table('abtest', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_abtest_model_id'))
        batch_op.drop_index(batch_op.f('ix_abtest_created_at'))

    op.drop_table('abtest')
