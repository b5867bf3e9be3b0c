"""single sign-on

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 14:02:23.240034

``org_sso`` holds each organization's OpenID provider (issuer, client id, the client
secret sealed under the keyring's app key, whether passwords stay allowed, group rules);
``sso_sessions`` the sessions single sign-on opened, with the provider's ``sub`` and
``sid`` for back-channel logout; ``users.sso_subject`` links an account to its person at
the provider.
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('org_sso',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('issuer', sa.String(length=500), nullable=False),
    sa.Column('client_id', sa.String(length=255), nullable=False),
    sa.Column('client_secret_enc', sa.Text(), nullable=False),
    sa.Column('passwords_allowed', sa.Boolean(), nullable=False),
    sa.Column('group_clearances', sa.Text(), nullable=False),
    sa.Column('allowed_groups', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_org_sso_org_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_org_sso')),
    sa.UniqueConstraint('org_id', name=op.f('uq_org_sso_org_id'))
    )
    op.create_table('sso_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('sub', sa.String(length=255), nullable=False),
    sa.Column('sid', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_sso_sessions_org_id_organizations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sso_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sso_sessions')),
    sa.UniqueConstraint('key', name=op.f('uq_sso_sessions_key'))
    )
    with op.batch_alter_table('sso_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_sso_sessions_org_sid', ['org_id', 'sid'], unique=False)
        batch_op.create_index(batch_op.f('ix_sso_sessions_user_id'), ['user_id'], unique=False)

    # plain ADD/DROP COLUMN on users, never a batch: on SQLite a batch rebuilds the table,
    # and dropping users fails while other tables' rows point at it
    op.add_column('users', sa.Column('sso_subject', sa.String(length=255), nullable=True))
    op.create_index(op.f('ix_users_sso_subject'), 'users', ['sso_subject'], unique=False)



def downgrade() -> None:
    op.drop_index(op.f('ix_users_sso_subject'), table_name='users')
    op.execute("ALTER TABLE users DROP COLUMN sso_subject")

    with op.batch_alter_table('sso_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sso_sessions_user_id'))
        batch_op.drop_index('ix_sso_sessions_org_sid')

    op.drop_table('sso_sessions')
    op.drop_table('org_sso')
