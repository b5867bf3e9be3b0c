from __future__ import annotations

from sqlalchemy import select

from app.auth.models import Invitation, User
from app.cli import enclave
from app.db import db
from app.orgs.models import Organization
from tests.factories import PASSWORD


def run(app, *args, input=None):  # type: ignore[no-untyped-def]
    return app.test_cli_runner().invoke(enclave, list(args), input=input)


def _refused(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_org_lifecycle(app):
    r = run(app, "org", "add", "acme", "--name", "Acme Labs", "--domain", "acme.example",
            "--domain", "acme-research.example", "--ceiling", "restricted")
    assert r.exit_code == 0 and "acme (pending" in r.output
    assert run(app, "org", "trust", "acme").exit_code == 0
    assert run(app, "org", "ceiling", "acme", "confidential").exit_code == 0
    org = db.scalar(select(Organization).where(Organization.slug == "acme"))
    db.refresh(org)
    assert (org.status, org.ceiling) == ("trusted", "confidential")
    assert org.domain_names == ["acme-research.example", "acme.example"]
    assert run(app, "org", "suspend", "acme").exit_code == 0
    db.refresh(org)
    assert org.status == "suspended"


def test_org_bad_input_changes_nothing(app):
    assert "Unknown level" in _refused(run(app, "org", "add", "x", "--name", "X Lab",
                                           "--domain", "x.example", "--ceiling", "secret"))
    assert "not a domain" in _refused(run(app, "org", "add", "x", "--name", "X Lab",
                                          "--domain", "x", "--ceiling", "network"))
    assert "No organization" in _refused(run(app, "org", "trust", "ghost"))
    assert db.scalar(select(Organization)) is None


def test_user_add_with_password_and_with_invitation(app):
    run(app, "org", "add", "acme", "--name", "Acme Labs", "--domain", "acme.example",
        "--ceiling", "restricted", "--trusted")
    r = run(app, "user", "add", "ann@acme.example", "--org", "acme", "--clearance", "network",
            "--password-stdin", input=PASSWORD + "\n")
    assert r.exit_code == 0, r.output
    user = db.scalar(select(User).where(User.email == "ann@acme.example"))
    assert user.password_hash.startswith("$argon2id$")
    r = run(app, "user", "add", "bob@acme.example", "--org", "acme", "--clearance",
            "restricted", "--role", "org_admin")
    assert r.exit_code == 0
    link = r.output.strip().splitlines()[-1]
    assert "/invite/" in link
    inv = db.scalar(select(Invitation).where(Invitation.email == "bob@acme.example"))
    assert inv.role == "org_admin" and link.rsplit("/", 1)[1] not in inv.token_hash
    _refused(run(app, "user", "add", "eve@elsewhere.example", "--org", "acme",
                 "--clearance", "network"))
    assert "above" in _refused(run(app, "user", "add", "cy@acme.example", "--org", "acme",
                                   "--clearance", "confidential"))
    assert "at least" in _refused(run(app, "user", "add", "dee@acme.example", "--org", "acme",
                                      "--clearance", "network", "--password-stdin",
                                      input="short\n"))
    assert db.scalar(select(User).where(User.email == "dee@acme.example")) is None


def test_user_clearance_disable_and_token(app, client):
    run(app, "org", "add", "acme", "--name", "Acme Labs", "--domain", "acme.example",
        "--ceiling", "restricted", "--trusted")
    run(app, "user", "add", "ann@acme.example", "--org", "acme", "--clearance", "network",
        "--password-stdin", input=PASSWORD + "\n")
    assert run(app, "user", "clearance", "ann@acme.example", "restricted").exit_code == 0
    _refused(run(app, "user", "clearance", "ann@acme.example", "confidential"))
    r = run(app, "token", "create", "ann@acme.example", "--name", "laptop")
    assert r.exit_code == 0
    token = r.output.strip().splitlines()[-1]
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json["clearance"] == "restricted"
    assert run(app, "user", "disable", "ann@acme.example").exit_code == 0
    assert client.get("/api/v1/me",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 401
    _refused(run(app, "user", "disable", "nobody@acme.example"))


def test_init_is_idempotent(app):
    first = run(app, "init")
    second = run(app, "init")
    assert first.exit_code == 0 and second.exit_code == 0
    assert "-> " in second.output and "4 levels" in second.output


def test_seed_demo_once(app):
    r = run(app, "seed-demo", "--if-empty")
    assert r.exit_code == 0, r.output
    assert "admin@northlight.example" in r.output
    statuses = dict(db.execute(select(Organization.slug, Organization.status)).all())
    assert {"pending", "suspended", "trusted"} <= set(statuses.values())
    assert len(statuses) >= 4
    roles = set(db.scalars(select(User.role)))
    assert roles == {"member", "reviewer", "org_admin", "admin"}
    again = run(app, "seed-demo", "--if-empty")
    assert "nothing seeded" in again.output
