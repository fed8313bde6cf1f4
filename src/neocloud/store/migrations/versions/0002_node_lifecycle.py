"""Node lifecycle: a stage and a hot-spare mark per node, its moves, health signals; each job's
interruptions and goodput ledger.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stage', sa.String(length=16), nullable=False, server_default='production'))
        batch_op.add_column(sa.Column('spare', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("UPDATE nodes SET stage = CASE WHEN draining THEN 'draining' WHEN cordoned THEN 'cordoned' "
               "ELSE 'production' END")
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_column('cordoned')
        batch_op.drop_column('draining')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('interruptions', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('ledger', sa.JSON(), nullable=False, server_default='{}'))
    op.create_table('node_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node', sa.String(length=255), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('from_stage', sa.String(length=16), nullable=False),
    sa.Column('to_stage', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_node_events_node', 'node_events', ['node'], unique=False)
    op.create_table('health_signals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node', sa.String(length=255), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('observed_at', sa.Float(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('rule', sa.Text(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_health_signals_node', 'health_signals', ['node'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_health_signals_node', table_name='health_signals')
    op.drop_table('health_signals')
    op.drop_index('ix_node_events_node', table_name='node_events')
    op.drop_table('node_events')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('ledger')
        batch_op.drop_column('interruptions')
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cordoned', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('draining', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("UPDATE nodes SET cordoned = (stage <> 'production'), draining = (stage = 'draining')")
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_column('spare')
        batch_op.drop_column('stage')
