"""audit chain keyed: each entry says how its hash is made

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 17:55:00

``audit_log.scheme`` is ``hmac-sha256`` for entries chained with the key from the
keyring (every entry written from now on) and ``sha256`` for the entries already there,
which were chained with plain SHA-256. Those stay as they are (rewriting them would need
the keyring here, and would erase the evidence a copy of the old hashes holds); `enclave
init` then appends a keyed entry whose link covers the last of them, and `audit verify`
accepts plain entries only before the first keyed one. The downgrade drops the column:
the old code then sees keyed hashes it cannot check, so after a downgrade `audit verify`
reports the first keyed entry as altered (the entries themselves are kept).
"""
from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scheme', sa.String(length=16), nullable=False,
                                      server_default='sha256'))


def downgrade() -> None:
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_column('scheme')
