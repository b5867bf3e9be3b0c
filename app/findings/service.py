"""Findings: categories, posting, replies, edits with history, reading, moderation, lists.

Every list goes through ``access.finding_filter``; every single read goes through
``get_finding`` (``access.denial``). Validation happens before anything is written, so a
refused request changes nothing.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, func, literal, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased, defaultload
from sqlalchemy.orm.attributes import set_committed_value

from app import access, audit, disclosure, sealing, state, visibility
from app.attachments import service as attachments
from app.auth.models import User
from app.db import db, serialize_writes, utcnow
from app.errors import Conflict, Forbidden, NotFound, ServiceError
from app.findings.models import (
    Category,
    Finding,
    FindingOrg,
    FindingRead,
    FindingRevision,
    Reply,
)
from app.notifications import service as notify
from app.orgs.models import Organization, OrgStatus
from app.pagination import Page, page_args
from app.policy import Level
from app.rendering import render_markdown
from app.submissions import service as submissions
from app.textdiff import DiffLine, line_diff

TITLE_MAX = 300
CATEGORY_SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
REPLIES_PER_PAGE = 200
AUDITED_ABOVE = "network"  # reading a finding ranked above this level is audit-logged


# Organization.domains is eager (selectin) by default; no findings page shows domains,
# so queries here skip those extra round trips.
FINDING_LOAD = (
    defaultload(Finding.author).defaultload(User.org).lazyload(Organization.domains),
    defaultload(Finding.org).lazyload(Organization.domains),
    defaultload(Finding.compartment).defaultload(FindingOrg.org).lazyload(Organization.domains),
)

# ---------------------------------------------------------------- helpers


def _clean(text: str | None) -> str:
    """Strip NUL characters (PostgreSQL text refuses them) and normalize newlines."""
    return (text or "").replace("\x00", "").replace("\r\n", "\n")


def _check_title(title: str | None) -> str:
    title = " ".join(_clean(title).split())
    if not title:
        raise ServiceError("Give the finding a title.", code="empty_title", field="title")
    if len(title) > TITLE_MAX:
        raise ServiceError(f"A title has at most {TITLE_MAX} characters.", code="title_too_long",
                           field="title")
    return title


def _check_body(body: str | None, name: str = "body") -> str:
    body = _clean(body)
    if not body.strip():
        raise ServiceError("Write something in the body.", code="empty_body", field=name)
    limit = state.settings().max_body_chars
    if len(body) > limit:
        raise ServiceError(f"The text has {len(body):,} characters; the maximum is {limit:,}.",
                           code="body_too_long", field=name)
    return body


def preview_html(body: str | None) -> str:
    """The rendering a text would get if posted now (the editor's Preview tab); nothing
    is stored. The same limit as posting."""
    body = _clean(body)
    limit = state.settings().max_body_chars
    if len(body) > limit:
        raise ServiceError(f"The text has {len(body):,} characters; the maximum is {limit:,}.",
                           code="body_too_long", field="body")
    return render_markdown(body) if body.strip() else ""


def is_moderator(user: User) -> bool:
    return bool(user.is_admin) and access.in_good_standing(user)


def _audited(level: str) -> bool:
    policy = state.policy()
    threshold = policy.rank(AUDITED_ABOVE) if policy.is_level(AUDITED_ABOVE) else 1
    return policy.is_level(level) and policy.rank(level) > threshold


def tune_postgres(*, statement_timeout_ms: int | None = None, custom_plans: bool = False
                  ) -> None:
    """For this transaction on PostgreSQL, in one round trip: optionally a statement
    timeout, and plans made for each statement's own values (``custom_plans``: a search
    for a rare word and one for a word in every document need different plans, and a
    reused generic plan would fit neither). JIT is off for every connection
    (``app.db.make_engine``). No-op on SQLite."""
    if db.get_bind().dialect.name != "postgresql":
        return
    settings = []
    if statement_timeout_ms:
        settings.append(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
    if custom_plans:
        settings.append("SET LOCAL plan_cache_mode = force_custom_plan")
    if settings:
        db.execute(text("; ".join(settings)))


def highest_level(levels: Iterable[str]) -> Level | None:
    """The page marking for content at ``levels`` (None when the page shows none)."""
    keys = [k for k in levels if state.policy().is_level(k)]
    return state.policy().highest(keys) if keys else None


# ---------------------------------------------------------------- categories


def list_categories() -> list[Category]:
    return list(db.scalars(select(Category).order_by(Category.name)))


def get_category(slug: str) -> Category:
    category = db.scalar(select(Category).where(Category.slug == slug))
    if category is None:
        raise NotFound(f"No category {slug!r}.")
    return category


def category_for(slug: str | None) -> Category:
    """The category named in a form or request; a clear error when missing or unknown."""
    slug = (slug or "").strip()
    if not slug:
        raise ServiceError("Choose a category.", code="missing_category", field="category")
    category = db.scalar(select(Category).where(Category.slug == slug))
    if category is None:
        raise ServiceError(f"There is no category {slug!r}.", code="unknown_category",
                           field="category")
    return category


def _check_category_fields(name: str, description: str) -> tuple[str, str]:
    name = " ".join(_clean(name).split())
    if not 2 <= len(name) <= 120:
        raise ServiceError("A category name has 2-120 characters.", field="name")
    description = _clean(description).strip()
    if len(description) > 2000:
        raise ServiceError("A description has at most 2,000 characters.", field="description")
    return name, description


def create_category(actor: User, *, slug: str, name: str, description: str = "") -> Category:
    if not is_moderator(actor):
        raise Forbidden("Only administrators manage categories.")
    slug = (slug or "").strip().lower()
    if not CATEGORY_SLUG_RE.match(slug):
        raise ServiceError("A slug is 1-64 lowercase letters, digits and '-'.", field="slug")
    name, description = _check_category_fields(name, description)
    if db.scalar(select(Category.id).where(Category.slug == slug)):
        raise ServiceError(f"The slug {slug!r} is taken.", field="slug")
    category = Category(slug=slug, name=name, description=description)
    db.add(category)
    db.flush()
    audit.record("category_created", actor=actor, target_type="category", target_id=slug,
                 name=name)
    db.commit()
    return category


def rename_category(actor: User, category: Category, *, name: str,
                    description: str | None = None) -> None:
    if not is_moderator(actor):
        raise Forbidden("Only administrators manage categories.")
    name, new_description = _check_category_fields(
        name, category.description if description is None else description)
    if name == category.name and new_description == category.description:
        return
    old = category.name
    category.name = name
    category.description = new_description
    audit.record("category_renamed", actor=actor, target_type="category",
                 target_id=category.slug, old=old, new=name)
    db.commit()


# ---------------------------------------------------------------- levels and compartments


def postable_levels(user: User) -> list[Level]:
    """Levels the user may post at: readable ones, never the lowest (``public``)."""
    policy = state.policy()
    readable = access.readable_levels(user)
    return [lv for lv in policy.levels if lv.key in readable and lv.rank > 0]


def _check_level(user: User, level: str | None, *, field_name: str = "level") -> Level:
    policy = state.policy()
    level = (level or "").strip()
    if not policy.is_level(level):
        raise ServiceError(f"There is no level {level!r}; levels are "
                           f"{', '.join(policy.level_keys())}.", code="unknown_level",
                           field=field_name)
    lv = policy.level(level)
    if lv.rank == 0:
        raise ServiceError(f"{lv.label} is only reached through a dual-use review; post at a "
                           "restricted level and ask for publication.", code="level_public",
                           field=field_name)
    if level not in access.readable_levels(user):
        raise ServiceError(f"You cannot post at {lv.label}: it is above what you may read "
                           "(clearance, organization ceiling, NDAs or two-factor "
                           "authentication).", code="level_above_clearance", field=field_name)
    return lv


def trusted_orgs() -> list[Organization]:
    return list(db.scalars(select(Organization)
                           .where(Organization.status == OrgStatus.TRUSTED.value)
                           .order_by(Organization.name)))


def _resolve_orgs(slugs: Sequence[str] | None, *,
                  allowed_existing: AbstractSet[int] = frozenset()) -> set[int]:
    """Organization ids for ``slugs``; each must exist and be trusted (or already named)."""
    if slugs is None:
        return set()
    if not isinstance(slugs, list | tuple) or not all(isinstance(s, str) for s in slugs):
        raise ServiceError("'orgs' is a list of organization slugs.", code="bad_field",
                           field="orgs")
    wanted = {s.strip().lower() for s in slugs if s.strip()}
    if not wanted:
        return set()
    found = {o.slug: o for o in db.scalars(select(Organization)
                                            .where(Organization.slug.in_(wanted)))}
    ids: set[int] = set()
    for slug in sorted(wanted):
        org = found.get(slug)
        if org is None:
            raise ServiceError(f"There is no organization {slug!r}.", code="unknown_org",
                               field="orgs")
        if org.status != OrgStatus.TRUSTED.value and org.id not in allowed_existing:
            raise ServiceError(f"{org.name} is not a trusted organization; a compartment "
                               "names trusted organizations only.", code="untrusted_org",
                               field="orgs")
        ids.add(org.id)
    return ids


def _compartment_slugs(finding: Finding) -> str:
    return " ".join(sorted(c.org.slug for c in finding.compartment)) if finding.compartmented \
        else ""


# ---------------------------------------------------------------- reading


def get_finding(user: User, finding_id: int) -> Finding:
    """The finding if ``user`` may read it; 404 otherwise (NDA/MFA only for the cleared)."""
    return visibility.finding_or_404(user, finding_id, options=FINDING_LOAD)


def body_html(finding: Finding | Reply) -> str:
    """The cached rendering (rendered on the fly for rows that predate the cache)."""
    return finding.body_html or render_markdown(finding.body)


def record_view(user: User, finding: Finding) -> None:
    """A reader opened the finding: audit it above ``network``, mark it and its
    notifications read. Call only after ``get_finding`` allowed the read."""
    if _audited(finding.level):
        audit.record("finding_read", actor=user, target_type="finding", target_id=finding.id,
                     level=finding.level)
    elif db.get_bind().dialect.name == "postgresql":
        # only read markers in this commit: losing one in a crash is harmless, so do
        # not wait for the WAL flush (an audited read above does wait)
        db.execute(text("SET LOCAL synchronous_commit = off"))
    _mark_read(user.id, finding.id)
    notify.mark_read_for_finding(user, finding.id)
    db.commit()


def _mark_read(user_id: int, finding_id: int) -> None:
    now = utcnow()
    dialect = db.get_bind().dialect.name
    values = {"user_id": user_id, "finding_id": finding_id, "last_read_at": now}
    if dialect == "postgresql":
        stmt = postgresql.insert(FindingRead).values(**values).on_conflict_do_update(
            index_elements=["user_id", "finding_id"], set_={"last_read_at": now})
        db.execute(stmt)
    elif dialect == "sqlite":
        stmt = sqlite.insert(FindingRead).values(**values).on_conflict_do_update(
            index_elements=["user_id", "finding_id"], set_={"last_read_at": now})
        db.execute(stmt)
    else:  # pragma: no cover - only the two supported backends
        row = db.get(FindingRead, (user_id, finding_id))
        if row is None:
            db.add(FindingRead(**values))
        else:
            row.last_read_at = now


@dataclass(frozen=True)
class ReplyView:
    """A reply as pages and the API show it: plain values read with one joined query
    (building ORM objects for a hundred replies and their authors costs several times
    more than the query itself). Its texts arrive sealed and are opened on first use
    (``app.sealing.reveal``), so a page opens only what it shows."""

    id: int
    finding_id: int
    level: str
    body_sealed: bytes
    html_sealed: bytes
    created_at: datetime
    hidden: bool
    reason_sealed: bytes
    author_username: str
    author_name: str
    author_org: str
    created_iso: str = ""
    created_text: str = ""

    @cached_property
    def body(self) -> str:
        return sealing.reveal(Reply.body_sealed, self.id, self.level, self.body_sealed)

    @cached_property
    def cached_html(self) -> str:
        return sealing.reveal(Reply.body_html_sealed, self.id, self.level, self.html_sealed)

    @cached_property
    def hidden_reason(self) -> str:
        return sealing.reveal(Reply.hidden_reason_sealed, self.id, self.level,
                              self.reason_sealed)

    @property
    def html(self) -> str:
        return self.cached_html or render_markdown(self.body)


_REPLY_VIEW_COLUMNS = (Reply.id, Reply.finding_id, Reply.body_sealed, Reply.body_html_sealed,
                       Reply.created_at, Reply.hidden, Reply.hidden_reason_sealed,
                       User.username, User.display_name, Organization.name)


def _reply_views(query: Select[Any], level: str) -> list[ReplyView]:
    return [ReplyView(row[0], row[1], level, *row[2:], row[4].isoformat(),
                      row[4].strftime("%Y-%m-%d %H:%M"))
            for row in db.execute(query)]


def reply_view(reply: Reply) -> ReplyView:
    author = reply.author
    level = sealing.LevelLookup(db()).finding(reply.finding_id)
    return ReplyView(reply.id, reply.finding_id, level, reply.body_sealed,
                     reply.body_html_sealed, reply.created_at, reply.hidden,
                     reply.hidden_reason_sealed, author.username, author.display_name,
                     author.org.name, reply.created_at.isoformat(),
                     reply.created_at.strftime("%Y-%m-%d %H:%M"))


def replies_page(user: User, finding: Finding, page: int = 1) -> Page:
    """Replies of a readable finding, oldest first (they inherit its access)."""
    page = max(1, page)
    query = (select(*_REPLY_VIEW_COLUMNS)
             .join(User, User.id == Reply.author_id)
             .join(Organization, Organization.id == User.org_id)
             .where(Reply.finding_id == finding.id)
             .order_by(Reply.created_at, Reply.id)
             .limit(REPLIES_PER_PAGE).offset((page - 1) * REPLIES_PER_PAGE))
    return Page(_reply_views(query, finding.level), page, REPLIES_PER_PAGE,
                finding.reply_count)


def get_reply(user: User, reply_id: int) -> Reply:
    return visibility.reply_or_404(user, reply_id)


def lock(finding: Finding) -> None:
    """Serialize the writers of one finding, then re-read it (call before the checks):
    a row lock on PostgreSQL, so that an edit, or a request or flag checked against the
    finding's open ones, made at the same moment waits for the other and then sees its
    result instead of overwriting or duplicating it unseen. On SQLite, where ``FOR UPDATE``
    means nothing, the database's write lock is taken at once instead."""
    serialize_writes()
    db.execute(select(Finding.id).where(Finding.id == finding.id).with_for_update())
    db.refresh(finding)


class EditConflict(Conflict):
    """The edit was based on an older version: someone else changed the finding since.
    Nothing was written; ``current`` is the version it is at now."""

    code = "edit_conflict"

    def __init__(self, base: int, current: int):
        super().__init__(f"Someone else edited this finding after you opened it (you edited "
                         f"version {base}; it is at version {current} now). Your changes "
                         "were not saved.")
        self.base = base
        self.current = current


def conflict_diff(finding: Finding, mine: str | None) -> list[DiffLine]:
    """After an edit conflict: the current body against the text the editor sent."""
    return _diff(finding.body, _clean(mine))


def etag(finding: Finding) -> str:
    """The finding's entity tag (quoted), from its version."""
    return f'"v{finding.version}"'


def can_edit(user: User, finding: Finding) -> bool:
    return (user.id == finding.author_id or is_moderator(user)) and access.can_read(user, finding)


# ---------------------------------------------------------------- writing


def create_finding(author: User, *, title: str | None, body: str | None,
                   category: str | None, level: str | None,
                   orgs: Sequence[str] | None = None, submission: str | None = None) -> Finding:
    """Post a finding. Validates everything first; the author's org is always in a
    compartment, and a level whose policy requires a compartment always gets one.
    ``submission`` is the form's one-time token (or the API's idempotency key): the same
    token twice posts one finding (``submissions.AlreadySubmitted`` the second time)."""
    if not access.in_good_standing(author):
        raise NotFound()
    once = submissions.claim(author, submission, "finding")
    title = _check_title(title)
    body = _check_body(body)
    cat = category_for(category)
    lv = _check_level(author, level)
    org_ids = _resolve_orgs(orgs)
    compartmented = bool(org_ids) or lv.requires_compartment
    now = utcnow()
    finding = Finding(title=title, body=body, body_html=render_markdown(body), level=lv.key,
                      compartmented=compartmented, category_id=cat.id, author_id=author.id,
                      org_id=author.org_id, created_at=now, updated_at=now)
    if compartmented:
        finding.compartment = [FindingOrg(org_id=i) for i in sorted(org_ids | {author.org_id})]
    db.add(finding)
    db.flush()
    submissions.settle(once, "finding", finding.id)
    audit.record("finding_created", actor=author, target_type="finding", target_id=finding.id,
                 level=lv.key, category=cat.slug, compartment=_compartment_slugs(finding))
    _mark_read(author.id, finding.id)
    notify.watch_finding(author, finding, commit=False)
    pending = notify.on_new_finding(finding)
    db.commit()
    notify.deliver(pending)
    return finding


def edit_finding(actor: User, finding: Finding, *, title: str | None = None,
                 body: str | None = None, level: str | None = None,
                 orgs: Sequence[str] | None = None, base_version: int | None = None) -> bool:
    """Edit title/body/level/compartment, keeping the old state as a revision.

    Raising the level or narrowing the compartment is immediate; lowering the level or
    widening the compartment is a declassification and is refused (it needs a review).
    Returns False when nothing changed.

    ``base_version`` is the version the editor started from (the edit form's hidden
    field, the API's ``If-Match``): when the finding moved on since, :class:`EditConflict`
    is raised and nothing is written (optimistic concurrency; the version check and the
    write are one conditional UPDATE, so it holds on SQLite too). Without it, concurrent
    edits apply one after the other, each to the version the previous one left (every
    version stays in the history).
    """
    lock(finding)
    if not can_edit(actor, finding):
        if access.can_read(actor, finding):
            raise Forbidden("Only the author or an administrator can edit this finding.")
        raise NotFound()
    if base_version is not None and base_version != finding.version:
        raise EditConflict(base_version, finding.version)
    if finding.locked:
        raise Conflict("This finding is locked by a moderator; it cannot be edited.",
                       code="locked")
    policy = state.policy()
    new_title = _check_title(title) if title is not None else finding.title
    new_body = _check_body(body) if body is not None else finding.body
    new_level = finding.level
    if level is not None and level != finding.level:
        if not policy.is_level(level):
            _check_level(actor, level)  # raises the unknown-level message
        if policy.rank(level) < policy.rank(finding.level):
            raise ServiceError(
                f"Lowering the level from {policy.level(finding.level).label} to "
                f"{policy.level(level).label} is a declassification: it needs a dual-use "
                "review. Raising it is immediate.", code="needs_review", field="level")
        new_level = _check_level(actor, level).key
    lv = policy.level(new_level)

    current_ids = finding.compartment_org_ids if finding.compartmented else set()
    if orgs is not None:
        named = _resolve_orgs(orgs, allowed_existing=current_ids)
        # an empty list on a compartmented finding means "my organization only" (the
        # narrowest); opening a compartment up to everyone would need a review anyway
        keep_closed = bool(named) or lv.requires_compartment or bool(current_ids)
        new_ids = named | {finding.org_id} if keep_closed else set()
    else:
        new_ids = set(current_ids)
        if lv.requires_compartment and not new_ids:
            new_ids = {finding.org_id}
    if current_ids and (not new_ids or not new_ids <= current_ids):
        raise ServiceError("Adding organizations to a compartment (or removing it) widens "
                           "who can read the finding: it needs a dual-use review. Narrowing "
                           "it is immediate.", code="needs_review", field="orgs")

    changed = (new_title != finding.title or new_body != finding.body
               or new_level != finding.level or new_ids != current_ids)
    if not changed:
        return False
    seen = finding.version if base_version is None else base_version
    moved = db.execute(update(Finding).where(Finding.id == finding.id,
                                             Finding.version == seen)
                       .values(version=Finding.version + 1)
                       .execution_options(synchronize_session=False))
    if moved.rowcount != 1:  # another writer got in between (SQLite takes no row lock)
        db.rollback()
        db.refresh(finding)
        raise EditConflict(seen, finding.version)
    set_committed_value(finding, "version", seen + 1)
    old_body = finding.body
    db.add(FindingRevision(finding_id=finding.id, editor_id=actor.id, created_at=utcnow(),
                           old_title=finding.title, old_body=finding.body,
                           old_level=finding.level, old_compartment=_compartment_slugs(finding)))
    raised = new_level != finding.level
    old_level = finding.level
    finding.title = new_title
    if new_body != finding.body:
        finding.body = new_body
        finding.body_html = render_markdown(new_body)
    finding.level = new_level
    if new_ids != current_ids:
        keep = {c.org_id: c for c in finding.compartment}
        finding.compartment = [keep.get(i) or FindingOrg(org_id=i) for i in sorted(new_ids)]
        finding.compartmented = bool(new_ids)
    finding.updated_at = utcnow()
    db.flush()
    audit.record("finding_edited", actor=actor, target_type="finding", target_id=finding.id,
                 level=finding.level, compartment=_compartment_slugs(finding))
    if raised:
        audit.record("finding_level_raised", actor=actor, target_type="finding",
                     target_id=finding.id, old=old_level, new=new_level)
        attachments.rewrap_for_level(finding, new_level, actor=actor)
    _mark_read(actor.id, finding.id)
    pending = notify.on_edit(finding, actor, old_body)
    db.commit()
    notify.deliver(pending)
    return True


def add_reply(author: User, finding: Finding, body: str | None,
              submission: str | None = None) -> Reply:
    """A reply; ``submission`` (the form's one-time token) makes a double post one."""
    if not access.can_read(author, finding):
        raise NotFound()
    once = submissions.claim(author, submission, "reply")
    if finding.locked:
        raise Conflict("This finding is locked by a moderator; it takes no more replies.",
                       code="locked")
    body = _check_body(body)
    now = utcnow()
    reply = Reply(finding_id=finding.id, author_id=author.id, body=body,
                  body_html=render_markdown(body), created_at=now)
    db.add(reply)
    db.flush()
    submissions.settle(once, "reply", reply.id)
    db.execute(update(Finding).where(Finding.id == finding.id)
               .values(reply_count=Finding.reply_count + 1, last_reply_at=now))
    db.flush()
    db.refresh(finding, ["reply_count", "last_reply_at"])
    _mark_read(author.id, finding.id)
    notify.watch_finding(author, finding, commit=False)
    pending = notify.on_reply(finding, reply)
    db.commit()
    notify.deliver(pending)
    return reply


# ---------------------------------------------------------------- moderation


def _moderator(actor: User, finding: Finding) -> None:
    if not access.can_read(actor, finding):
        raise NotFound()
    if not is_moderator(actor):
        raise Forbidden("Only administrators moderate findings.")


def set_locked(actor: User, finding: Finding, locked: bool) -> None:
    _moderator(actor, finding)
    if finding.locked == locked:
        return
    finding.locked = locked
    audit.record("finding_locked" if locked else "finding_unlocked", actor=actor,
                 target_type="finding", target_id=finding.id)
    db.commit()


def move_finding(actor: User, finding: Finding, category: str | None) -> None:
    _moderator(actor, finding)
    cat = category_for(category)
    if cat.id == finding.category_id:
        return
    old = finding.category.slug if finding.category else ""
    finding.category_id = cat.id
    finding.category = cat
    audit.record("finding_moved", actor=actor, target_type="finding", target_id=finding.id,
                 old=old, new=cat.slug)
    db.commit()


def set_reply_hidden(actor: User, reply: Reply, hidden: bool, reason: str = "") -> None:
    """Hide (or show again) a reply. It is kept; readers see that it was hidden."""
    finding = db.get(Finding, reply.finding_id)
    assert finding is not None
    _moderator(actor, finding)
    reason = " ".join(_clean(reason).split())
    if hidden and not reason:
        raise ServiceError("Say why the reply is hidden.", code="missing_reason",
                           field="reason")
    if len(reason) > 500:
        raise ServiceError("A reason has at most 500 characters.", field="reason")
    if reply.hidden == hidden:
        return
    reply.hidden = hidden
    reply.hidden_at = utcnow() if hidden else None
    reply.hidden_by_id = actor.id if hidden else None
    reply.hidden_reason = reason if hidden else ""
    audit.record("reply_hidden" if hidden else "reply_unhidden", actor=actor,
                 target_type="reply", target_id=reply.id, finding=finding.id, reason=reason)
    db.commit()


# ---------------------------------------------------------------- history


@dataclass
class Version:
    title: str
    body: str
    level: str
    compartment: str


@dataclass
class HistoryEntry:
    revision: FindingRevision
    before: Version
    after: Version
    diff: list[DiffLine] = field(default_factory=list)
    editor: str = ""  # who edited, as the reader may learn it (``disclosure``)

    @property
    def title_changed(self) -> bool:
        return self.before.title != self.after.title

    @property
    def level_changed(self) -> bool:
        return self.before.level != self.after.level

    @property
    def compartment_changed(self) -> bool:
        return self.before.compartment != self.after.compartment


def _diff(before: str, after: str) -> list[DiffLine]:
    return line_diff(before.splitlines(), after.splitlines())


def revision_count(finding: Finding) -> int:
    if finding.updated_at == finding.created_at:  # every edit moves updated_at
        return 0
    return db.scalar(select(func.count()).select_from(FindingRevision)
                     .where(FindingRevision.finding_id == finding.id)) or 0


WITHHELD = "(withheld: this version was at a level or compartment you cannot read)"


def history(finding: Finding, reader: Any) -> list[HistoryEntry]:
    """Every edit, newest first, with a diff of the body it changed; versions the reader
    may not read (older, more restricted ones) are withheld, never diffed."""
    revisions = list(db.scalars(select(FindingRevision)
                                .where(FindingRevision.finding_id == finding.id)
                                .order_by(FindingRevision.created_at, FindingRevision.id)))
    current = Version(finding.title, finding.body, finding.level, _compartment_slugs(finding))
    versions = [Version(r.old_title, r.old_body, r.old_level, r.old_compartment)
                for r in revisions] + [current]
    shown = [v if access.can_read_version(reader, finding, v.level, v.compartment) else
             Version(WITHHELD, "", v.level, "") for v in versions]
    entries: list[HistoryEntry] = []
    rule = disclosure.For(reader)
    for i, rev in enumerate(revisions):
        before, after = shown[i], shown[i + 1]
        withheld = WITHHELD in (before.title, after.title)
        diff = [] if withheld else _diff(before.body, after.body)
        entries.append(HistoryEntry(rev, before, after, diff,
                                    disclosure.editor_label(rule, finding, rev)))
    entries.reverse()
    return entries


# ---------------------------------------------------------------- lists


class Ref(NamedTuple):
    """A related row as list pages show it (``.name``, and ``.slug`` for a category)."""

    name: str
    slug: str = ""


@dataclass(frozen=True, slots=True)
class FindingRow:
    """A finding as list pages show it: plain values from one joined query (full ORM
    objects with their authors, organizations and compartments cost several times more
    to build than the query takes). It answers the attributes the list templates, the
    cursors and the page marking read, under the same names as ``Finding``."""

    id: int
    title: str
    level: str
    compartmented: bool
    locked: bool
    reply_count: int
    created_at: datetime
    updated_at: datetime
    last_reply_at: datetime | None
    author: Ref
    org: Ref
    category: Ref | None
    compartment_orgs: tuple[Ref, ...]
    created_iso: str
    created_text: str

    @property
    def last_activity_at(self) -> datetime:
        if self.last_reply_at is not None and self.last_reply_at > self.updated_at:
            return self.last_reply_at
        return self.updated_at


@dataclass
class FindingList:
    """One page of a keyset-paginated list (newest first)."""

    items: list[FindingRow]
    newer: str | None
    older: str | None
    unread: set[int]

    @property
    def marking(self) -> Level | None:
        return highest_level(f.level for f in self.items)


def encode_cursor(finding: Finding | FindingRow) -> str:
    micros = int(finding.created_at.timestamp() * 1_000_000)
    return base64.urlsafe_b64encode(f"{micros}.{finding.id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, ident = raw.split(".")
        when = datetime.fromtimestamp(int(micros) / 1_000_000, tz=UTC)
        return when, int(ident)
    except (ValueError, UnicodeDecodeError, OverflowError, OSError):
        raise ServiceError("That page link is broken; start from the first page.",
                           code="bad_cursor") from None


def _narrow(query: Select[Any], category: Category | None, level: str | None) -> Select[Any]:
    """A list query restricted to one category and/or one level (an unknown level is an
    error, not an empty list)."""
    if category is not None:
        query = query.where(Finding.category_id == category.id)
    if level is not None:
        if not state.policy().is_level(level):
            raise ServiceError(f"There is no level {level!r}.", code="unknown_level",
                               field="level")
        query = query.where(Finding.level == level)
    return query


def _scope(user: User, *, category: Category | None = None, level: str | None = None
           ) -> Select[tuple[Finding]]:
    return _narrow(access.visible_findings(user).options(*FINDING_LOAD), category, level)


_Author = aliased(User, name="author")
_FindingOrgRef = aliased(Organization, name="finding_org")
_ROW_COLUMNS = (Finding.id, Finding.title_sealed, Finding.level, Finding.compartmented,
                Finding.locked, Finding.reply_count, Finding.created_at, Finding.updated_at,
                Finding.last_reply_at, _Author.display_name, _FindingOrgRef.name,
                Category.name, Category.slug)


def _rows(query: Select[Any]) -> list[FindingRow]:
    """FindingRows for ``query`` (a select of ``_ROW_COLUMNS`` with their joins), with
    their compartments in one more statement."""
    raw = db.execute(query).all()
    if not raw:
        return []
    names: dict[int, list[str]] = {}
    for finding_id, name in db.execute(
            select(FindingOrg.finding_id, Organization.name)
            .join(Organization, Organization.id == FindingOrg.org_id)
            .where(FindingOrg.finding_id.in_([r[0] for r in raw if r[3]]))):
        names.setdefault(finding_id, []).append(name)
    rows = []
    for (ident, title, level, compartmented, locked, replies, created, updated, last_reply,
         author, org, category_name, category_slug) in raw:
        rows.append(FindingRow(
            ident, sealing.reveal(Finding.title_sealed, ident, level, title), level,
            compartmented, locked, replies, created, updated,
            last_reply, Ref(author), Ref(org),
            Ref(category_name, category_slug) if category_slug is not None else None,
            tuple(Ref(n) for n in sorted(names.get(ident, ()))),
            created.isoformat(), created.strftime("%Y-%m-%d %H:%M")))
    return rows


def _row_scope(user: User, *, category: Category | None = None, level: str | None = None
               ) -> Select[Any]:
    query = (select(*_ROW_COLUMNS)
             .join(_Author, _Author.id == Finding.author_id)
             .join(_FindingOrgRef, _FindingOrgRef.id == Finding.org_id)
             .outerjoin(Category, Category.id == Finding.category_id)
             .where(access.finding_filter(user)))
    return _narrow(query, category, level)


def list_findings(user: User, *, category: Category | None = None, level: str | None = None,
                  before: str | None = None, after: str | None = None,
                  per_page: int = 25) -> FindingList:
    """Readable findings newest first, keyset-paginated on (created_at, id): deep pages
    cost the same as the first one."""
    query = _row_scope(user, category=category, level=level)
    key = tuple_(Finding.created_at, Finding.id)
    if after:
        when, ident = decode_cursor(after)
        rows = _rows(query.where(key > tuple_(_dt(when), ident))
                     .order_by(Finding.created_at, Finding.id).limit(per_page + 1))
        more_newer = len(rows) > per_page
        items = list(reversed(rows[:per_page]))
        newer = encode_cursor(items[0]) if more_newer and items else None
        older = encode_cursor(items[-1]) if items else None
    else:
        if before:
            when, ident = decode_cursor(before)
            query = query.where(key < tuple_(_dt(when), ident))
        rows = _rows(query.order_by(Finding.created_at.desc(), Finding.id.desc())
                     .limit(per_page + 1))
        items = rows[:per_page]
        older = encode_cursor(items[-1]) if len(rows) > per_page else None
        newer = encode_cursor(items[0]) if before and items else None
    return FindingList(items, newer, older, unread_ids(user, items))


def _dt(when: datetime) -> ColumnElement[datetime]:
    return literal(when, Finding.created_at.type)


def page_findings(user: User, args: dict[str, str] | None = None, *,
                  category: Category | None = None, level: str | None = None) -> Page:
    """Offset pagination with a total, for the API (``?page=&per_page=``)."""
    page, per_page = page_args(args or {})
    query = _scope(user, category=category, level=level)
    tune_postgres()
    total = db.scalar(select(func.count()).select_from(
        query.with_only_columns(Finding.id).order_by(None).subquery())) or 0
    # ids first (an index-only scan on PostgreSQL), then the rows with their joined
    # authors, organizations and categories for this page only
    ids = list(db.scalars(query.with_only_columns(Finding.id)
                          .order_by(Finding.created_at.desc(), Finding.id.desc())
                          .limit(per_page).offset((page - 1) * per_page)))
    rows = {f.id: f for f in db.scalars(select(Finding).options(*FINDING_LOAD)
                                        .where(Finding.id.in_(ids)))} if ids else {}
    return Page([rows[i] for i in ids if i in rows], page, per_page, total)


def unread_ids(user: User, findings: Sequence[Finding | FindingRow]) -> set[int]:
    """Findings with activity (edit or reply) since the user last opened them."""
    if not findings:
        return set()
    ids = [f.id for f in findings]
    reads = {fid: when for fid, when in db.execute(
        select(FindingRead.finding_id, FindingRead.last_read_at)
        .where(FindingRead.user_id == user.id, FindingRead.finding_id.in_(ids)))}
    return {f.id for f in findings
            if f.id not in reads or reads[f.id] < f.last_activity_at}


def latest_for_home(user: User, limit: int = 10) -> FindingList:
    return list_findings(user, per_page=limit)

