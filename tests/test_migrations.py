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
