"""OpenPGP-encrypted notification e-mail: a member's public key on the profile (page, API,
command line), its fingerprint and expiry warning, and notifications that carry the
finding's text encrypted to it (decrypted here with the member's private key, made by
the system's GnuPG)."""

from __future__ import annotations

import email
import shutil
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from email import policy as email_policy
from pathlib import Path

import gnupg
import pytest
from sqlalchemy import select

from app import state
from app.audit import AuditEntry
from app.auth.models import User
from app.cli import enclave
from app.db import db, utcnow
from app.errors import ServiceError
from app.notifications import openpgp
from tests.factories import login, post_form
from tests.findings_world import build_world, isolated_clients, refresh, reply

__all__ = ["isolated_clients"]  # autouse fixture

if shutil.which("gpg") is None:  # CI installs Debian's gnupg
    pytest.skip("GnuPG (gpg) is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def keyring() -> Iterator[gnupg.GPG]:
    """The member's side: a GnuPG home holding their private keys."""
    home = tempfile.mkdtemp(prefix="member-gpg-")
    try:
        yield gnupg.GPG(gnupghome=home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def new_key(gpg: gnupg.GPG, email_address: str, expire: str = "2y") -> str:
    spec = gpg.gen_key_input(key_type="EDDSA", key_curve="ed25519", subkey_type="ECDH",
                             subkey_curve="cv25519", name_email=email_address,
                             no_protection=True, expire_date=expire)
    key = gpg.gen_key(spec)
    assert key.fingerprint, key.stderr
    return key.fingerprint


@pytest.fixture
def outbox(app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(state.settings(), "instance_path", tmp_path)
    monkeypatch.setattr(state.settings(), "smtp_url", None)
    return tmp_path / "outbox"


def mails_to(folder: Path, username: str) -> list[email.message.EmailMessage]:
    found = [email.message_from_bytes(p.read_bytes(), policy=email_policy.default)
             for p in sorted(folder.glob("*.eml"))] if folder.exists() else []
    return [m for m in found if m["To"].addresses[0].username == username]


def test_notifications_carry_the_text_encrypted_to_the_members_key(app, outbox, keyring):
    w = build_world()
    carol, omar = w.users["carol"], w.users["omar"]
    fingerprint = new_key(keyring, carol.email)
    info = openpgp.set_key(carol, carol, keyring.export_keys(fingerprint))
    assert info.fingerprint == fingerprint and info.expires_at is not None
    reply(omar, w.findings["res"], "restricted reply text, sealed")
    mail = mails_to(outbox, "carol")[-1]
    assert mail.get_content_type() == "multipart/encrypted"
    assert mail.get_param("protocol") == "application/pgp-encrypted"
    control, body = mail.get_payload()
    assert control.get_payload(decode=True).strip() == b"Version: 1"
    armored = body.get_payload(decode=True).decode()
    raw = mail.as_string()
    title = w.findings["res"].title
    assert title not in raw and "restricted reply text" not in raw
    assert "-----BEGIN PGP MESSAGE-----" in armored
    plain = keyring.decrypt(armored)
    assert plain.ok, plain.status
    inner = email.message_from_string(str(plain), policy=email_policy.default).get_content()
    assert title in inner and "restricted reply text, sealed" in inner
    assert f"/findings/{w.findings['res'].id}#reply-" in inner
    # a member without a key gets no text above public (omar writes, carol's colleague
    # reads: the network finding's mail to a keyless watcher)
    openpgp.set_key(carol, refresh(carol), "")
    reply(omar, w.findings["res"], "second reply")
    clear = mails_to(outbox, "carol")[-1]
    assert clear.get_content_type() == "text/plain"
    assert "second reply" not in clear.get_content() and title not in clear.as_string()


def test_the_profile_shows_the_fingerprint_and_warns_before_expiry(app, client, keyring):
    w = build_world()
    carol = w.users["carol"]
    fingerprint = new_key(keyring, carol.email, expire="10d")
    login(client, carol)
    response = post_form(client, "/account/openpgp-key",
                         {"key": keyring.export_keys(fingerprint)}, form_url="/account")
    assert response.status_code == 302
    page = client.get("/account").text
    assert fingerprint in page and "expires on" in page
    entry = db.scalar(select(AuditEntry).where(AuditEntry.action == "openpgp_key_set"))
    assert entry.details_dict["fingerprint"] == fingerprint
    # expired: not used, and the profile says so
    user = refresh(carol)
    user.openpgp_expires_at = utcnow() - timedelta(days=1)
    db.commit()
    assert not openpgp.usable(user)
    assert "expired" in client.get("/account").text
    response = post_form(client, "/account/openpgp-key", {"remove": "1"}, form_url="/account")
    db.expire_all()
    assert db.get(User, carol.id).openpgp_key is None


@pytest.mark.parametrize(("armored", "why"), [
    ("", "Paste an OpenPGP public key"),
    ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot a key\n-----END PGP PUBLIC KEY BLOCK-----",
     "not exactly one"),
    ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n...", "private key"),
])
def test_bad_keys_are_refused_and_change_nothing(app, armored, why):
    w = build_world()
    carol = w.users["carol"]
    with pytest.raises(ServiceError, match=why):
        openpgp.inspect(armored)
    assert refresh(carol).openpgp_key is None


def test_a_signing_only_key_is_refused(app, keyring):
    spec = keyring.gen_key_input(key_type="EDDSA", key_curve="ed25519",
                                 name_email="sign@only.example", no_protection=True,
                                 key_usage="sign")
    key = keyring.gen_key(spec)
    with pytest.raises(ServiceError, match="cannot encrypt"):
        openpgp.inspect(keyring.export_keys(key.fingerprint))


def test_api_and_command_line(app, client, keyring, api_token, tmp_path):
    w = build_world()
    carol = w.users["carol"]
    fingerprint = new_key(keyring, carol.email)
    armored = keyring.export_keys(fingerprint)
    answer = client.put("/api/v1/me/openpgp-key", json={"key": armored},
                        headers=api_token(carol))
    assert answer.status_code == 200 and answer.json["fingerprint"] == fingerprint
    assert client.get("/api/v1/me", headers=api_token(carol)).json["openpgp_fingerprint"] \
        == fingerprint
    bad = client.put("/api/v1/me/openpgp-key", json={"key": "nonsense"},
                     headers=api_token(carol))
    assert bad.status_code == 400
    assert refresh(carol).openpgp_fingerprint == fingerprint  # unchanged
    path = tmp_path / "key.asc"
    path.write_text(armored)
    result = app.test_cli_runner().invoke(enclave, ["user", "openpgp-key", carol.email,
                                                    str(path)])
    assert result.exit_code == 0 and fingerprint in result.output
    path.write_text("garbage")
    refused = app.test_cli_runner().invoke(enclave, ["user", "openpgp-key", carol.email,
                                                     str(path)])
    assert refused.exit_code == 1 and refused.stderr.startswith("error: ")
