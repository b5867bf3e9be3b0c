"""Watches, @mentions and notifications.

A notification is created only for a recipient who can read the finding at that moment
(``access.can_read`` for the recipient, not the actor), and it holds no text: the list
reads titles and excerpts from the finding through ``access.finding_filter`` when it is
shown, so it never shows more than the recipient may read now. Everything is checked
again when shown (list, API, unread count, e-mail): the access rule, a review notice's
recipient still being an eligible reviewer (a conflict or affiliation declared since
hides it), and whose name the recipient may learn (``app.disclosure``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update

from app import access, disclosure, logredact
from app.auth.models import User
from app.db import db, utcnow
from app.findings.models import Category, Finding, Reply
from app.notifications.models import Notification, Watch
from app.pagination import Page, page_args

log = logging.getLogger("enclave.notifications")

KIND_REPLY = "reply"
KIND_MENTION = "mention"
KIND_NEW_FINDING = "new_finding"

MENTION_RE = re.compile(r"(?<![\w@./+-])@([a-z0-9][a-z0-9_.-]{1,38}[a-z0-9])", re.IGNORECASE)
_CODE_RE = re.compile(r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]*`", re.DOTALL)
MAX_MENTIONS = 20

_email_enabled: ContextVar[bool] = ContextVar("enclave_email_enabled", default=True)


@contextlib.contextmanager
def suppress_email() -> Iterator[None]:
    """Create notifications without e-mailing them (demo seeding)."""
    token = _email_enabled.set(False)
    try:
        yield
    finally:
        _email_enabled.reset(token)


def mentioned_usernames(text: str) -> list[str]:
    """``@name`` mentions outside code spans and blocks, lowercased, first 20."""
    names: list[str] = []
    for match in MENTION_RE.finditer(_CODE_RE.sub(" ", text or "")):
        name = match.group(1).lower()
        if name not in names:
            names.append(name)
    return names[:MAX_MENTIONS]


# ---------------------------------------------------------------- watches


def _add_watch(watch: Watch, commit: bool) -> None:
    db.add(watch)
    if commit:
        db.commit()


def watch_finding(user: User, finding: Finding, *, commit: bool = True) -> None:
    if not access.can_read(user, finding):
        return
    if is_watching_finding(user, finding):
        return
    _add_watch(Watch(user_id=user.id, finding_id=finding.id), commit)


def unwatch_finding(user: User, finding: Finding) -> None:
    watch = db.scalar(select(Watch).where(Watch.user_id == user.id,
                                          Watch.finding_id == finding.id))
    if watch is not None:
        db.delete(watch)
    db.commit()


def is_watching_finding(user: User, finding: Finding) -> bool:
    return db.scalar(select(Watch.id).where(Watch.user_id == user.id,
                                            Watch.finding_id == finding.id)) is not None


def watch_category(user: User, category: Category) -> None:
    if category.id in watched_category_ids(user):
        return
    _add_watch(Watch(user_id=user.id, category_id=category.id), True)


def unwatch_category(user: User, category: Category) -> None:
    watch = db.scalar(select(Watch).where(Watch.user_id == user.id,
                                          Watch.category_id == category.id))
    if watch is not None:
        db.delete(watch)
    db.commit()


def watched_category_ids(user: User) -> set[int]:
    return set(db.scalars(select(Watch.category_id).where(Watch.user_id == user.id,
                                                          Watch.category_id.is_not(None))))


# ---------------------------------------------------------------- suggesting

MENTION_PREFIX_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,38}")
MAX_SUGGESTIONS = 8
_SUGGESTION_CANDIDATES = 60


def mention_suggestions(user: Any, finding: Finding, prefix: str) -> list[dict[str, str]]:
    """People ``user`` could @mention in ``finding``: active members whose username or
    display name starts with ``prefix`` and who can read the finding now (access
    checked by the caller for ``user``). Nobody who cannot read it is suggested: that
    would tell who exists at a level they cannot reach, and they would not be notified
    anyway. Up to :data:`MAX_SUGGESTIONS`, by username."""
    prefix = (prefix or "").strip().lower()
    if not MENTION_PREFIX_RE.fullmatch(prefix):
        return []
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    candidates = db.scalars(
        select(User).where(User.is_active.is_(True), User.id != user.id,
                           or_(func.lower(User.username).like(pattern, escape="\\"),
                               func.lower(User.display_name).like(pattern, escape="\\")))
        .order_by(User.username).limit(_SUGGESTION_CANDIDATES)).unique().all()
    out: list[dict[str, str]] = []
    for person in candidates:
        if access.can_read(person, finding):
            out.append({"username": person.username, "name": person.display_name})
            if len(out) == MAX_SUGGESTIONS:
                break
    return out


# ---------------------------------------------------------------- creating


def _mentioned_ids(text: str) -> list[int]:
    names = mentioned_usernames(text)
    if not names:
        return []
    return list(db.scalars(select(User.id).where(func.lower(User.username).in_(names))))


def _create(finding: Finding, reply: Reply | None, actor_id: int,
            recipients: Mapping[int, str]) -> list[Notification]:
    """One notification per recipient who can read ``finding`` now; nobody else."""
    ids = [uid for uid in recipients if uid != actor_id]
    if not ids:
        return []
    users = db.scalars(select(User).where(User.id.in_(ids), User.is_active.is_(True))
                       .order_by(User.id)).unique().all()
    created: list[Notification] = []
    for user in users:
        if not access.can_read(user, finding):
            continue
        note = Notification(user_id=user.id, kind=recipients[user.id], finding_id=finding.id,
                            reply_id=reply.id if reply else None, actor_id=actor_id,
                            created_at=utcnow())
        db.add(note)
        created.append(note)
    db.flush()
    return created


def on_new_finding(finding: Finding) -> list[Notification]:
    """Category watchers and mentioned users (a mention wins over a watch)."""
    recipients: dict[int, str] = {}
    if finding.category_id is not None:
        for uid in db.scalars(select(Watch.user_id)
                              .where(Watch.category_id == finding.category_id)):
            recipients[uid] = KIND_NEW_FINDING
    for uid in _mentioned_ids(finding.body):
        recipients[uid] = KIND_MENTION
    return _create(finding, None, finding.author_id, recipients)


def on_reply(finding: Finding, reply: Reply) -> list[Notification]:
    recipients: dict[int, str] = {}
    for uid in db.scalars(select(Watch.user_id).where(Watch.finding_id == finding.id)):
        recipients[uid] = KIND_REPLY
    for uid in _mentioned_ids(reply.body):
        recipients[uid] = KIND_MENTION
    return _create(finding, reply, reply.author_id, recipients)


def on_edit(finding: Finding, actor: User, old_body: str) -> list[Notification]:
    """Only people newly mentioned by the edit hear about it."""
    before = set(mentioned_usernames(old_body))
    new_names = [n for n in mentioned_usernames(finding.body) if n not in before]
    if not new_names:
        return []
    ids = db.scalars(select(User.id).where(func.lower(User.username).in_(new_names)))
    return _create(finding, None, actor.id, {uid: KIND_MENTION for uid in ids})


def deliver(notifications: list[Notification]) -> None:
    """E-mail notifications after their transaction committed. A mail failure is
    logged and never undoes the post that caused it."""
    if not notifications or not _email_enabled.get():
        return
    from app.notifications import mail

    for note in notifications:
        note_id = note.id
        try:
            if mail.send(note):
                note.emailed_at = utcnow()
                db.commit()
        except Exception as exc:  # noqa: BLE001 - the post is already saved; log, go on
            # A lost database connection leaves the session unusable until rolled back:
            # without this the next note, and the request, failed with a 500.
            db.rollback()
            log.error("could not e-mail notification %s: %s\n%s", note_id,  # no addresses
                      logredact.describe_mail_error(exc), logredact.frames(exc))


# ---------------------------------------------------------------- reading


KIND_REVIEW_WORK = "review_work"  # app.review.notices: "a review waits for you"


def shown_clause(user: User) -> ColumnElement[bool]:
    """Which of ``user``'s notifications are shown now (over ``Notification`` joined with
    ``Finding``): those on findings they can read, and review work only while they may
    still review it (``rules.eligible_clause``; the notice's actor owns the item)."""
    from app.review import rules  # the review feature adds its kinds on top of this one

    owner = func.coalesce(Notification.actor_id, 0)
    return (Notification.user_id == user.id) & access.finding_filter(user) & or_(
        Notification.kind != KIND_REVIEW_WORK, rules.eligible_clause(user, owner))


def _visible(user: User) -> Any:
    return (select(Notification, Finding).join(Finding, Finding.id == Notification.finding_id)
            .where(shown_clause(user)))


def is_shown(user: User, note: Notification) -> bool:
    """The Python form of :func:`shown_clause` for one notification (e-mail)."""
    return db.scalar(select(Notification.id).join(Finding, Finding.id == Notification.finding_id)
                     .where(Notification.id == note.id, shown_clause(user))) is not None


def list_for(user: User, args: Mapping[str, str] | None = None) -> Page:
    """The user's notifications on findings they can read now, newest first."""
    page, per_page = page_args(args or {}, default_per_page=30)
    query = _visible(user)
    total = db.scalar(select(func.count()).select_from(
        query.with_only_columns(Notification.id).order_by(None).subquery())) or 0
    rows = db.execute(query.order_by(Notification.created_at.desc(), Notification.id.desc())
                      .limit(per_page).offset((page - 1) * per_page)).unique().all()
    return Page([tuple(r) for r in rows], page, per_page, total)


def unread_count(user: User) -> int:
    query = (select(func.count()).select_from(Notification)
             .join(Finding, Finding.id == Notification.finding_id)
             .where(shown_clause(user), Notification.read_at.is_(None)))
    return db.scalar(query) or 0


def mark_read_for_finding(user: User, finding_id: int) -> None:
    """Opening a finding reads its notifications (caller commits)."""
    db.execute(update(Notification)
               .where(Notification.user_id == user.id, Notification.finding_id == finding_id,
                      Notification.read_at.is_(None))
               .values(read_at=utcnow()))


def mark_all_read(user: User) -> None:
    db.execute(update(Notification)
               .where(Notification.user_id == user.id, Notification.read_at.is_(None))
               .values(read_at=utcnow()))
    db.commit()


# Other features that create Notification rows of their own kinds add a text here
# (kind -> sentence without names), e.g. KIND_TEXTS["review_work"] = "A review waits".
KIND_TEXTS: dict[str, str] = {}


def actor_of(viewer: Any, note: Notification, finding: Finding) -> tuple[str | None, str]:
    """(username or None, label) of the actor as ``viewer`` may learn it, decided now."""
    return disclosure.notification_actor(viewer, note, finding)


def describe(note: Notification, finding: Finding, viewer: Any) -> str:
    """One sentence for the notification, naming the actor only as ``viewer`` may learn."""
    name, who = actor_of(viewer, note, finding)
    if name is None:  # a role ("a reviewer") or nobody
        who = (who or "someone").capitalize()
    if note.kind == KIND_MENTION:
        return f"{who} mentioned you"
    if note.kind == KIND_REPLY:
        return f"{who} replied"
    if note.kind == KIND_NEW_FINDING:
        where = f" in {finding.category.name}" if finding.category else ""
        return f"{who} posted a new finding{where}"
    return KIND_TEXTS.get(note.kind, "There is news on a finding you follow")
