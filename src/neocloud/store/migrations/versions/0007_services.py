"""Services: long-running replicas behind the gateway, each a job that names its service; what the
gateway answered, per hour (requests, tokens).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'services',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('tenant', sa.String(63), nullable=False),
        sa.Column('name', sa.String(63), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('generation', sa.Integer(), nullable=False),
        sa.Column('replicas', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(16), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
        sa.UniqueConstraint('tenant', 'name'),
    )
    op.create_index('ix_services_tenant', 'services', ['tenant'])
    op.create_table(
        'service_usage',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('tenant', sa.String(63), nullable=False),
        sa.Column('service', sa.String(63), nullable=False),
        sa.Column('model', sa.String(255), nullable=False),
        sa.Column('hour', sa.Float(), nullable=False),
        sa.Column('requests', sa.Integer(), nullable=False),
        sa.Column('errors', sa.Integer(), nullable=False),
        sa.Column('prompt_tokens', sa.BigInteger(), nullable=False),
        sa.Column('completion_tokens', sa.BigInteger(), nullable=False),
        sa.UniqueConstraint('tenant', 'service', 'model', 'hour'),
    )
    op.create_index('ix_service_usage_tenant', 'service_usage', ['tenant'])
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('service_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('generation', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('address', sa.String(255), nullable=True))
        batch_op.create_index('ix_jobs_service_id', ['service_id'])
        batch_op.create_foreign_key('fk_jobs_service_id', 'services', ['service_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_jobs_service_id', type_='foreignkey')
        batch_op.drop_index('ix_jobs_service_id')
        batch_op.drop_column('address')
        batch_op.drop_column('generation')
        batch_op.drop_column('service_id')
    op.drop_index('ix_service_usage_tenant', 'service_usage')
    op.drop_table('service_usage')
    op.drop_index('ix_services_tenant', 'services')
    op.drop_table('services')
