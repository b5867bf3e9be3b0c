"""The review commands enforce the same rules as the web pages and the API."""

from __future__ import annotations

from sqlalchemy import select

from app.cli import enclave
from app.db import db
from app.review.models import OrgAffiliation, Review
from tests.review_world import approve, build_world, publish_request, scores


def run(app, *args):  # type: ignore[no-untyped-def]
    return app.test_cli_runner().invoke(enclave, list(args))


def _score_args() -> list[str]:
    out: list[str] = []
    for key, value in scores().items():
        out += ["--score", f"{key}={value}"]
    return out


def _pin_args(req) -> list[str]:  # type: ignore[no-untyped-def]
    db.refresh(req)
    return ["--content-sha256", req.content_sha256, "--round", str(req.round)]


def _one_error_line(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_affiliations_and_decisions_from_the_command_line(app):
    w = build_world()
    req = publish_request(w)
    r = run(app, "review", "affiliate", "bravo", "authorlab", "--note", "parent")
    assert r.exit_code == 0 and "affiliated" in r.output
    assert "already affiliated" in _one_error_line(run(app, "review", "affiliate", "authorlab",
                                                        "bravo"))
    assert "authorlab\tbravo\tparent" in run(app, "review", "affiliations").output
    line = _one_error_line(run(app, "review", "decide", str(req.id), "--as", w.rev_b.email,
                               "--decision", "approve", "--risk", "low", *_score_args(),
                               *_pin_args(req)))
    assert "affiliated" in line
    line = _one_error_line(run(app, "review", "decide", str(req.id), "--as", w.rev_c.email,
                               "--decision", "approve", "--risk", "low",
                               "--score", "capability_uplift=9", *_pin_args(req)))
    assert "must be a whole number from 0 to 4" in line
    assert db.scalar(select(Review)) is None
    assert "1 item(s)" in run(app, "review", "queue", w.rev_c.email).output
    r = run(app, "review", "decide", str(req.id), "--as", w.rev_c.email, "--decision",
            "approve", "--risk", "low", *_score_args(), *_pin_args(req))
    assert r.exit_code == 0, r.stderr
    assert "0 item(s)" in run(app, "review", "queue", w.rev_c.email).output
    assert run(app, "review", "unaffiliate", "authorlab", "bravo").exit_code == 0
    assert db.scalar(select(OrgAffiliation)) is None
    assert "needs 2" in _one_error_line(run(app, "review", "release", str(req.id), "--as",
                                            w.admin.email, *_pin_args(req)))
    approve(w.rev_b, req)
    r = run(app, "review", "release", str(req.id), "--as", w.admin.email, *_pin_args(req))
    assert r.exit_code == 0 and "released" in r.output
