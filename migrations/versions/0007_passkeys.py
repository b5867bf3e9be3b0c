"""passkeys; the proof behind each API token

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 13:39:22.885687

``passkeys`` holds each user's WebAuthn credentials (public key, signature counter, name,
last use). ``api_tokens.proof`` records how the token's maker proved who they were: a
token reaches a level that needs a passkey only if it was made from a passkey proof (or
on the command line). Tokens made before this revision were made by signed-in users whose
sign-in asked for their second factor, so they keep what they could read (``totp``:
levels that need any second factor), and not the new passkey levels.
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('passkeys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('credential_id', sa.String(length=1400), nullable=False),
    sa.Column('user_handle', sa.String(length=100), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=False),
    sa.Column('sign_count', sa.Integer(), nullable=False),
    sa.Column('transports', sa.String(length=200), nullable=False),
    sa.Column('aaguid', sa.String(length=36), nullable=False),
    sa.Column('backed_up', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_passkeys_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_passkeys')),
    sa.UniqueConstraint('credential_id', name=op.f('uq_passkeys_credential_id'))
    )
    with op.batch_alter_table('passkeys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_passkeys_user_id'), ['user_id'], unique=False)

    op.add_column('api_tokens', sa.Column('proof', sa.String(length=16), server_default='password', nullable=False))
    op.execute("UPDATE api_tokens SET proof = 'totp'")



def downgrade() -> None:
    op.execute("ALTER TABLE api_tokens DROP COLUMN proof")

    with op.batch_alter_table('passkeys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_passkeys_user_id'))

    op.drop_table('passkeys')
