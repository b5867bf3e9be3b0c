"""E-mail for notifications: SMTP when ENCLAVE_SMTP_URL is set, otherwise ``.eml`` files
in ``<instance>/outbox/`` that a developer can open.

An e-mail leaves the network (mailboxes, relays, phones: the network NDA's "no
third-party services"), so in the clear it carries finding text (title and a short
excerpt) only at the public level; above it, it says what happened, the level and the
link. A member who gave an OpenPGP public key (``app.notifications.openpgp``) gets the
title and excerpt at every level they can read, encrypted to that key (PGP/MIME, RFC
3156); the subject never carries finding text.
``ENCLAVE_SMTP_URL`` looks like ``smtp://user:pass@host:25``, ``smtp+starttls://host:587``
or ``smtps://host:465``, with an optional ``?from=enclave@example.org``.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import tempfile
from email.encoders import encode_7or8bit
from email.message import EmailMessage, Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.utils import formataddr, make_msgid
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from app import access, state
from app.auth.models import User
from app.db import db, utcnow
from app.findings.models import Finding
from app.notifications import openpgp
from app.notifications.models import Notification
from app.notifications.service import (
    KIND_MENTION,
    KIND_NEW_FINDING,
    KIND_REPLY,
    describe,
    is_shown,
)
from app.policy import PUBLIC_LEVEL

EXCERPT_CHARS = 300
_DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


def text_allowed(level: str) -> bool:
    """Finding text may go into a clear e-mail only at the public level."""
    return level == PUBLIC_LEVEL


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS].rsplit(" ", 1)[0] + " …"


def _from_address(query: dict[str, list[str]]) -> str:
    if query.get("from"):
        return query["from"][0]
    host = urlsplit(state.settings().base_url).hostname or "localhost"
    return formataddr(("Enclave", f"no-reply@{host}"))


def build_message(note: Notification, recipient: User, finding: Finding) -> Message:
    settings = state.settings()
    level = state.policy().level(finding.level)
    what = describe(note, finding, recipient)
    link = f"{settings.base_url.rstrip('/')}/findings/{finding.id}"
    if note.reply_id:
        link += f"#reply-{note.reply_id}"
    why = {KIND_REPLY: "you watch this finding",
           KIND_MENTION: "you were mentioned",
           KIND_NEW_FINDING: "you watch this category"}.get(note.kind, "of your settings")
    head = [f"{what} on Enclave.", "", f"Finding #{finding.id} · level: {level.label}"]
    source = note.reply.body if note.reply is not None and not note.reply.hidden \
        else finding.body
    text = [f"Title: {finding.title}", "", _excerpt(source), ""]
    tail = [f"Open it: {link}", "", f"You get this e-mail because {why}."]
    subject = f"[Enclave] {what} (finding #{finding.id}, {level.label})"
    msg: Message
    if openpgp.usable(recipient):
        inner = EmailMessage()
        inner.set_content("\n".join([*head, "", *text, *tail]))
        armored = openpgp.encrypt(recipient, inner.as_string())
        msg = MIMEMultipart("encrypted", protocol="application/pgp-encrypted")
        msg.preamble = "This is an OpenPGP/MIME encrypted message (RFC 3156)."
        control = MIMEApplication("Version: 1\n", "pgp-encrypted", _encoder=encode_7or8bit)
        control["Content-Description"] = "PGP/MIME version identification"
        body = MIMEApplication(armored, "octet-stream", _encoder=encode_7or8bit)
        body["Content-Description"] = "OpenPGP encrypted message"
        body.add_header("Content-Disposition", "inline", filename="encrypted.asc")
        msg.attach(control)
        msg.attach(body)
    else:
        msg = EmailMessage()
        if text_allowed(finding.level):
            subject = f"[Enclave] {what}: {finding.title}"
            lines = [*head, *text, *tail]
        else:
            lines = [*head, "", f"{level.label} content is not sent by e-mail in the clear. "
                     "Sign in to read it, or add your OpenPGP key to your profile to receive "
                     "it encrypted.", "", *tail]
        msg.set_content("\n".join(lines))
    query = parse_qs(urlsplit(settings.smtp_url or "").query)
    msg["From"] = _from_address(query)
    msg["To"] = formataddr((recipient.display_name, recipient.email))
    msg["Subject"] = subject.replace("\n", " ")
    msg["Message-ID"] = make_msgid(domain="enclave.invalid")
    msg["X-Enclave-Notification"] = str(note.id)
    return msg


def send(note: Notification) -> bool:
    """Deliver one notification; False when the recipient can no longer read it."""
    recipient = db.get(User, note.user_id)
    finding = db.get(Finding, note.finding_id)
    if recipient is None or finding is None or not access.can_read(recipient, finding) \
            or not is_shown(recipient, note):
        return False
    msg = build_message(note, recipient, finding)
    settings = state.settings()
    deliver_message(msg, f"{note.id}-{note.kind}", smtp_url=settings.smtp_url,
                    outbox=settings.instance_path / "outbox")
    return True


def sender_address() -> str:
    """The From address: ``?from=`` of ENCLAVE_SMTP_URL, else no-reply at the site's host."""
    return _from_address(parse_qs(urlsplit(state.settings().smtp_url or "").query))


def deliver_message(msg: Message, label: str, *, smtp_url: str | None,
                    outbox: Path) -> None:
    """Send one message: SMTP when ``smtp_url`` is set, otherwise a file in ``outbox``.
    Needs no app context, so it can run after the response was sent."""
    if smtp_url:
        _send_smtp(smtp_url, msg)
    else:
        write_outbox(outbox, msg, label)


def _send_smtp(url: str, msg: Message) -> None:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"ENCLAVE_SMTP_URL scheme must be smtp, smtp+starttls or smtps, "
                         f"got {scheme!r}")
    host = parts.hostname or "localhost"
    port = parts.port or _DEFAULT_PORTS[scheme]
    context = ssl.create_default_context()
    server: smtplib.SMTP
    if scheme == "smtps":
        server = smtplib.SMTP_SSL(host, port, timeout=10, context=context)
    else:
        server = smtplib.SMTP(host, port, timeout=10)
    with server:
        if scheme == "smtp+starttls":
            server.starttls(context=context)
        if parts.username:
            server.login(unquote(parts.username), unquote(parts.password or ""))
        server.send_message(msg)


def write_outbox(folder: Path, msg: Message, label: str) -> Path:
    """Write the message atomically as ``<time>-<label>.eml`` (readable by the owner only)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"{utcnow():%Y%m%dT%H%M%S%f}-{label}.eml"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".eml")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(msg.as_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / name
