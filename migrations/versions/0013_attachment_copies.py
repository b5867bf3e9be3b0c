"""attachment copies: every per-reader stamped copy and view-only view, for tracing

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 14:40:00

``attachment_copies`` records each copy Enclave made for a reader (its embedded copy id,
its printed code, the attachment, finding, reader, level, address and time). The
attachment and finding are plain ids, not foreign keys: a record outlives its file.
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('attachment_copies',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('code', sa.String(length=11), nullable=False),
    sa.Column('attachment_id', sa.String(length=32), nullable=False),
    sa.Column('finding_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('level', sa.String(length=64), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_attachment_copies_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attachment_copies')),
    sa.UniqueConstraint('code', name=op.f('uq_attachment_copies_code'))
    )
    with op.batch_alter_table('attachment_copies', schema=None) as batch_op:
        batch_op.create_index('ix_attachment_copies_attachment_created', ['attachment_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_attachment_copies_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('attachment_copies', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_attachment_copies_user_id'))
        batch_op.drop_index('ix_attachment_copies_attachment_created')
    op.drop_table('attachment_copies')
