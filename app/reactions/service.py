"""Responses to findings and replies: a small fixed set of kinds, one per reader per kind
(toggled), counted per reader and shown by count.

Callers resolve the finding or reply through the visibility gate first
(``app.visibility``): a reader who cannot read it gets the same 404 as for a missing one
before any kind is looked at. Who responded is shown through the disclosure rule
(:func:`app.disclosure.reactors`). A response notifies nobody (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app import disclosure
from app.auth.models import User
from app.db import db
from app.errors import Conflict, ServiceError
from app.findings.models import Finding, Reply
from app.reactions.models import FindingReaction, ReplyReaction


@dataclass(frozen=True)
class Kind:
    key: str
    label: str
    #: what a button's accessible name and tooltip say it means
    meaning: str


KINDS: tuple[Kind, ...] = (
    Kind("agree", "Agree", "I agree"),
    Kind("disagree", "Disagree", "I disagree"),
    Kind("insightful", "Insightful", "This is insightful"),
    Kind("needs_evidence", "Needs evidence", "This needs more evidence"),
    Kind("unclear", "Unclear", "This is unclear to me"),
)
KIND_KEYS = tuple(k.key for k in KINDS)


def check_kind(kind: Any) -> str:
    if not isinstance(kind, str) or kind not in KIND_KEYS:
        raise ServiceError(f"Choose one of: {', '.join(KIND_KEYS)}.", code="unknown_reaction",
                           field="kind")
    return kind


def _check_open(finding: Finding) -> None:
    if finding.locked:
        raise Conflict("This finding is locked: it takes no more responses.", code="locked")


def _set(model: type[FindingReaction] | type[ReplyReaction], key: dict[str, int],
         user: User, kind: str, on: bool | None) -> bool:
    """Set the response on (True), off (False) or to the other state (None)."""
    pk = (*key.values(), user.id, kind)
    existing = db.get(model, pk)
    if on is None:
        on = existing is None
    if existing is not None:
        if not on:
            db.delete(existing)
            db.commit()
        return on
    if not on:
        return False
    db.add(model(**key, user_id=user.id, kind=kind))
    try:
        db.commit()
    except IntegrityError:  # the same reader's other request added it first: it is on
        db.rollback()
    return True


def toggle_finding(user: User, finding: Finding, kind: Any, on: bool | None = None) -> bool:
    """Add ``user``'s response ``kind`` to ``finding``, or take it back (``on``: set it
    rather than toggle); True when it is now on. ``finding`` must come from the
    visibility gate."""
    kind = check_kind(kind)
    _check_open(finding)
    return _set(FindingReaction, {"finding_id": finding.id}, user, kind, on)


def toggle_reply(user: User, reply: Reply, finding: Finding, kind: Any,
                 on: bool | None = None) -> bool:
    """As :func:`toggle_finding`, for a reply (not a hidden one) of ``finding``."""
    kind = check_kind(kind)
    _check_open(finding)
    if reply.hidden:
        raise Conflict("This reply is hidden: it takes no responses.", code="reply_hidden")
    return _set(ReplyReaction, {"reply_id": reply.id}, user, kind, on)


# ---------------------------------------------------------------- reading


@dataclass
class Tally:
    """One kind of response on one finding or reply, as one viewer may see it."""

    kind: Kind
    count: int = 0
    mine: bool = False
    users: list[User] = field(default_factory=list)
    named: list[disclosure.Person] = field(default_factory=list)
    others: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind.key, "label": self.kind.label, "count": self.count,
                "mine": self.mine, "people": [p.username for p in self.named],
                "names": [p.label for p in self.named],
                "others": self.others}


@dataclass
class Responses:
    """Every tally of one finding or reply, in the fixed order of :data:`KINDS`."""

    tallies: list[Tally]

    @property
    def total(self) -> int:
        return sum(t.count for t in self.tallies)

    def as_json(self) -> list[dict[str, Any]]:
        return [t.as_json() for t in self.tallies]


def empty() -> Responses:
    return Responses([Tally(k) for k in KINDS])


@dataclass
class PageResponses:
    finding: Responses
    replies: dict[int, Responses]

    def reply(self, reply_id: int) -> Responses:
        return self.replies.get(reply_id) or empty()

    @property
    def none(self) -> Responses:
        """No responses yet (pages render that bar once and reuse it)."""
        return empty()


def responses(viewer: User, finding: Finding, reply_ids: Iterable[int] = ()) -> PageResponses:
    """The responses to ``finding`` and to the replies ``reply_ids`` (of that finding),
    counted, with the viewer's own marked and the people named as the disclosure rule
    lets ``viewer`` learn them. Two queries, plus one access check per distinct reactor
    the viewer may be shown."""
    by_key = {k.key: k for k in KINDS}
    out = PageResponses(empty(), {})
    index = {k.key: i for i, k in enumerate(KINDS)}

    def add(target: Responses, kind: str, user: User) -> None:
        if kind not in by_key:  # a kind retired since: not shown
            return
        tally = target.tallies[index[kind]]
        tally.count += 1
        tally.mine = tally.mine or user.id == viewer.id
        tally.users.append(user)

    rows = db.execute(select(FindingReaction.kind, User)
                      .join(User, User.id == FindingReaction.user_id)
                      .where(FindingReaction.finding_id == finding.id)
                      .order_by(FindingReaction.created_at, FindingReaction.user_id)).all()
    for kind, user in rows:
        add(out.finding, kind, user)
    ids = list(reply_ids)
    if ids:
        rows = db.execute(select(ReplyReaction.reply_id, ReplyReaction.kind, User)
                          .join(User, User.id == ReplyReaction.user_id)
                          .join(Reply, Reply.id == ReplyReaction.reply_id)
                          .where(ReplyReaction.reply_id.in_(ids),
                                 Reply.finding_id == finding.id)
                          .order_by(ReplyReaction.created_at, ReplyReaction.user_id)).all()
        for reply_id, kind, user in rows:
            add(out.replies.setdefault(reply_id, empty()), kind, user)
    rule = disclosure.For.of(viewer)
    for target in [out.finding, *out.replies.values()]:
        for tally in target.tallies:
            if tally.users:
                tally.named, tally.others = disclosure.reactors(rule, finding, tally.users)
    return out
