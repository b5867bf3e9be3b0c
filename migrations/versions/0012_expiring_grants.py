"""expiring grants: clearance end dates, NDA renewal, organizations' re-vetting

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 14:00:00

``users.clearance_expires_at``: a clearance grant's end (NULL: none).
``organizations.vetted_at``: when an admin last trusted or re-vetted the organization;
existing organizations start their re-vetting clock at this upgrade (not at their old
``status_changed_at``), so an upgrade never cuts a trusted organization off at once.
``nda_acknowledgements`` loses its unique (user, key, version): renewing signs the same
version again (a new row; the latest counts), so it becomes a plain index.
``expiry_notices`` remembers which warning e-mails went, so a daily run sends each once.
"""
from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('expiry_notices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('subject_id', sa.Integer(), nullable=False),
    sa.Column('detail', sa.String(length=64), nullable=False),
    sa.Column('lapses_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_expiry_notices')),
    sa.UniqueConstraint('kind', 'subject_id', 'detail', 'lapses_at', name=op.f('uq_expiry_notices_kind_subject_id_detail_lapses_at'))
    )
    op.add_column('users', sa.Column('clearance_expires_at', sa.DateTime(timezone=True), nullable=True))
    # NULL means never vetted; existing organizations count as vetted now
    op.add_column('organizations', sa.Column('vetted_at', sa.DateTime(timezone=True), nullable=True))
    organizations = sa.table('organizations', sa.column('vetted_at', sa.DateTime(timezone=True)))
    op.execute(organizations.update().values(vetted_at=datetime.now(UTC)))
    with op.batch_alter_table('nda_acknowledgements', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_nda_acknowledgements_user_id_nda_key_version'), type_='unique')
        batch_op.create_index('ix_nda_acknowledgements_user_key_version', ['user_id', 'nda_key', 'version'], unique=False)


def downgrade() -> None:
    # keep the latest signature of each (user, key, version): the unique comes back
    op.execute("DELETE FROM nda_acknowledgements WHERE id NOT IN (SELECT max(id) FROM "
               "nda_acknowledgements GROUP BY user_id, nda_key, version)")
    with op.batch_alter_table('nda_acknowledgements', schema=None) as batch_op:
        batch_op.drop_index('ix_nda_acknowledgements_user_key_version')
        batch_op.create_unique_constraint(batch_op.f('uq_nda_acknowledgements_user_id_nda_key_version'), ['user_id', 'nda_key', 'version'])
    op.execute("ALTER TABLE organizations DROP COLUMN vetted_at")
    op.execute("ALTER TABLE users DROP COLUMN clearance_expires_at")
    op.drop_table('expiry_notices')
