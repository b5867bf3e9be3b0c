"""The proof of issue 13: a unique marker word in every stored text field at every level;
the raw SQLite file and a pg_dump hold none of the non-public ones (tables, indexes,
TOAST, the search index, the alembic table), while with the keyring every page, the API
and search still show them to a cleared reader."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from app.attachments import service as attachments
from app.db import db
from app.findings import search, service
from app.findings.models import Finding
from app.review import flags as review_flags
from app.review import service as review
from app.review.pins import current as seen_of
from tests.conftest import TEST_DB_URL
from tests.factories import login, make_user
from tests.findings_world import make_category
from tests.review_world import attach, build_world, scores

LEVELS = ("network", "restricted", "confidential")


def marker(level: str, field: str) -> str:
    return f"zqx{level}{field}qzx"


def _populate() -> tuple[dict[str, list[str]], list[str], object, dict[str, int]]:
    """Every stored text field of every level gets its own marker; returns them, the
    markers that become public on release, the reader, and the finding ids."""
    markers: dict[str, list[str]] = {}
    public: list[str] = []
    ids: dict[str, int] = {}
    w = build_world("network")
    for level in LEVELS:
        m = lambda field, level=level: markers.setdefault(level, []).append(  # noqa: E731
            marker(level, field)) or marker(level, field)
        finding = service.create_finding(
            w.author, category=make_category().slug,
            title=f"Title {m('title')}", body=f"Body {m('body')} text", level=level,
            orgs=[w.org_b.slug, w.org_c.slug, w.org_d.slug, w.admin_org.slug]
            if level == "confidential" else None)
        ids[level] = finding.id
        service.edit_finding(w.author, db.get(Finding, finding.id),
                             title=f"Edited {m('newtitle')}", body=f"Now {m('newbody')}")
        service.add_reply(w.author, db.get(Finding, finding.id), f"Reply {m('reply')}")
        hidden = service.add_reply(w.rev_b, db.get(Finding, finding.id),
                                   f"Hidden {m('hiddenreply')}")
        service.set_reply_hidden(w.admin, hidden, True, f"because {m('hidereason')}")
        att = attach(w.author, db.get(Finding, finding.id), f"bytes {level}".encode(),
                     filename=f"{m('filename')}.csv")
        flag = review_flags.create_flag(w.reader if level != "confidential" else w.rev_b,
                                        finding.id, reason=f"Worry {m('flagreason')}",
                                        suggested_level="confidential")
        review_flags.resolve_flag(w.rev_c, flag, outcome="dismiss",
                                  note=f"Fine {m('flagnote')}")
        review_flags.declare_conflict(w.rev_d, db.get(Finding, finding.id),
                                      f"conflict {m('conflict')}")
        req = review.create_publication(
            w.author, finding.id, public_title=f"Public {m('pubtitle')}",
            public_body=f"Public body {m('pubbody')}", attachments=[att.id],
            note=f"note {m('reqnote')}")
        review.add_comment(w.author, req, f"Comment {m('comment')}")
        review.add_review(w.rev_b, req, seen=seen_of(req),
                          decision="approve", risk="high", scores=scores(),
                          comment=f"Review {m('review')}")
        review.escalate(w.admin, req, f"Escalated {m('escalation')}", seen=seen_of(req))
        review.withdraw(w.author, req, f"withdrawn {m('withdraw')}")
    # one released request: its public version (and file name) is public content
    level = "restricted"
    finding = db.get(Finding, ids[level])
    att = attach(w.author, finding, b"released bytes", filename="zqxreleasedfileqzx.csv")
    req = review.create_publication(w.author, finding.id,
                                    public_title="Released zqxreleasedtitleqzx",
                                    public_body="Released zqxreleasedbodyqzx",
                                    attachments=[att.id],
                                    note=f"note {marker(level, 'releasednote')}")
    markers[level].append(marker(level, "releasednote"))
    public += ["zqxreleasedtitleqzx", "zqxreleasedbodyqzx", "zqxreleasedfileqzx"]
    review.add_review(w.rev_b, req, seen=seen_of(req),
                      decision="approve", risk="low", scores=scores())
    review.add_review(w.rev_c, req, seen=seen_of(req),
                      decision="approve", risk="low", scores=scores())
    review.release(w.admin, req, seen=seen_of(req))
    db.commit()
    reader = make_user(w.org_b, name="omar", clearance="confidential")
    return markers, public, reader, ids


def _raw_bytes(tmp_path: Path) -> bytes:
    bind = db.get_bind()
    if bind.dialect.name == "sqlite":
        db.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))  # the WAL is out of scope
        db.commit()
        return Path(bind.url.database).read_bytes()
    url = bind.url.set(drivername="postgresql").render_as_string(hide_password=False)
    out = subprocess.run(["pg_dump", "--dbname", url], capture_output=True, check=True,
                         timeout=300)
    return out.stdout


def test_no_marker_of_non_public_content_in_the_raw_database(app, client, api_token,
                                                            tmp_path):
    markers, public, reader, ids = _populate()
    raw = _raw_bytes(tmp_path).lower()
    every = [m for level in LEVELS for m in markers[level]]
    assert len(every) >= 17 * 3

    def present(word: str) -> bool:
        # as text, or as pg_dump writes a bytea value (hex)
        return word.encode() in raw or word.encode().hex().encode() in raw

    found = [m for m in every if present(m)]
    assert found == [], f"plaintext in the raw database: {found}"
    # the released public version stays readable (it is public): the search is not blind
    assert all(present(p) for p in public)
    # nor in UTF-16 or upper case (a driver or an index could store it so)
    assert not [m for m in every if m.upper().encode() in raw.upper()
                and m.encode() not in raw]

    # with the keyring, the cleared reader sees everything as before
    login(client, reader)
    for level in LEVELS:
        page = client.get(f"/findings/{ids[level]}").text
        assert marker(level, "newtitle") in page and marker(level, "newbody") in page
        assert marker(level, "reply") in page
        body = client.get(f"/api/v1/findings/{ids[level]}", headers=api_token(reader)).json
        assert marker(level, "newtitle") in body["title"]
        hits = search.search(reader, marker(level, "newbody"))
        assert [r.finding.id for r in hits.results] == [ids[level]]
        assert marker(level, "newbody") in str(hits.results[0].snippet_html)
        assert search.search(reader, marker(level, "reply")).total == 1
        history = service.history(db.get(Finding, ids[level]), reader)
        assert any(marker(level, "body") in e.before.body for e in history)
        names = [a.filename for a in attachments.list_for_finding(
            reader, db.get(Finding, ids[level]))]
        assert f"{marker(level, 'filename')}.csv" in names
    assert "zqxreleasedtitleqzx" in client.get("/public/").text


@pytest.mark.skipif(not TEST_DB_URL.startswith("postgresql"), reason="PostgreSQL's TOAST")
def test_long_texts_toasted_on_postgresql_hold_no_marker(app, tmp_path):
    """A long body is compressed and moved to TOAST by PostgreSQL: ciphertext does not
    compress, and the marker is in none of the table files' dump."""
    from tests.factories import make_org

    author = make_user(make_org("north"), name="carol")
    long_body = ("zqxtoastedqzx " * 4000)
    finding = service.create_finding(author, category=make_category().slug,
                                     title="Long", body=long_body, level="restricted")
    raw = _raw_bytes(tmp_path)
    assert b"zqxtoastedqzx" not in raw.lower()
    assert re.search(rb"zqx", raw) is None and b"zqx".hex().encode() not in raw
    assert db.get(Finding, finding.id).body == long_body
