"""responses: agree / disagree and a few fixed reactions on findings and replies

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 17:49:44

One row per (finding or reply, reader, kind); the primary key is what keeps a reader to
one response of each kind. Rows go with their finding, reply or user (ON DELETE CASCADE).
The downgrade drops both tables (the responses are lost).
"""
from alembic import op
import sqlalchemy as sa


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('finding_reactions',
    sa.Column('finding_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], name=op.f('fk_finding_reactions_finding_id_findings'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_finding_reactions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('finding_id', 'user_id', 'kind', name=op.f('pk_finding_reactions'))
    )
    with op.batch_alter_table('finding_reactions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_finding_reactions_user_id'), ['user_id'], unique=False)
    op.create_table('reply_reactions',
    sa.Column('reply_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['reply_id'], ['replies.id'], name=op.f('fk_reply_reactions_reply_id_replies'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_reply_reactions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('reply_id', 'user_id', 'kind', name=op.f('pk_reply_reactions'))
    )
    with op.batch_alter_table('reply_reactions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reply_reactions_user_id'), ['user_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('reply_reactions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reply_reactions_user_id'))
    op.drop_table('reply_reactions')
    with op.batch_alter_table('finding_reactions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_finding_reactions_user_id'))
    op.drop_table('finding_reactions')
