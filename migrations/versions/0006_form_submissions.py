"""form submissions: one-time tokens of create forms; a version number on findings

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 17:14:51.444941

``form_submissions`` holds the hashed one-time token of every create form (and API
``Idempotency-Key``) that went through, written in the same transaction as what it
created: the unique ``token_hash`` turns a double submission into a redirect to the
first result. ``findings.version`` moves with every edit or level change (optimistic
concurrency for edit forms and the API's ``If-Match``); existing findings start at one
plus the number of revisions they already have.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('form_submissions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('target_type', sa.String(length=32), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_form_submissions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_form_submissions')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_form_submissions_token_hash'))
    )
    with op.batch_alter_table('form_submissions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_form_submissions_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_form_submissions_user_id'), ['user_id'], unique=False)

    # a plain ADD COLUMN, not a batch operation: on SQLite a batch would rebuild the table
    # and lose the full-text search triggers made by 0002
    op.add_column('findings', sa.Column('version', sa.Integer(), server_default=sa.text('1'), nullable=False))
    # only edited findings are touched (ADD COLUMN with a constant default rewrites no
    # row on PostgreSQL): the migration stays short on a large, mostly unedited forum
    op.execute("UPDATE findings SET version = 1 + (SELECT count(*) FROM finding_revisions "
               "WHERE finding_revisions.finding_id = findings.id) "
               "WHERE EXISTS (SELECT 1 FROM finding_revisions "
               "WHERE finding_revisions.finding_id = findings.id)")


def downgrade() -> None:
    # plain DROP COLUMN (SQLite >= 3.35 and PostgreSQL): keeps the search triggers
    op.execute("ALTER TABLE findings DROP COLUMN version")

    with op.batch_alter_table('form_submissions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_form_submissions_user_id'))
        batch_op.drop_index(batch_op.f('ix_form_submissions_created_at'))

    op.drop_table('form_submissions')
