"""one open publication/declassification request per finding and kind, one open flag per
reader and finding: partial unique indexes on both engines

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 17:40:00

The services checked these rules, but on SQLite two writers could both pass the check
(issue 12, item 8). The database now refuses a second open row. Rows that races left
behind are resolved first, keeping the oldest open one: newer duplicate requests become
``withdrawn`` (closed now), newer duplicate flags ``resolved`` as ``dismiss`` (resolved
now). The downgrade drops the indexes; it does not reopen those rows (they were
duplicates of an open one).
"""
from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

OPEN_REQUEST_SQL = "state IN ('submitted', 'approved', 'changes_requested', 'rejected')"


def upgrade() -> None:
    op.execute(sa.text(
        "UPDATE review_requests SET state = 'withdrawn', closed_at = CURRENT_TIMESTAMP, "
        f"updated_at = CURRENT_TIMESTAMP WHERE {OPEN_REQUEST_SQL} AND EXISTS ("
        "SELECT 1 FROM review_requests AS older "
        "WHERE older.finding_id = review_requests.finding_id "
        "AND older.kind = review_requests.kind AND older.id < review_requests.id "
        f"AND older.{OPEN_REQUEST_SQL})"))
    op.execute(sa.text(
        "UPDATE review_flags SET state = 'resolved', outcome = 'dismiss', "
        "resolved_at = CURRENT_TIMESTAMP WHERE state = 'open' AND EXISTS ("
        "SELECT 1 FROM review_flags AS older "
        "WHERE older.finding_id = review_flags.finding_id "
        "AND older.flagger_id = review_flags.flagger_id AND older.id < review_flags.id "
        "AND older.state = 'open')"))

    with op.batch_alter_table('review_requests', schema=None) as batch_op:
        batch_op.create_index('uq_review_requests_open_per_kind', ['finding_id', 'kind'],
                              unique=True, sqlite_where=sa.text(OPEN_REQUEST_SQL),
                              postgresql_where=sa.text(OPEN_REQUEST_SQL))
    with op.batch_alter_table('review_flags', schema=None) as batch_op:
        batch_op.create_index('uq_review_flags_open_per_flagger', ['finding_id', 'flagger_id'],
                              unique=True, sqlite_where=sa.text("state = 'open'"),
                              postgresql_where=sa.text("state = 'open'"))


def downgrade() -> None:
    with op.batch_alter_table('review_flags', schema=None) as batch_op:
        batch_op.drop_index('uq_review_flags_open_per_flagger')
    with op.batch_alter_table('review_requests', schema=None) as batch_op:
        batch_op.drop_index('uq_review_requests_open_per_kind')
