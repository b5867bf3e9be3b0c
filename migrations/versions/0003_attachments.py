"""attachments: encrypted files of findings (metadata and wrapped data keys)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 14:16:07.526123

The file bytes live encrypted in the blob store, not here. ``wrapped_key`` NULL means
the attachment was deleted (crypto-shredded). Downgrading drops the table and with it
every wrapped data key: the blobs left behind can no longer be decrypted (and
``enclave storage gc`` would remove them after an upgrade).
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('attachments',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('finding_id', sa.Integer(), nullable=False),
    sa.Column('uploader_id', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('content_type', sa.String(length=127), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256_sealed', sa.LargeBinary(), nullable=False),
    sa.Column('blob_id', sa.String(length=64), nullable=False),
    sa.Column('wrapped_key', sa.LargeBinary(), nullable=True),
    sa.Column('kek_level', sa.String(length=64), nullable=False),
    sa.Column('kek_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], name=op.f('fk_attachments_finding_id_findings'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['uploader_id'], ['users.id'], name=op.f('fk_attachments_uploader_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attachments')),
    sa.UniqueConstraint('blob_id', name=op.f('uq_attachments_blob_id'))
    )
    with op.batch_alter_table('attachments', schema=None) as batch_op:
        batch_op.create_index('ix_attachments_finding_created', ['finding_id', 'created_at'], unique=False)
        batch_op.create_index('ix_attachments_kek', ['kek_level', 'kek_version'], unique=False)
        batch_op.create_index(batch_op.f('ix_attachments_uploader_id'), ['uploader_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('attachments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_attachments_uploader_id'))
        batch_op.drop_index('ix_attachments_kek')
        batch_op.drop_index('ix_attachments_finding_created')

    op.drop_table('attachments')
