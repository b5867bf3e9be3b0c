"""The disclosure rule: who may learn who did what.

``app.access`` decides who may read a finding; this module decides, for a reader of a
finding, whose *name* they may learn for each part someone played in it. Every page, API
serializer, notification (web, API, e-mail), history and the audit view asks here; none
decides on its own. The rule (docs/decisions.md, "The disclosure rule"):

* Everybody learns their own actions.
* Nobody learns anything about a finding they cannot read (the caller shows nothing).
* The **author** of a finding, the **author of a reply** and the **uploader** of a file are
  shown to every reader of the finding (the finding page shows them anyway).
* A **reactor** (someone who agreed, disagreed or reacted to a finding or a reply) is
  shown to every reader of the finding only while the reactor can still read it too
  (:func:`reactors`); once they cannot (a level raised, a compartment narrowed, a
  clearance lowered), their response still counts but nobody else learns their name.
* The parts of the review are named only to those the review rules let see names:
  **admins** (in good standing) and **eligible reviewers** of the finding
  (``rules.exclusion(...) is None``: not its author, not of the author's organization or an
  affiliated one, no declared conflict). Those parts are the **flagger**, a **reviewer**
  (a review, a comment in a review thread, a resolved flag, a revision written by a review
  outcome), an **administrator** acting as such (escalating, reopening, releasing,
  applying, moderating) and a **requester** who is not the author.
  When the policy does not make reviewers anonymous (``anonymous_reviewers = false``),
  the owners of the item (author, requester, flagger) learn them too.
* Everybody else sees the role: "a reviewer", "an administrator", "a member".

It is checked when something is shown, never when it is created, so a conflict declared,
an affiliation added, a level raised or a compartment changed later take effect at once.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app import access, state
from app.findings.models import Finding


class Part(enum.StrEnum):
    """The part someone played in an action on a finding."""

    AUTHOR = "author"
    REPLIER = "replier"
    UPLOADER = "uploader"
    REACTOR = "reactor"
    REQUESTER = "requester"
    FLAGGER = "flagger"
    REVIEWER = "reviewer"
    ADMIN = "admin"
    SYSTEM = "system"


#: What a reader who may not learn the name sees instead (lower case: it is used
#: inside sentences, "Edited by a reviewer"; ``capitalize()`` it to start one).
ROLE_LABELS: dict[Part, str] = {
    Part.AUTHOR: "the author",
    Part.REPLIER: "a member",
    Part.UPLOADER: "a member",
    Part.REACTOR: "a member",
    Part.REQUESTER: "an administrator",
    Part.FLAGGER: "a member",
    Part.REVIEWER: "a reviewer",
    Part.ADMIN: "an administrator",
    Part.SYSTEM: "Enclave",
}

_OPEN_PARTS = frozenset({Part.AUTHOR, Part.REPLIER, Part.UPLOADER, Part.REACTOR})


def _authenticated(viewer: Any) -> bool:
    return viewer is not None and bool(getattr(viewer, "is_authenticated", False))


def is_admin(viewer: Any) -> bool:
    """An administrator in good standing (admins see every name on what they can read)."""
    return (_authenticated(viewer) and bool(getattr(viewer, "is_admin", False))
            and access.in_good_standing(viewer))


def is_eligible_reviewer(viewer: Any, finding: Finding, owners: Iterable[int] = ()) -> bool:
    """``viewer`` may review items about ``finding`` now (the review rules' exclusion)."""
    from app.review import rules  # the review rules import the models this module needs

    return rules.exclusion(viewer, finding, owner_ids=list(owners)) is None


def review_part(actor: Any) -> Part:
    """The part of someone acting in the review: an administrator or a reviewer."""
    return Part.ADMIN if getattr(actor, "is_admin", False) else Part.REVIEWER


class For:
    """The rule for one viewer, remembering per finding what does not depend on the actor
    (can they read it, may they learn review names), so a page naming many people costs a
    few queries, not a few per person. Make one per page or answer and drop it after: a
    conflict declared later must count."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self._reads: dict[int, bool] = {}
        self._names: dict[tuple[int, frozenset[int]], bool] = {}
        self._others_read: dict[tuple[int, int], bool] = {}

    @classmethod
    def of(cls, viewer: Any) -> For:
        return viewer if isinstance(viewer, For) else cls(viewer)

    def can_read(self, finding: Finding) -> bool:
        if finding.id not in self._reads:
            self._reads[finding.id] = access.can_read(self.viewer, finding)
        return self._reads[finding.id]

    def other_can_read(self, user: Any, finding: Finding) -> bool:
        """Can ``user`` (someone named on the page, not the viewer) read ``finding``?"""
        key = (user.id, finding.id)
        if key not in self._others_read:
            self._others_read[key] = access.can_read(user, finding)
        return self._others_read[key]

    def _review_names(self, finding: Finding, owners: frozenset[int]) -> bool:
        key = (finding.id, owners)
        if key not in self._names:
            viewer = self.viewer
            allowed = is_admin(viewer) or is_eligible_reviewer(viewer, finding, owners)
            if not allowed and not state.policy().review.anonymous_reviewers:
                allowed = viewer.id in owners | {finding.author_id}
            self._names[key] = allowed
        return self._names[key]

    def may_learn(self, actor_id: int | None, part: Part, finding: Finding, *,
                  owners: Iterable[int] = ()) -> bool:
        """May the viewer learn that the user ``actor_id`` played ``part`` on ``finding``?

        ``owners`` are the users whose item it is besides the finding's author (the
        flagger of a flag, the requester of a request, the recipient of a review
        notification)."""
        viewer = self.viewer
        if actor_id is None or part is Part.SYSTEM or not _authenticated(viewer):
            return False
        if viewer.id == actor_id:
            return True
        if not self.can_read(finding):
            return False
        if part in _OPEN_PARTS:
            return True
        if part is Part.REQUESTER and actor_id == finding.author_id:
            return True
        return self._review_names(finding, frozenset(owners))

    def person(self, actor: Any, part: Part, finding: Finding, *,
               owners: Iterable[int] = (), pseudonym: str | None = None) -> Person:
        """``actor`` as the viewer may see them (see the module's rule)."""
        if actor is None:
            return Person(ROLE_LABELS[Part.SYSTEM])
        if self.may_learn(actor.id, part, finding, owners=owners):
            return Person(actor.display_name, actor.username, actor.org.name, actor.id)
        return Person(pseudonym or ROLE_LABELS[part])


@dataclass(frozen=True)
class Person:
    """Someone as a viewer may see them: a name (with username and organization) when the
    rule allows it, else a pseudonym or a role with no username and no organization."""

    label: str
    username: str | None = None
    org: str = ""
    user_id: int | None = None

    @property
    def named(self) -> bool:
        return self.username is not None


def may_learn(viewer: Any, actor_id: int | None, part: Part, finding: Finding, *,
              owners: Iterable[int] = ()) -> bool:
    """May ``viewer`` (a user, or a :class:`For`) learn that ``actor_id`` played ``part``
    on ``finding``?"""
    return For.of(viewer).may_learn(actor_id, part, finding, owners=owners)


def person(viewer: Any, actor: Any, part: Part, finding: Finding, *,
           owners: Iterable[int] = (), pseudonym: str | None = None) -> Person:
    """``actor`` as ``viewer`` (a user, or a :class:`For`) may see them."""
    return For.of(viewer).person(actor, part, finding, owners=owners, pseudonym=pseudonym)


def label(viewer: Any, actor: Any, part: Part, finding: Finding, *,
          owners: Iterable[int] = (), pseudonym: str | None = None) -> str:
    """The actor's display name when ``viewer`` may learn it, else ``pseudonym`` (e.g.
    "Reviewer 1") or the role ("a reviewer")."""
    if actor is None:
        return pseudonym or ROLE_LABELS[part]
    return person(viewer, actor, part, finding, owners=owners, pseudonym=pseudonym).label


def username(viewer: Any, actor: Any, part: Part, finding: Finding, *,
             owners: Iterable[int] = ()) -> str | None:
    """The actor's username when ``viewer`` may learn it (for API bodies), else None."""
    return person(viewer, actor, part, finding, owners=owners).username


# ---------------------------------------------------------------- parts of common rows


def reactors(viewer: Any, finding: Finding, users: Iterable[Any]) -> tuple[list[Person], int]:
    """The people who gave one response on ``finding`` (or one of its replies) as
    ``viewer`` may see them: (the named ones, how many others). A reactor is named to the
    viewer when the viewer may learn a :attr:`Part.REACTOR` (every reader of the finding,
    and the reactor themselves) and the reactor can still read the finding; the others are
    only counted."""
    viewer = For.of(viewer)
    named: list[Person] = []
    others = 0
    for user in users:
        if (viewer.may_learn(user.id, Part.REACTOR, finding)
                and (user.id == getattr(viewer.viewer, "id", None)
                     or viewer.other_can_read(user, finding))):
            named.append(Person(user.display_name, user.username, user.org.name, user.id))
        else:
            others += 1
    return named, others



def flag_people(viewer: Any, flag: Any) -> tuple[Person, Person | None]:
    """(flagger, resolver or None) of a dual-use flag as ``viewer`` may see them."""
    owners = [flag.flagger_id]
    viewer = For.of(viewer)
    flagger = person(viewer, flag.flagger, Part.FLAGGER, flag.finding, owners=owners)
    resolver = None
    if flag.resolved_by is not None:
        resolver = person(viewer, flag.resolved_by, Part.REVIEWER, flag.finding,
                          owners=owners)
    return flagger, resolver


def editor_part(finding: Finding, editor: Any) -> Part:
    """A revision's editor: the author, or someone acting for the review or as an
    administrator (a flag raising the level, a declassification, a moderator's edit)."""
    if editor is not None and editor.id == finding.author_id:
        return Part.AUTHOR
    return review_part(editor)


def editor_label(viewer: Any, finding: Finding, revision: Any) -> str:
    """Who wrote a revision, as ``viewer`` may see it ("Edited by ...")."""
    editor = revision.editor
    return label(viewer, editor, editor_part(finding, editor), finding)


def notification_part(note: Any, finding: Finding) -> tuple[Part, list[int]]:
    """The part a notification's actor played, and the item's owners besides the author.

    Review work names the flagger or requester (the item's owner); review results and flag
    outcomes name a reviewer or an administrator (the recipient owns the item); replies,
    mentions and new findings name their author (or an administrator who edited)."""
    actor = note.actor
    if note.kind == "review_work":
        if actor is not None and actor.id == finding.author_id:
            return Part.AUTHOR, []
        return Part.FLAGGER, [note.actor_id] if note.actor_id is not None else []
    if note.kind in ("review_result", "flag_outcome"):
        return review_part(actor), [note.user_id]
    if actor is not None and actor.id == finding.author_id:
        return Part.AUTHOR, []
    reply = note.reply
    if reply is not None and actor is not None and reply.author_id == actor.id:
        return Part.REPLIER, []
    return review_part(actor), []


def notification_actor(viewer: Any, note: Any, finding: Finding) -> tuple[str | None, str]:
    """(username or None, display label) of a notification's actor for ``viewer``, decided
    when the notification is shown."""
    if note.actor is None:
        return None, ""
    part, owners = notification_part(note, finding)
    who = person(viewer, note.actor, part, finding, owners=owners)
    return who.username, who.label
