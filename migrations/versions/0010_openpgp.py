"""OpenPGP-encrypted e-mail: a member's public key, its fingerprint and expiry

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 14:34:17.333151

``users.openpgp_key`` is the member's ASCII-armored public key (notifications carry the
finding's text encrypted to it), with its fingerprint (shown on the profile) and expiry
(warned about ahead; an expired key is not used).
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD/DROP COLUMN on users (see 0008)
    op.add_column('users', sa.Column('openpgp_key', sa.Text(), nullable=True))
    op.add_column('users', sa.Column('openpgp_fingerprint', sa.String(length=64), nullable=True))
    op.add_column('users', sa.Column('openpgp_expires_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for column in ('openpgp_expires_at', 'openpgp_fingerprint', 'openpgp_key'):
        op.execute(f"ALTER TABLE users DROP COLUMN {column}")
