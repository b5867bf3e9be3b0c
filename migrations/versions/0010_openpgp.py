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
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('openpgp_key', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('openpgp_fingerprint', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('openpgp_expires_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('openpgp_expires_at')
        batch_op.drop_column('openpgp_fingerprint')
        batch_op.drop_column('openpgp_key')
