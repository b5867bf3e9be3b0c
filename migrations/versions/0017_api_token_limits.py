"""API tokens: scopes, expiry, last-use address, revocation reason

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 17:40:00

Tokens made before this get the ``read write`` scopes (what a member's token could do;
reviewers' and admins' tokens lose the review and admin actions until remade with those
scopes) and expire 30 days after the upgrade (the default policy's token lifetime).
"""
from datetime import UTC, datetime, timedelta

from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_used_ip', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('revoked_reason', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('scopes', sa.String(length=64), server_default='read',
                                      nullable=False))
    tokens = sa.table('api_tokens', sa.column('expires_at', sa.DateTime(timezone=True)),
                      sa.column('scopes', sa.String))
    op.execute(tokens.update().values(
        expires_at=datetime.now(UTC) + timedelta(days=30), scopes='read write'))
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.alter_column('expires_at', existing_type=sa.DateTime(timezone=True),
                              nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('scopes')
        batch_op.drop_column('expires_at')
        batch_op.drop_column('revoked_reason')
        batch_op.drop_column('last_used_ip')
