"""SCIM deprovisioning: a bearer token per organization; what SCIM did to an account

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 14:20:03.348809

``scim_tokens`` keeps the SHA-256 of each organization's SCIM token. On ``users``,
``scim_external_id`` is the provider's id for the person, ``scim_deactivated_at`` marks an
account SCIM deactivated (only such an account may SCIM re-activate), and
``scim_deleted_at`` one SCIM deleted (kept, disabled, and gone from SCIM).
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scim_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_scim_tokens_org_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scim_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_scim_tokens_token_hash'))
    )
    with op.batch_alter_table('scim_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scim_tokens_org_id'), ['org_id'], unique=False)

    # plain ADD/DROP COLUMN on users (see 0008)
    op.add_column('users', sa.Column('scim_external_id', sa.String(length=255), nullable=True))
    op.add_column('users', sa.Column('scim_deactivated_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('users', sa.Column('scim_deleted_at', sa.DateTime(timezone=True), nullable=True))



def downgrade() -> None:
    for column in ('scim_deleted_at', 'scim_deactivated_at', 'scim_external_id'):
        op.execute(f"ALTER TABLE users DROP COLUMN {column}")

    with op.batch_alter_table('scim_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scim_tokens_org_id'))

    op.drop_table('scim_tokens')
