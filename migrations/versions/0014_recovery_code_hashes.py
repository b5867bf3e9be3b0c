"""recovery codes hashed with Argon2id: room for the hash

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 17:30:00

``recovery_codes.code_hash`` held 64 hex digits (unsalted SHA-256 of a 48-bit code); new
codes are 80-bit and stored as Argon2id hashes (about 100 characters). Existing rows
keep their SHA-256 hash and still work once each; the 2FA page asks their owners to make
new codes. The downgrade deletes Argon2 rows that would not fit (their owners make new
codes after it).
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('recovery_codes', schema=None) as batch_op:
        batch_op.alter_column('code_hash', existing_type=sa.String(length=64),
                              type_=sa.String(length=255), existing_nullable=False)


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM recovery_codes WHERE length(code_hash) > 64"))
    with op.batch_alter_table('recovery_codes', schema=None) as batch_op:
        batch_op.alter_column('code_hash', existing_type=sa.String(length=255),
                              type_=sa.String(length=64), existing_nullable=False)
