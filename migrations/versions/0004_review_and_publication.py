"""review and publication: flags, publication and declassification requests, reviews,
escalations, the request thread and history, organization affiliations, conflicts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 14:17:03.194620

New tables only. Downgrading drops them, and with them every review and the record of
what was released (the audit log keeps its entries).
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('org_affiliations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('org_a_id', sa.Integer(), nullable=False),
    sa.Column('org_b_id', sa.Integer(), nullable=False),
    sa.Column('note', sa.String(length=300), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('org_a_id < org_b_id', name=op.f('ck_org_affiliations_ordered_pair')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_org_affiliations_created_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['org_a_id'], ['organizations.id'], name=op.f('fk_org_affiliations_org_a_id_organizations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['org_b_id'], ['organizations.id'], name=op.f('fk_org_affiliations_org_b_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_org_affiliations')),
    sa.UniqueConstraint('org_a_id', 'org_b_id', name=op.f('uq_org_affiliations_org_a_id_org_b_id'))
    )
    with op.batch_alter_table('org_affiliations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_org_affiliations_org_a_id'), ['org_a_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_org_affiliations_org_b_id'), ['org_b_id'], unique=False)

    op.create_table('review_conflicts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('finding_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], name=op.f('fk_review_conflicts_finding_id_findings'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_review_conflicts_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_conflicts')),
    sa.UniqueConstraint('user_id', 'finding_id', name=op.f('uq_review_conflicts_user_id_finding_id'))
    )
    with op.batch_alter_table('review_conflicts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_conflicts_finding_id'), ['finding_id'], unique=False)

    op.create_table('review_flags',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('finding_id', sa.Integer(), nullable=False),
    sa.Column('flagger_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('suggested_level', sa.String(length=64), nullable=False),
    sa.Column('level_at_flag', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('outcome_level', sa.String(length=64), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('resolved_by_id', sa.Integer(), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], name=op.f('fk_review_flags_finding_id_findings'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['flagger_id'], ['users.id'], name=op.f('fk_review_flags_flagger_id_users')),
    sa.ForeignKeyConstraint(['resolved_by_id'], ['users.id'], name=op.f('fk_review_flags_resolved_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_flags'))
    )
    with op.batch_alter_table('review_flags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_flags_finding_id'), ['finding_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_review_flags_flagger_id'), ['flagger_id'], unique=False)
        batch_op.create_index('ix_review_flags_state_created', ['state', 'created_at'], unique=False)

    op.create_table('review_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('finding_id', sa.Integer(), nullable=False),
    sa.Column('requester_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('from_level', sa.String(length=64), nullable=False),
    sa.Column('target_level', sa.String(length=64), nullable=False),
    sa.Column('public_title', sa.String(length=300), nullable=False),
    sa.Column('public_body', sa.Text(), nullable=False),
    sa.Column('public_body_html', sa.Text(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('embargo_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('embargo_tz', sa.String(length=64), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('released_by_id', sa.Integer(), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], name=op.f('fk_review_requests_finding_id_findings'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['released_by_id'], ['users.id'], name=op.f('fk_review_requests_released_by_id_users')),
    sa.ForeignKeyConstraint(['requester_id'], ['users.id'], name=op.f('fk_review_requests_requester_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_requests'))
    )
    with op.batch_alter_table('review_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_requests_finding_id'), ['finding_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_review_requests_released_at'), ['released_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_review_requests_requester_id'), ['requester_id'], unique=False)
        batch_op.create_index('ix_review_requests_state_submitted', ['state', 'submitted_at'], unique=False)

    op.create_table('review_comments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('body_html', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_review_comments_author_id_users')),
    sa.ForeignKeyConstraint(['request_id'], ['review_requests.id'], name=op.f('fk_review_comments_request_id_review_requests'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_comments'))
    )
    with op.batch_alter_table('review_comments', schema=None) as batch_op:
        batch_op.create_index('ix_review_comments_request_created', ['request_id', 'created_at'], unique=False)

    op.create_table('review_escalations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('admin_id', sa.Integer(), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['admin_id'], ['users.id'], name=op.f('fk_review_escalations_admin_id_users')),
    sa.ForeignKeyConstraint(['request_id'], ['review_requests.id'], name=op.f('fk_review_escalations_request_id_review_requests'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_escalations'))
    )
    with op.batch_alter_table('review_escalations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_escalations_request_id'), ['request_id'], unique=False)

    op.create_table('review_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=True),
    sa.Column('flag_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('actor_role', sa.String(length=16), nullable=False),
    sa.Column('audit_seq', sa.Integer(), nullable=False),
    sa.Column('details', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(request_id IS NULL) <> (flag_id IS NULL)', name=op.f('ck_review_events_one_subject')),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_review_events_actor_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['flag_id'], ['review_flags.id'], name=op.f('fk_review_events_flag_id_review_flags'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['request_id'], ['review_requests.id'], name=op.f('fk_review_events_request_id_review_requests'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_events'))
    )
    with op.batch_alter_table('review_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_events_flag_id'), ['flag_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_review_events_request_id'), ['request_id'], unique=False)

    op.create_table('review_request_attachments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('attachment_id', sa.String(length=32), nullable=True),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('content_type', sa.String(length=127), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['attachment_id'], ['attachments.id'], name=op.f('fk_review_request_attachments_attachment_id_attachments'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['request_id'], ['review_requests.id'], name=op.f('fk_review_request_attachments_request_id_review_requests'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_request_attachments')),
    sa.UniqueConstraint('request_id', 'attachment_id', name=op.f('uq_review_request_attachments_request_id_attachment_id'))
    )
    with op.batch_alter_table('review_request_attachments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_request_attachments_attachment_id'), ['attachment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_review_request_attachments_request_id'), ['request_id'], unique=False)

    op.create_table('reviews',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('reviewer_id', sa.Integer(), nullable=False),
    sa.Column('reviewer_org_id', sa.Integer(), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('decision', sa.String(length=16), nullable=False),
    sa.Column('risk', sa.String(length=64), nullable=False),
    sa.Column('scores_json', sa.Text(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('stale', sa.Boolean(), nullable=False),
    sa.Column('stale_reason', sa.String(length=200), nullable=False),
    sa.Column('escalation_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['escalation_id'], ['review_escalations.id'], name=op.f('fk_reviews_escalation_id_review_escalations'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['request_id'], ['review_requests.id'], name=op.f('fk_reviews_request_id_review_requests'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['reviewer_id'], ['users.id'], name=op.f('fk_reviews_reviewer_id_users')),
    sa.ForeignKeyConstraint(['reviewer_org_id'], ['organizations.id'], name=op.f('fk_reviews_reviewer_org_id_organizations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reviews')),
    sa.UniqueConstraint('request_id', 'reviewer_id', 'round', name=op.f('uq_reviews_request_id_reviewer_id_round'))
    )
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.create_index('ix_reviews_request_round', ['request_id', 'round'], unique=False)
        batch_op.create_index(batch_op.f('ix_reviews_reviewer_id'), ['reviewer_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reviews_reviewer_id'))
        batch_op.drop_index('ix_reviews_request_round')

    op.drop_table('reviews')
    with op.batch_alter_table('review_request_attachments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_review_request_attachments_request_id'))
        batch_op.drop_index(batch_op.f('ix_review_request_attachments_attachment_id'))

    op.drop_table('review_request_attachments')
    with op.batch_alter_table('review_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_review_events_request_id'))
        batch_op.drop_index(batch_op.f('ix_review_events_flag_id'))

    op.drop_table('review_events')
    with op.batch_alter_table('review_escalations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_review_escalations_request_id'))

    op.drop_table('review_escalations')
    with op.batch_alter_table('review_comments', schema=None) as batch_op:
        batch_op.drop_index('ix_review_comments_request_created')

    op.drop_table('review_comments')
    with op.batch_alter_table('review_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_review_requests_state_submitted')
        batch_op.drop_index(batch_op.f('ix_review_requests_requester_id'))
        batch_op.drop_index(batch_op.f('ix_review_requests_released_at'))
        batch_op.drop_index(batch_op.f('ix_review_requests_finding_id'))

    op.drop_table('review_requests')
    with op.batch_alter_table('review_flags', schema=None) as batch_op:
        batch_op.drop_index('ix_review_flags_state_created')
        batch_op.drop_index(batch_op.f('ix_review_flags_flagger_id'))
        batch_op.drop_index(batch_op.f('ix_review_flags_finding_id'))

    op.drop_table('review_flags')
    with op.batch_alter_table('review_conflicts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_review_conflicts_finding_id'))

    op.drop_table('review_conflicts')
    with op.batch_alter_table('org_affiliations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_org_affiliations_org_b_id'))
        batch_op.drop_index(batch_op.f('ix_org_affiliations_org_a_id'))

    op.drop_table('org_affiliations')
