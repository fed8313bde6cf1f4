"""Billing: contracts and their versions, price lists, usage per attempt, SLA credits; how a running
attempt is billed.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('contracts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('contract', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('gpu_type', sa.String(length=64), nullable=False),
    sa.Column('gpus', sa.Integer(), nullable=False),
    sa.Column('start_at', sa.Float(), nullable=False),
    sa.Column('end_at', sa.Float(), nullable=False),
    sa.Column('price', sa.Numeric(precision=14, scale=4), nullable=False),
    sa.Column('take_or_pay', sa.Boolean(), nullable=False),
    sa.Column('site', sa.String(length=255), nullable=True),
    sa.Column('fabric', sa.String(length=255), nullable=True),
    sa.Column('valid_from', sa.Float(), nullable=False),
    sa.Column('valid_to', sa.Float(), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_contracts_contract', 'contracts', ['contract'], unique=False)
    op.create_index('ix_contracts_tenant', 'contracts', ['tenant'], unique=False)
    op.create_table('prices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('gpu_type', sa.String(length=64), nullable=False),
    sa.Column('usage_class', sa.String(length=16), nullable=False),
    sa.Column('price', sa.Numeric(precision=14, scale=4), nullable=False),
    sa.Column('since', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('usage',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('usage_class', sa.String(length=16), nullable=False),
    sa.Column('gpu_type', sa.String(length=64), nullable=False),
    sa.Column('site', sa.String(length=255), nullable=False),
    sa.Column('gpus', sa.Float(), nullable=False),
    sa.Column('start_at', sa.Float(), nullable=False),
    sa.Column('end_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'attempt')
    )
    op.create_index('ix_usage_job_id', 'usage', ['job_id'], unique=False)
    op.create_index('ix_usage_tenant', 'usage', ['tenant'], unique=False)
    op.create_index('ix_usage_start_at', 'usage', ['start_at'], unique=False)
    op.create_index('ix_usage_end_at', 'usage', ['end_at'], unique=False)
    op.create_table('credits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant', sa.String(length=63), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('gpu_type', sa.String(length=64), nullable=False),
    sa.Column('gpu_hours', sa.Numeric(precision=18, scale=6), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_credits_tenant', 'credits', ['tenant'], unique=False)
    op.create_index('ix_credits_at', 'credits', ['at'], unique=False)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('usage_class', sa.String(length=16), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('usage_class')
    op.drop_table('credits')
    op.drop_table('usage')
    op.drop_table('prices')
    op.drop_index('ix_contracts_tenant', table_name='contracts')
    op.drop_index('ix_contracts_contract', table_name='contracts')
    op.drop_table('contracts')
