"""content encryption at rest: sealed text columns, a search index of keyed term hashes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 14:05:00.000000

* Every stored text of non-public content (``COLUMNS`` below: findings, replies,
  revisions, attachment file names, flags, review requests, their files, escalations,
  reviews, comments, history details, conflict reasons) becomes a binary envelope
  (``app.crypto.fields``). Existing text becomes *legacy* envelopes; ``content_jobs``
  rows ask ``enclave content encrypt`` (``enclave init`` runs it right after this
  migration) to seal them in resumable batches and to build the new index.
* The plaintext full-text index of 0002 (FTS5 / tsvector tables and their triggers) is
  dropped; the new ``*_fts`` tables hold keyed hashes (``app.findings.search_index``),
  written by the application (a database trigger cannot see the text any more).

* ``audit_log`` gains ``content``/``content_level``: free text of a finding's event is
  sealed there from now on, ``details`` keeps a keyed commitment. Entries written before
  keep their details as they were (rewriting them would break the hash chain).

Downgrade opens every value with the keyring and restores text and the 0002 index
(sealed audit content is dropped: the chained details hold its commitments).
"""
from alembic import op
import sqlalchemy as sa

from app.content.migration import from_sealed, to_sealed

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

COLUMNS = {
    "findings": [("title", sa.String(length=300)), ("body", sa.Text()),
                 ("body_html", sa.Text())],
    "replies": [("body", sa.Text()), ("body_html", sa.Text()),
                ("hidden_reason", sa.String(length=500))],
    "finding_revisions": [("old_title", sa.String(length=300)), ("old_body", sa.Text())],
    "attachments": [("filename", sa.String(length=255))],
    "review_conflicts": [("reason", sa.Text())],
    "review_flags": [("reason", sa.Text()), ("note", sa.Text())],
    "review_requests": [("public_title", sa.String(length=300)), ("public_body", sa.Text()),
                        ("public_body_html", sa.Text()), ("note", sa.Text())],
    "review_request_attachments": [("filename", sa.String(length=255))],
    "review_escalations": [("reason", sa.Text())],
    "reviews": [("comment", sa.Text())],
    "review_comments": [("body", sa.Text()), ("body_html", sa.Text())],
    "review_events": [("details", sa.Text())],
}


def _v0002():  # type: ignore[no-untyped-def]
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("0002_findings_forum.py")
    spec = importlib.util.spec_from_file_location("enclave_migration_0002", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _create_index() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("""CREATE TABLE findings_fts (
            finding_id integer PRIMARY KEY REFERENCES findings(id) ON DELETE CASCADE,
            terms bigint[] NOT NULL)""")
        op.execute("CREATE INDEX findings_fts_terms_gin ON findings_fts USING gin (terms)")
        op.execute("""CREATE TABLE replies_fts (
            reply_id integer PRIMARY KEY REFERENCES replies(id) ON DELETE CASCADE,
            finding_id integer NOT NULL REFERENCES findings(id) ON DELETE CASCADE,
            terms bigint[] NOT NULL)""")
        op.execute("CREATE INDEX replies_fts_terms_gin ON replies_fts USING gin (terms)")
        op.execute("CREATE INDEX replies_fts_finding ON replies_fts (finding_id)")
    else:
        op.execute("""CREATE TABLE findings_fts (
            finding_id INTEGER PRIMARY KEY REFERENCES findings(id) ON DELETE CASCADE,
            terms BLOB NOT NULL)""")
        op.execute("""CREATE TABLE findings_fts_terms (
            term INTEGER NOT NULL,
            finding_id INTEGER NOT NULL REFERENCES findings(id) ON DELETE CASCADE,
            PRIMARY KEY (term, finding_id)) WITHOUT ROWID""")
        op.execute("CREATE INDEX findings_fts_terms_doc ON findings_fts_terms (finding_id)")
        op.execute("""CREATE TABLE replies_fts (
            reply_id INTEGER PRIMARY KEY REFERENCES replies(id) ON DELETE CASCADE,
            finding_id INTEGER NOT NULL REFERENCES findings(id) ON DELETE CASCADE,
            terms BLOB NOT NULL)""")
        op.execute("CREATE INDEX replies_fts_finding ON replies_fts (finding_id)")
        op.execute("""CREATE TABLE replies_fts_terms (
            term INTEGER NOT NULL,
            reply_id INTEGER NOT NULL REFERENCES replies(id) ON DELETE CASCADE,
            PRIMARY KEY (term, reply_id)) WITHOUT ROWID""")
        op.execute("CREATE INDEX replies_fts_terms_doc ON replies_fts_terms (reply_id)")


def _drop_index() -> None:
    for name in ("replies_fts_terms", "findings_fts_terms", "replies_fts", "findings_fts"):
        op.execute(f"DROP TABLE IF EXISTS {name}")


def upgrade() -> None:
    op.create_table('content_jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('table_name', sa.String(length=64), nullable=False),
    sa.Column('last_id', sa.String(length=64), nullable=False),
    sa.Column('done', sa.Boolean(), nullable=False),
    sa.Column('changed', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_content_jobs')),
    sa.UniqueConstraint('kind', 'table_name', name=op.f('uq_content_jobs_kind_table_name'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content_level', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('content', sa.LargeBinary(), nullable=True))
    _v0002()._drop_search()
    for table, columns in COLUMNS.items():
        to_sealed(table, columns)
    _create_index()


def downgrade() -> None:
    _drop_index()
    for table, columns in COLUMNS.items():
        from_sealed(table, columns)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE findings ALTER COLUMN body_html SET DEFAULT ''")
    else:
        with op.batch_alter_table("findings") as batch:
            batch.alter_column("body_html", existing_type=sa.Text(), server_default="")
    _v0002()._create_search()
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_column('content')
        batch_op.drop_column('content_level')
    op.drop_table('content_jobs')
