"""Slurm's batch features: job arrays (each task's array and index) and time limits.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('array_job', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('array_index', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('timed_out', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index('ix_jobs_array_job', ['array_job'])


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_array_job')
        batch_op.drop_column('timed_out')
        batch_op.drop_column('array_index')
        batch_op.drop_column('array_job')
