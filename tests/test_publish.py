"""Public release: only released items, only their approved public version, on the public
pages, the Atom feed and the public API; the static export, signed and verifiable."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import xml.etree.ElementTree as ET

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from app import audit
from app.cli import enclave
from app.db import db
from app.publish import export
from app.review import service
from app.review.pins import current as seen_of
from tests.factories import make_finding
from tests.review_world import (
    INTERNAL_BODY,
    PUBLIC_BODY,
    approve,
    attach,
    build_world,
    publish_request,
)

INTERNAL_MARKERS = ("0xDEADBEEF", "ablation recipe", "Internal title", "head 4 recipe")


def _released(w, **extra):  # type: ignore[no-untyped-def]
    req = publish_request(w, **extra)
    approve(w.rev_b, req)
    approve(w.rev_c, req)
    service.release(w.admin, req, seen=seen_of(req))
    return req


def _no_internal(text: str) -> None:
    for marker in INTERNAL_MARKERS:
        assert marker not in text, marker


def test_nothing_public_before_release(app, client):
    w = build_world()
    req = publish_request(w)
    approve(w.rev_b, req)
    approve(w.rev_c, req)  # approved, not released
    assert client.get("/public/").status_code == 200
    assert "Attention heads" not in client.get("/public/").text
    assert client.get(f"/public/{req.id}").status_code == 404
    assert client.get("/api/v1/public/findings").json["total"] == 0
    assert b"<entry>" not in client.get("/public/feed.atom").data


def test_public_pages_feed_and_api_show_only_the_approved_version(app, client):
    w = build_world()
    att = attach(w.author, w.finding, b"approved bytes\n", "approved.csv")
    attach(w.author, w.finding, b"secret bytes\n", "secret.csv")  # not chosen
    req = _released(w, attachments=[att.id])
    index = client.get("/public/")
    assert index.status_code == 200 and "Attention heads, in general" in index.text
    page = client.get(f"/public/{req.public_id}")
    assert page.status_code == 200
    assert "<strong>attention heads</strong>" in page.text  # sanitized Markdown
    assert "approved.csv" in page.text and "secret.csv" not in page.text
    _no_internal(index.text + page.text)

    feed = client.get("/public/feed.atom")
    assert feed.mimetype == "application/atom+xml"
    root = ET.fromstring(feed.data)  # noqa: S314 - our own feed
    ns = {"a": "http://www.w3.org/2005/Atom"}
    entries = root.findall("a:entry", ns)
    assert [e.findtext("a:title", namespaces=ns) for e in entries] == [
        "Attention heads, in general"]
    assert "attention heads" in entries[0].findtext("a:content", namespaces=ns)
    _no_internal(feed.data.decode())

    api = client.get(f"/api/v1/public/findings/{req.public_id}").json
    assert api["body"] == PUBLIC_BODY and [a["filename"] for a in api["attachments"]] == [
        "approved.csv"]
    _no_internal(json.dumps(api))
    assert set(api) == {"id", "title", "body", "body_html", "released_at", "content_sha256",
                        "url", "attachments", "credit"}
    assert api["credit"] is None  # anonymous unless the request chose a credit

    file_id = req.attachments[0].id
    download = client.get(f"/public/{req.public_id}/files/{file_id}")
    assert download.status_code == 200 and download.data == b"approved bytes\n"
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert "attachment" in download.headers["Content-Disposition"]
    assert client.get(f"/public/{req.public_id}/files/{file_id + 1}").status_code == 404


def test_public_download_refused_for_unreleased(app, client):
    w = build_world()
    att = attach(w.author, w.finding)
    req = publish_request(w, attachments=[att.id])
    assert client.get(f"/public/{req.id}/files/{req.attachments[0].id}").status_code == 404


def _run(app, *args):  # type: ignore[no-untyped-def]
    return app.test_cli_runner().invoke(enclave, list(args))


def test_export_verify_and_tamper(app, tmp_path):
    w = build_world()
    att = attach(w.author, w.finding, b"col\n1\n", "table.csv")
    req = _released(w, attachments=[att.id])
    out = tmp_path / "site"
    r = _run(app, "export", str(out))
    assert r.exit_code == 0, r.output + r.stderr
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == sorted([
        "index.html", f"findings/{req.public_id}.html", "feed.atom", "findings.json", "style.css",
        f"files/{req.public_id}/{req.attachments[0].id}-table.csv", "public-key.txt",
        "manifest.json", "manifest.sig"])
    csv = out / f"files/{req.public_id}/{req.attachments[0].id}-table.csv"
    assert csv.read_bytes() == b"col\n1\n"
    for name in names:
        if name.endswith((".html", ".atom", ".json")):
            _no_internal((out / name).read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["index.html"]["sha256"] == hashlib.sha256(
        (out / "index.html").read_bytes()).hexdigest()

    r = _run(app, "export", "verify", str(out))
    assert r.exit_code == 0, r.output + r.stderr
    assert "ok: signature valid" in r.output and "out of band" in r.stderr
    key = (out / "public-key.txt").read_text().strip()
    r = _run(app, "export", "verify", str(out), "--public-key", key)
    assert r.exit_code == 0 and "out of band" not in r.stderr

    page = out / f"findings/{req.public_id}.html"
    page.write_text(page.read_text().replace("Attention", "Tampered"))
    (out / "extra.txt").write_text("not ours")
    (out / "style.css").unlink()
    r = _run(app, "export", "verify", str(out))
    assert r.exit_code == 1
    assert f"MISMATCH findings/{req.public_id}.html" in r.output
    assert "MISSING style.css" in r.output and "EXTRA extra.txt" in r.output
    assert "verification failed" in r.stderr


def test_verify_detects_a_forged_manifest_and_a_wrong_key(app, tmp_path):
    w = build_world()
    _released(w)
    out = tmp_path / "site"
    assert _run(app, "export", str(out)).exit_code == 0
    # someone edits a page and fixes the manifest's hash: the signature breaks
    (out / "index.html").write_text("<h1>forged</h1>")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["index.html"]["sha256"] = hashlib.sha256(b"<h1>forged</h1>").hexdigest()
    manifest["files"]["index.html"]["size"] = len(b"<h1>forged</h1>")
    (out / "manifest.json").write_text(json.dumps(manifest))
    r = _run(app, "export", "verify", str(out))
    assert r.exit_code == 1 and "PROBLEM manifest.sig" in r.output
    # a different key than the one expected
    other = base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
    assert _run(app, "export", str(tmp_path / "again")).exit_code == 0
    r = _run(app, "export", "verify", str(tmp_path / "again"), "--public-key", other)
    assert r.exit_code == 1 and "signature INVALID" in r.stderr


def test_export_is_deterministic_and_incremental(app, tmp_path):
    w = build_world()
    att = attach(w.author, w.finding, b"x" * 5000, "big.bin")
    _released(w, attachments=[att.id])
    one, two = tmp_path / "one", tmp_path / "two"
    first = export.export_site(one)
    export.export_site(two)
    files = sorted(p.relative_to(one).as_posix() for p in one.rglob("*") if p.is_file())
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert len(first.written) == len(files)
    stamps = {name: (one / name).stat().st_mtime_ns for name in files}
    again = export.export_site(one)
    assert again.written == [] and sorted(again.unchanged) == sorted(files)
    assert {name: (one / name).stat().st_mtime_ns for name in files} == stamps
    # a new release changes only what it must
    second = make_finding(w.author, level="restricted")
    req2 = service.create_publication(w.author, second.id, public_title="Second",
                                      public_body="Second public text.")
    approve(w.rev_b, req2)
    approve(w.rev_c, req2)
    service.release(w.admin, req2, seen=seen_of(req2))
    third = export.export_site(one)
    assert f"findings/{req2.public_id}.html" in third.written
    assert not any(name.startswith("files/") for name in third.written)
    assert export.verify_export(one).ok
    actions = db.scalars(select(audit.AuditEntry.action).where(
        audit.AuditEntry.action == "public_export")).all()
    assert len(actions) == 4


def test_export_refuses_a_foreign_non_empty_folder(app, tmp_path):
    w = build_world()
    _released(w)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"\xff\xd8")
    r = _run(app, "export", str(foreign))
    assert r.exit_code == 1
    assert r.stderr.strip().startswith("error: ") and "not a previous Enclave export" in r.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["holiday.jpg"]
    # a manifest of another format is not ours either
    (foreign / "manifest.json").write_text('{"format": "something-else"}')
    assert _run(app, "export", str(foreign)).exit_code == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(app, "export", str(empty)).exit_code == 0


def test_export_cli_usage_errors(app, tmp_path):
    r = _run(app, "export", "verify")
    assert r.exit_code == 2 and "usage" in r.stderr
    r = _run(app, "export", str(tmp_path / "x"), "--public-key", "abc")
    assert r.exit_code == 2
    r = _run(app, "export", "verify", str(tmp_path / "missing"))
    assert r.exit_code == 1 and "not a folder" in r.stderr


def test_export_removes_files_no_longer_released(app, tmp_path):
    w = build_world()
    req = _released(w)
    out = tmp_path / "site"
    export.export_site(out)
    assert (out / f"findings/{req.public_id}.html").exists()
    db.delete(req)  # e.g. the finding was deleted
    db.commit()
    report = export.export_site(out)
    assert f"findings/{req.public_id}.html" in report.removed
    assert not (out / "findings").exists() or not any((out / "findings").iterdir())
    assert export.verify_export(out).ok


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a/../../b"])
def test_verify_refuses_paths_outside_the_folder(app, tmp_path, path):
    w = build_world()
    _released(w)
    out = tmp_path / "site"
    export.export_site(out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"][path] = {"sha256": "0" * 64, "size": 1}
    (out / "manifest.json").write_text(json.dumps(manifest))
    report = export.verify_export(out)
    assert not report.ok and any(path in p for p in report.problems)


def test_internal_text_never_leaks_into_public_json(app, client):
    w = build_world()
    _released(w)
    body = json.dumps(client.get("/api/v1/public/findings").json)
    assert INTERNAL_BODY not in body
    _no_internal(body)


def test_public_items_have_their_own_numbers_credit_and_marking(app, client):
    """A public URL is the item's own number, not its request's id (which would let
    outsiders count requests, released or not); the page shows the chosen credit and
    the PUBLIC marking; members reach the public area from the app's menu."""
    from app.findings.models import Finding
    from tests.factories import login

    w = build_world()
    other = make_finding(w.author, level="restricted", title="Other internal title")
    pending = service.create_publication(w.author, other.id, public_title="Never released",
                                         public_body="Waiting.")
    req = _released(w, credit="authors")
    assert req.id > pending.id and req.public_id == 1
    assert client.get(f"/public/{req.id}").status_code == 404  # the request id is no URL
    page = client.get("/public/1")
    assert page.status_code == 200
    credit = f"By {w.author.display_name} ({w.author.org.name})"
    assert credit in page.text
    assert re.search(r'<div class="marking[^"]*" data-level="public"', page.text)
    assert client.get("/api/v1/public/findings/1").json["credit"] == (
        f"{w.author.display_name} ({w.author.org.name})")
    assert client.get("/api/v1/public/findings/1").json["id"] == 1
    index = client.get("/public/")
    assert 'href="/public/1"' in index.text and f'href="/public/{req.id}"' not in index.text
    assert "Never released" not in index.text

    # the next release is number 2, credited to the organization only
    db.get(Finding, other.id)
    service.withdraw(w.author, pending, reason="")
    again = service.create_publication(w.author, other.id, public_title="Second one",
                                       public_body="Now.", credit="organization")
    approve(w.rev_b, again)
    approve(w.rev_c, again)
    service.release(w.admin, again, seen=seen_of(again))
    assert again.public_id == 2
    second = client.get("/public/2").text
    assert f"By {w.author.org.name}</p>" in second and w.author.display_name not in second
    with pytest.raises(service.ServiceError):
        service.create_publication(w.author, w.finding.id, public_title="x", public_body="y",
                                   credit="everyone")
    db.rollback()

    login(client, w.author)
    home = client.get("/home").text
    assert 'href="/public/"' in home  # the public area from the app
    request_page = client.get(f"/review/requests/{req.id}").text
    assert 'href="/public/1"' in request_page
