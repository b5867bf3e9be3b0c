"""findings forum: replies, revisions, reads, watches, notifications, full-text search

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 14:12:26.972677

Full-text search is dialect-specific and created here by hand; its tables are named
``*_fts`` so that autogenerate leaves them alone (migrations/env.py, test_migrations):

* SQLite: FTS5 tables ``findings_fts`` (title, body; rowid = findings.id) and
  ``replies_fts`` (body; rowid = replies.id; hidden replies left out).
* PostgreSQL: tables ``findings_fts`` (finding_id, doc tsvector: title weighted A, body B)
  and ``replies_fts`` (reply_id, finding_id, doc), each with a GIN index on ``doc``.

Both are kept in sync by triggers on ``findings`` and ``replies``, so every writer (the
services, bulk loads, tests) keeps the index right. NOTE: a later migration that
*recreates* ``findings`` or ``replies`` in SQLite batch mode (move-and-copy) drops these
triggers with the old table and must create them again (``_SQLITE_TRIGGERS`` below);
tests/test_search.py checks that they exist at head.
"""
from alembic import op
import sqlalchemy as sa

DEFAULT_CATEGORIES = [
    ("circuits", "Circuits", "Mechanistic circuits and the features they compute."),
    ("sparse-autoencoders", "Sparse autoencoders",
     "Dictionary learning on activations: features, splitting, dead latents."),
    ("steering", "Steering", "Activation steering, control vectors and their side effects."),
    ("evaluations", "Evaluations", "Capability and safety evaluations, probes and benchmarks."),
]

_SQLITE_TOKENIZER = "porter unicode61 remove_diacritics 2"

_SQLITE_TRIGGERS = {
    "findings_fts_ai": """CREATE TRIGGER findings_fts_ai AFTER INSERT ON findings BEGIN
         INSERT INTO findings_fts(rowid, title, body) VALUES (new.id, new.title, new.body);
       END""",
    "findings_fts_ad": """CREATE TRIGGER findings_fts_ad AFTER DELETE ON findings BEGIN
         DELETE FROM findings_fts WHERE rowid = old.id;
       END""",
    "findings_fts_au": """CREATE TRIGGER findings_fts_au AFTER UPDATE OF title, body ON findings
       BEGIN
         UPDATE findings_fts SET title = new.title, body = new.body WHERE rowid = new.id;
       END""",
    "replies_fts_ai": """CREATE TRIGGER replies_fts_ai AFTER INSERT ON replies
       WHEN NOT new.hidden BEGIN
         INSERT INTO replies_fts(rowid, body) VALUES (new.id, new.body);
       END""",
    "replies_fts_ad": """CREATE TRIGGER replies_fts_ad AFTER DELETE ON replies BEGIN
         DELETE FROM replies_fts WHERE rowid = old.id;
       END""",
    "replies_fts_au": """CREATE TRIGGER replies_fts_au AFTER UPDATE OF body, hidden ON replies
       BEGIN
         DELETE FROM replies_fts WHERE rowid = old.id;
         INSERT INTO replies_fts(rowid, body) SELECT new.id, new.body WHERE NOT new.hidden;
       END""",
}

PG_FINDING_DOC = ("setweight(to_tsvector('english'::regconfig, coalesce({t}.title, '')), 'A') || "
                  "setweight(to_tsvector('english'::regconfig, coalesce({t}.body, '')), 'B')")
PG_REPLY_DOC = "to_tsvector('english'::regconfig, coalesce({t}.body, ''))"

_PG_SETUP = [
    """CREATE TABLE findings_fts (
         finding_id integer PRIMARY KEY REFERENCES findings(id) ON DELETE CASCADE,
         doc tsvector NOT NULL)""",
    "CREATE INDEX findings_fts_doc ON findings_fts USING gin (doc)",
    """CREATE TABLE replies_fts (
         reply_id integer PRIMARY KEY REFERENCES replies(id) ON DELETE CASCADE,
         finding_id integer NOT NULL REFERENCES findings(id) ON DELETE CASCADE,
         doc tsvector NOT NULL)""",
    "CREATE INDEX replies_fts_doc ON replies_fts USING gin (doc)",
    "CREATE INDEX replies_fts_finding ON replies_fts (finding_id)",
    f"""CREATE FUNCTION findings_fts_sync() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         INSERT INTO findings_fts(finding_id, doc)
           VALUES (NEW.id, {PG_FINDING_DOC.format(t="NEW")})
           ON CONFLICT (finding_id) DO UPDATE SET doc = EXCLUDED.doc;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER findings_fts_sync AFTER INSERT OR UPDATE OF title, body ON findings
       FOR EACH ROW EXECUTE FUNCTION findings_fts_sync()""",
    f"""CREATE FUNCTION replies_fts_sync() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.hidden THEN
           DELETE FROM replies_fts WHERE reply_id = NEW.id;
         ELSE
           INSERT INTO replies_fts(reply_id, finding_id, doc)
             VALUES (NEW.id, NEW.finding_id, {PG_REPLY_DOC.format(t="NEW")})
             ON CONFLICT (reply_id) DO UPDATE SET doc = EXCLUDED.doc,
                                                  finding_id = EXCLUDED.finding_id;
         END IF;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER replies_fts_sync AFTER INSERT OR UPDATE OF body, hidden, finding_id
       ON replies FOR EACH ROW EXECUTE FUNCTION replies_fts_sync()""",
    f"""INSERT INTO findings_fts(finding_id, doc)
        SELECT id, {PG_FINDING_DOC.format(t="findings")} FROM findings""",
    f"""INSERT INTO replies_fts(reply_id, finding_id, doc)
        SELECT id, finding_id, {PG_REPLY_DOC.format(t="replies")} FROM replies
        WHERE NOT hidden""",
]


def _create_search() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(f"CREATE VIRTUAL TABLE findings_fts USING fts5(title, body, "
                   f"tokenize = '{_SQLITE_TOKENIZER}')")
        op.execute(f"CREATE VIRTUAL TABLE replies_fts USING fts5(body, "
                   f"tokenize = '{_SQLITE_TOKENIZER}')")
        op.execute("INSERT INTO findings_fts(rowid, title, body) "
                   "SELECT id, title, body FROM findings")
        op.execute("INSERT INTO replies_fts(rowid, body) "
                   "SELECT id, body FROM replies WHERE NOT hidden")
        for statement in _SQLITE_TRIGGERS.values():
            op.execute(statement)
    elif dialect == "postgresql":
        for statement in _PG_SETUP:
            op.execute(statement)


def _drop_search() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS replies_fts")
        op.execute("DROP TABLE IF EXISTS findings_fts")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS replies_fts_sync ON replies")
        op.execute("DROP TRIGGER IF EXISTS findings_fts_sync ON findings")
        op.execute("DROP FUNCTION IF EXISTS replies_fts_sync()")
        op.execute("DROP FUNCTION IF EXISTS findings_fts_sync()")
        op.execute("DROP TABLE IF EXISTS replies_fts")
        op.execute("DROP TABLE IF EXISTS findings_fts")


def _render_existing_bodies() -> None:
    """Fill the new body_html cache for findings that predate this revision."""
    from app.rendering import render_markdown

    conn = op.get_bind()
    findings = sa.table("findings", sa.column("id", sa.Integer), sa.column("body", sa.Text),
                        sa.column("body_html", sa.Text))
    rows = conn.execute(sa.select(findings.c.id, findings.c.body)).all()
    for row in rows:
        conn.execute(findings.update().where(findings.c.id == row.id)
                     .values(body_html=render_markdown(row.body)))


def _seed_categories() -> None:
    conn = op.get_bind()
    categories = sa.table("categories", sa.column("slug", sa.String),
                          sa.column("name", sa.String), sa.column("description", sa.Text))
    existing = set(conn.execute(sa.select(categories.c.slug)).scalars())
    for slug, name, description in DEFAULT_CATEGORIES:
        if slug not in existing:
            conn.execute(categories.insert().values(slug=slug, name=name,
                                                    description=description))


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    op.create_table('finding_reads',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('finding_id', sa.Integer(), nullable=False),
    sa.Column('last_read_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], name=op.f('fk_finding_reads_finding_id_findings'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_finding_reads_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'finding_id', name=op.f('pk_finding_reads'))
    )
    with op.batch_alter_table('finding_reads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_finding_reads_finding_id'), ['finding_id'], unique=False)

    op.create_table('finding_revisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('finding_id', sa.Integer(), nullable=False),
    sa.Column('editor_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('old_title', sa.String(length=300), nullable=False),
    sa.Column('old_body', sa.Text(), nullable=False),
    sa.Column('old_level', sa.String(length=64), nullable=False),
    sa.Column('old_compartment', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['editor_id'], ['users.id'], name=op.f('fk_finding_revisions_editor_id_users')),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], name=op.f('fk_finding_revisions_finding_id_findings'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_finding_revisions'))
    )
    with op.batch_alter_table('finding_revisions', schema=None) as batch_op:
        batch_op.create_index('ix_finding_revisions_finding_created', ['finding_id', 'created_at'], unique=False)

    op.create_table('replies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('finding_id', sa.Integer(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('body_html', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('hidden', sa.Boolean(), nullable=False),
    sa.Column('hidden_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('hidden_by_id', sa.Integer(), nullable=True),
    sa.Column('hidden_reason', sa.String(length=500), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_replies_author_id_users')),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], name=op.f('fk_replies_finding_id_findings'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['hidden_by_id'], ['users.id'], name=op.f('fk_replies_hidden_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_replies'))
    )
    with op.batch_alter_table('replies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_replies_author_id'), ['author_id'], unique=False)
        batch_op.create_index('ix_replies_finding_created', ['finding_id', 'created_at', 'id'], unique=False)

    op.create_table('watches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('finding_id', sa.Integer(), nullable=True),
    sa.Column('category_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('(finding_id IS NULL) <> (category_id IS NULL)', name=op.f('ck_watches_one_target')),
    sa.ForeignKeyConstraint(['category_id'], ['categories.id'], name=op.f('fk_watches_category_id_categories'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], name=op.f('fk_watches_finding_id_findings'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_watches_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_watches')),
    sa.UniqueConstraint('user_id', 'category_id', name=op.f('uq_watches_user_id_category_id')),
    sa.UniqueConstraint('user_id', 'finding_id', name=op.f('uq_watches_user_id_finding_id'))
    )
    with op.batch_alter_table('watches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_watches_category_id'), ['category_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_watches_finding_id'), ['finding_id'], unique=False)

    op.create_table('notifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('finding_id', sa.Integer(), nullable=False),
    sa.Column('reply_id', sa.Integer(), nullable=True),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('emailed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_notifications_actor_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], name=op.f('fk_notifications_finding_id_findings'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['reply_id'], ['replies.id'], name=op.f('fk_notifications_reply_id_replies'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_notifications_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications'))
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notifications_finding_id'), ['finding_id'], unique=False)
        batch_op.create_index('ix_notifications_user_created', ['user_id', 'created_at'], unique=False)
        batch_op.create_index('ix_notifications_user_read', ['user_id', 'read_at'], unique=False)

    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('body_html', sa.Text(), server_default='', nullable=False))
        batch_op.add_column(sa.Column('locked', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('reply_count', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch_op.add_column(sa.Column('last_reply_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index(batch_op.f('ix_findings_category_id'))
        batch_op.drop_index(batch_op.f('ix_findings_created_at'))
        batch_op.create_index('ix_findings_category_created', ['category_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_findings_created_id', ['created_at', 'id'], unique=False,
                              postgresql_include=['level', 'compartmented', 'org_id'])
        # PostgreSQL: cover the access filter's columns so counts are index-only scans
        batch_op.drop_index('ix_findings_level_created')
        batch_op.create_index('ix_findings_level_created', ['level', 'created_at'], unique=False,
                              postgresql_include=['id', 'compartmented', 'org_id'])

    # ### end Alembic commands ###
    _render_existing_bodies()
    _seed_categories()
    _create_search()


def downgrade() -> None:
    _drop_search()
    # The default categories stay: they are ordinary rows of the 0001 schema.
    # ### commands auto generated by Alembic - please adjust! ###
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.drop_index('ix_findings_level_created')
        batch_op.create_index('ix_findings_level_created', ['level', 'created_at'], unique=False)
        batch_op.drop_index('ix_findings_created_id')
        batch_op.drop_index('ix_findings_category_created')
        batch_op.create_index(batch_op.f('ix_findings_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_findings_category_id'), ['category_id'], unique=False)
        batch_op.drop_column('last_reply_at')
        batch_op.drop_column('reply_count')
        batch_op.drop_column('locked')
        batch_op.drop_column('body_html')

    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_notifications_user_read')
        batch_op.drop_index('ix_notifications_user_created')
        batch_op.drop_index(batch_op.f('ix_notifications_finding_id'))

    op.drop_table('notifications')
    with op.batch_alter_table('watches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_watches_finding_id'))
        batch_op.drop_index(batch_op.f('ix_watches_category_id'))

    op.drop_table('watches')
    with op.batch_alter_table('replies', schema=None) as batch_op:
        batch_op.drop_index('ix_replies_finding_created')
        batch_op.drop_index(batch_op.f('ix_replies_author_id'))

    op.drop_table('replies')
    with op.batch_alter_table('finding_revisions', schema=None) as batch_op:
        batch_op.drop_index('ix_finding_revisions_finding_created')

    op.drop_table('finding_revisions')
    with op.batch_alter_table('finding_reads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_finding_reads_finding_id'))

    op.drop_table('finding_reads')
    # ### end Alembic commands ###
