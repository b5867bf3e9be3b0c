"""Models and migrations agree, and the migrations go down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

import app.models  # noqa: F401
from app.db import Base
from app.migrate import alembic_config, current_revision


def _ignore_fts(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    """SQLite FTS5 shadow tables are created by the migration, not by a model."""
    return not (type_ == "table" and reflected and compare_to is None
                and name and ("_fts" in name))


def test_models_and_migrations_agree(app):
    engine = app.extensions["enclave.engine"]
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "compare_type": True, "include_object": _ignore_fts,
        })
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"autogenerate finds differences: {diff}"


def test_upgrade_downgrade_upgrade(app):
    from tests.conftest import empty_database

    empty_database()
    engine = app.extensions["enclave.engine"]
    cfg = alembic_config(engine)
    head = current_revision(engine)
    command.downgrade(cfg, "base")
    assert current_revision(engine) is None
    remaining = set(inspect(engine).get_table_names()) - {"alembic_version"}
    assert remaining == set(), remaining
    command.upgrade(cfg, "head")
    assert current_revision(engine) == head
    assert {t.name for t in Base.metadata.sorted_tables} <= set(inspect(engine).get_table_names())


def test_finding_versions_count_the_kept_revisions(app):
    """0006 starts each finding's edit version at one plus the revisions it already has."""
    from sqlalchemy import text

    from app.db import db
    from app.findings.models import FindingRevision
    from tests.factories import make_finding, make_org, make_user

    author = make_user(make_org())
    edited, untouched = make_finding(author), make_finding(author)
    for n in range(2):
        db.add(FindingRevision(finding_id=edited.id, editor_id=author.id, old_title=f"t{n}",
                               old_body=f"b{n}", old_level="network"))
    db.commit()
    ids = (edited.id, untouched.id)
    db.close()

    engine = app.extensions["enclave.engine"]
    cfg = alembic_config(engine)
    command.downgrade(cfg, "0005")
    command.upgrade(cfg, "0006")
    with engine.connect() as conn:
        versions = dict(conn.execute(text("SELECT id, version FROM findings")).all())
    command.upgrade(cfg, "head")
    assert (versions[ids[0]], versions[ids[1]]) == (3, 1)


def test_0011_encrypts_existing_rows_resumably_and_its_downgrade_decrypts(app):
    """Down to 0010 the texts are plaintext again (and the FTS index is back); up to 0011
    they are legacy envelopes until `enclave content encrypt` seals them and builds the
    hashed index."""
    from sqlalchemy import text

    from app.cli import enclave
    from app.db import db
    from app.findings import search
    from tests.factories import make_org, make_user
    from tests.findings_world import post, reply

    author = make_user(make_org("north"), name="carol")
    finding = post(author, title="Axolotl title", body="axolotl body", level="restricted")
    reply(author, finding, "axolotl reply")
    fid = finding.id
    db.close()
    engine = app.extensions["enclave.engine"]
    cfg = alembic_config(engine)
    command.downgrade(cfg, "0010")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT title FROM findings WHERE id = :i"),
                            {"i": fid}).scalar() == "Axolotl title"
        assert conn.execute(text("SELECT body FROM replies")).scalar() == "axolotl reply"
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        legacy = conn.execute(text("SELECT title FROM findings WHERE id = :i"),
                              {"i": fid}).scalar()
    assert bytes(legacy) == b"\x02Axolotl title"
    assert search.search(author, "axolotl").total == 0  # no index until the job ran
    result = app.test_cli_runner().invoke(enclave, ["content", "encrypt", "--batch-size", "1",
                                                    "--max-batches", "1"])
    assert result.exit_code == 0 and "not finished" in result.output, result.output
    result = app.test_cli_runner().invoke(enclave, ["content", "encrypt"])
    assert result.exit_code == 0 and "everything is encrypted" in result.output, result.output
    with engine.connect() as conn:
        sealed = bytes(conn.execute(text("SELECT title FROM findings WHERE id = :i"),
                                    {"i": fid}).scalar())
    assert sealed[0] == 1 and b"Axolotl" not in sealed
    db.expire_all()
    assert search.search(author, "axolotl").total == 1


def test_0015_resolves_duplicates_left_by_races_then_refuses_them(app):
    """Before the partial unique indexes, rows that races left behind are resolved: the
    oldest open request (per finding and kind) and flag (per reader and finding) stay
    open, newer ones are closed; the downgrade drops the indexes and keeps the rows."""
    from sqlalchemy import select

    from app.db import db
    from app.review import flags
    from app.review.models import Flag, ReviewRequest
    from tests.review_world import build_world, publish_request

    engine = app.extensions["enclave.engine"]
    cfg = alembic_config(engine)
    w = build_world()
    req = publish_request(w)
    flag = flags.create_flag(w.reader, w.finding.id, reason="x", suggested_level=None)
    ids = (req.id, flag.id)
    db.commit()
    db.remove()
    command.downgrade(cfg, "0014")
    try:
        # the schema of 0014: a table of only the columns it had (the model has more)
        import sqlalchemy as sa

        old_requests = sa.table(
            "review_requests", *(sa.column(c) for c in (
                "kind", "finding_id", "requester_id", "state", "round", "from_level",
                "target_level", "content_sha256", "embargo_tz", "public_title",
                "public_body", "public_body_html", "note", "created_at", "submitted_at",
                "updated_at")))
        for _ in range(2):
            now = req.created_at
            db.execute(sa.insert(old_requests).values(
                kind=req.kind, finding_id=req.finding_id, requester_id=req.requester_id,
                state="changes_requested", round=1, from_level=req.from_level,
                target_level=req.target_level, content_sha256=req.content_sha256,
                embargo_tz="UTC", public_title=b"", public_body=b"", public_body_html=b"",
                note=b"", created_at=now, submitted_at=now, updated_at=now))
            db.add(Flag(finding_id=flag.finding_id, flagger_id=flag.flagger_id,
                        reason="again", suggested_level=flag.suggested_level,
                        level_at_flag=flag.level_at_flag, state="open"))
        db.commit()
        db.remove()
    finally:
        command.upgrade(cfg, "head")
    open_requests = db.scalars(select(ReviewRequest.id).where(
        ReviewRequest.state.in_(["submitted", "approved", "changes_requested",
                                 "rejected"]))).all()
    assert list(open_requests) == [ids[0]]
    assert [r.state for r in db.scalars(select(ReviewRequest).where(
        ReviewRequest.id != ids[0]))] == ["withdrawn", "withdrawn"]
    open_flags = db.scalars(select(Flag.id).where(Flag.state == "open")).all()
    assert list(open_flags) == [ids[1]]
    closed = db.scalars(select(Flag).where(Flag.id != ids[1])).all()
    assert {(f.state, f.outcome) for f in closed} == {("resolved", "dismiss")}
    assert all(f.resolved_at is not None for f in closed)
