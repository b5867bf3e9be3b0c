"""Notifications: watches, @mentions, the in-app list and e-mail (outbox and SMTP).

A notification is never created for a finding the recipient cannot read, and the list,
the count and the e-mail never carry more than the recipient may read now."""

from __future__ import annotations

import email
import socketserver
import threading
from collections.abc import Iterator
from email import policy as email_policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app import state
from app.db import db
from app.findings import service
from app.notifications import service as notify
from app.notifications.models import Notification, Watch
from app.orgs import service as orgs_service
from tests.factories import login, make_org, make_user, post_form
from tests.findings_world import (
    build_world,
    isolated_clients,
    make_category,
    page_text,
    post,
    refresh,
    reply,
)

__all__ = ["isolated_clients"]  # autouse fixture


@pytest.fixture
def outbox(app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """E-mail goes to <instance>/outbox/; give this test its own instance folder."""
    monkeypatch.setattr(state.settings(), "instance_path", tmp_path)
    monkeypatch.setattr(state.settings(), "smtp_url", None)
    return tmp_path / "outbox"


def mails(folder: Path) -> list[email.message.EmailMessage]:
    if not folder.exists():
        return []
    return [email.message_from_bytes(p.read_bytes(), policy=email_policy.default)
            for p in sorted(folder.glob("*.eml"))]


def notes_for(user: Any) -> list[tuple[str, int]]:
    return [(n.kind, n.finding_id) for n in db.scalars(
        select(Notification).where(Notification.user_id == user.id).order_by(Notification.id))]


def test_watchers_hear_about_replies_they_can_read(client, app, outbox):
    w = build_world()
    carol, nina, omar = w.users["carol"], w.users["nina"], w.users["omar"]
    net = w.findings["net"]
    login(client, nina)
    response = post_form(client, f"/findings/{net.id}/watch", {}, form_url=f"/findings/{net.id}")
    assert response.status_code == 302
    assert db.scalar(select(func.count()).select_from(Watch)
                     .where(Watch.user_id == nina.id, Watch.finding_id == net.id)) == 1
    before = len(mails(outbox))
    reply(omar, refresh(net), "Replicated on a bigger model.")
    assert notes_for(nina) == [("reply", net.id)]
    assert ("reply", net.id) in notes_for(carol)  # authors watch their findings
    assert ("reply", net.id) not in notes_for(omar)  # never for your own reply
    assert len(mails(outbox)) == before + 2
    listing = page_text(client.get("/notifications/"))
    assert "Omar Tester replied" in listing and net.title in listing
    assert "Replicated on a bigger model." in listing
    assert "Notifications (1 new)" in listing
    assert notify.unread_count(refresh(nina)) == 1
    client.get(f"/findings/{net.id}")  # opening the finding reads its notifications
    assert notify.unread_count(refresh(nina)) == 0


def test_mentions_reach_only_people_who_can_read_the_finding(app, outbox):
    w = build_world()
    carol = w.users["carol"]
    before = {name: notes_for(u) for name, u in w.users.items()}
    conf = post(carol, title="Secret circuit", level="confidential",
                body="@omar @nina @eve @sam @pat @root please look")
    for name in ("omar", "nina", "eve", "sam", "pat"):
        assert notes_for(w.users[name]) == before[name], name
    assert notes_for(w.users["root"])[-1] == ("mention", conf.id)
    shared = post(carol, title="Shared with east", level="confidential", orgs=["east"],
                  body="cc @eve")
    assert notes_for(w.users["eve"])[-1] == ("mention", shared.id)
    reply(carol, w.findings["res"], "what do @nina and @omar think? `@sam` in code")
    assert notes_for(w.users["omar"])[-1] == ("mention", w.findings["res"].id)
    assert notes_for(w.users["nina"]) == before["nina"]
    assert notes_for(w.users["sam"]) == before["sam"]
    recipients = {m["To"].addresses[0].username for m in mails(outbox)}
    assert recipients == {"root", "eve", "omar"}


def test_mention_parsing():
    text = ("Hi @ada, @Bob. and @ada again; mail a@b.example; `@code` and\n"
            "```\n@block\n```\n@x @carol_1.")
    assert notify.mentioned_usernames(text) == ["ada", "bob", "carol_1"]


def test_category_watchers_hear_of_new_findings_they_can_read(app, outbox):
    w = build_world()
    carol, nina, omar = w.users["carol"], w.users["nina"], w.users["omar"]
    clients = {}
    for user in (nina, omar):
        clients[user.id] = c = app.test_client()
        login(c, user)
        post_form(c, "/findings/categories/steering/watch", {}, form_url="/findings/categories")
    restricted = post(carol, title="Refusal direction", level="restricted",
                      category="steering")
    assert notes_for(omar)[-1] == ("new_finding", restricted.id)
    assert ("new_finding", restricted.id) not in notes_for(nina)
    opened = post(carol, title="Open steering note", level="network", category="steering")
    assert notes_for(nina)[-1] == ("new_finding", opened.id)
    assert notes_for(omar)[-1] == ("new_finding", opened.id)
    page = page_text(clients[omar.id].get("/notifications/"))
    assert "posted a new finding in Steering" in page


def test_list_and_count_follow_access_changes(client, app, api_token, outbox):
    w = build_world()
    carol, nina, eve = w.users["carol"], w.users["nina"], w.users["eve"]
    net, conf_east = w.findings["net"], w.findings["conf_east"]
    notify.watch_finding(nina, net)
    notify.watch_finding(eve, conf_east)
    reply(carol, net, "first news")
    reply(carol, conf_east, "east news")
    assert notify.unread_count(refresh(nina)) == 1
    assert notify.unread_count(refresh(eve)) == 1
    # raising the level hides the notification (and its title) from nina
    service.edit_finding(refresh(carol), refresh(net), level="restricted")
    assert notify.unread_count(refresh(nina)) == 0
    assert notify.list_for(nina).total == 0
    login(client, nina)
    page = page_text(client.get("/notifications/"))
    assert net.title not in page and "first news" not in page
    body = client.get("/api/v1/notifications", headers=api_token(nina)).json
    assert body["total"] == 0 and body["unread"] == 0
    # a suspended organization: nothing listed, nothing new created
    orgs_service.set_status(None, w.orgs["east"], "suspended")
    eve = refresh(eve)
    assert notify.unread_count(eve) == 0
    created = len(notes_for(eve))
    reply(refresh(carol), refresh(conf_east), "more east news")
    assert len(notes_for(eve)) == created


def test_email_carries_no_finding_text_above_public_without_a_key(app, outbox):
    """The network NDA's "no third-party services": without an OpenPGP key, no title or
    excerpt of a non-public finding goes out in the clear (tests/test_openpgp.py: with
    one, they go encrypted)."""
    w = build_world()
    carol, omar = w.users["carol"], w.users["omar"]
    reply(omar, w.findings["net"], "network reply text")
    reply(omar, w.findings["res"], "restricted reply text")
    by_subject = {m["Subject"]: m for m in mails(outbox) if m["To"].addresses[0].username
                  == "carol"}
    net_mail = next(m for s, m in by_subject.items() if "Network" in s)
    assert "Open network note" not in net_mail["Subject"] + net_mail.get_content()
    assert "network reply text" not in net_mail.get_content()
    assert "OpenPGP key" in net_mail.get_content()
    res_mail = next(m for s, m in by_subject.items() if "Restricted" in s)
    content = res_mail.get_content()
    assert "Restricted note" not in content + res_mail["Subject"]
    assert "restricted reply text" not in content and "zebrafish" not in content
    assert "not sent by e-mail" in content
    assert f"/findings/{w.findings['res'].id}#reply-" in content
    assert all(p.stat().st_mode & 0o077 == 0 for p in outbox.glob("*.eml"))
    assert carol.id  # the author was the recipient


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP to receive a message from smtplib."""

    def handle(self) -> None:
        self.wfile.write(b"220 test ESMTP\r\n")
        lines: list[bytes] = []
        in_data = False
        while True:
            line = self.rfile.readline()
            if not line:
                return
            if in_data:
                if line in (b".\r\n", b".\n"):
                    self.server.messages.append(b"".join(lines))  # type: ignore[attr-defined]
                    lines, in_data = [], False
                    self.wfile.write(b"250 queued\r\n")
                else:
                    lines.append(line[1:] if line.startswith(b"..") else line)
                continue
            verb = line[:4].upper()
            if verb == b"DATA":
                in_data = True
                self.wfile.write(b"354 go on\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def smtp_server() -> Iterator[Any]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpHandler)
    server.messages = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_smtp_is_used_when_configured(app, outbox, smtp_server, monkeypatch):
    port = smtp_server.server_address[1]
    monkeypatch.setattr(state.settings(), "smtp_url",
                        f"smtp://127.0.0.1:{port}?from=enclave@lab.example")
    make_category("circuits")
    carol = make_user(make_org("north"), name="carol")
    omar = make_user(make_org("mer"), name="omar")
    finding = post(carol, title="Heads", level="network")
    reply(omar, finding, "Seen, @carol.")
    assert not outbox.exists()
    assert len(smtp_server.messages) == 1
    msg = email.message_from_bytes(smtp_server.messages[0], policy=email_policy.default)
    assert msg["From"] == "enclave@lab.example"
    assert msg["To"].addresses[0].addr_spec == carol.email
    assert "mentioned you" in msg["Subject"]
    assert db.scalar(select(Notification.emailed_at)) is not None


def test_mark_all_read_needs_the_form(client, app, outbox):
    w = build_world()
    nina = w.users["nina"]
    notify.watch_finding(nina, w.findings["net"])
    reply(w.users["carol"], w.findings["net"], "ping")
    login(client, nina)
    assert client.post("/notifications/read").status_code == 400
    assert notify.unread_count(refresh(nina)) == 1
    post_form(client, "/notifications/read", {}, form_url="/notifications/")
    assert notify.unread_count(refresh(nina)) == 0
