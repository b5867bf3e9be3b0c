"""Filters of the audit log page: by actor, action, target and time.

They narrow the list of entries on stored, structural columns only (the actor's user id,
the action, the target's type and id, the time), never on an entry's details, whose text
may be withheld from the reader (``app.audit_view`` decides what each entry shows). An
actor is named by e-mail address, user name or ``#id``: an administrator can already
look those up on the members pages, so the filter teaches nothing more; an actor that is
not a person (``system``, the command line) is matched by its stored name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, or_, select

from app.audit import AuditEntry
from app.auth.models import User
from app.db import db


@dataclass
class AuditFilters:
    actor: str = ""
    action: str = ""
    target_type: str = ""
    target_id: str = ""
    since: date | None = None
    until: date | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def args(self) -> dict[str, str]:
        """The filters as query arguments (for the pager's links)."""
        values = {"actor": self.actor, "action": self.action, "target_type": self.target_type,
                  "target_id": self.target_id,
                  "since": self.since.isoformat() if self.since else "",
                  "until": self.until.isoformat() if self.until else ""}
        return {k: v for k, v in values.items() if v}

    @property
    def active(self) -> bool:
        return bool(self.args())


def _day(raw: str, name: str, errors: dict[str, str]) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        errors[name] = "A date is written YYYY-MM-DD."
        return None


def parse(args: Mapping[str, str]) -> AuditFilters:
    """Filters from a query string; a malformed date is reported, not applied."""
    errors: dict[str, str] = {}
    f = AuditFilters(
        actor=args.get("actor", "").strip()[:254],
        action=args.get("action", "").strip()[:64],
        target_type=args.get("target_type", "").strip()[:32],
        target_id=args.get("target_id", "").strip().lstrip("#")[:64],
        since=_day(args.get("since", "").strip(), "since", errors),
        until=_day(args.get("until", "").strip(), "until", errors),
        errors=errors,
    )
    if f.since and f.until and f.since > f.until:
        errors["until"] = "The end date is before the start date."
        f.until = None
    return f


def _actor_clause(actor: str) -> Any:
    text = actor.lower()
    if text.startswith("#") and text[1:].isdigit():
        return AuditEntry.actor_id == int(text[1:])
    ids = list(db.scalars(select(User.id).where(
        or_(func.lower(User.email) == text, func.lower(User.username) == text))))
    by_name = and_(AuditEntry.actor_id.is_(None), func.lower(AuditEntry.actor) == text)
    return or_(AuditEntry.actor_id.in_(ids), by_name) if ids else by_name


def apply(query: Select[Any], f: AuditFilters) -> Select[Any]:
    """``query`` (a select of AuditEntry) narrowed by ``f``."""
    if f.actor:
        query = query.where(_actor_clause(f.actor))
    if f.action:
        query = query.where(AuditEntry.action == f.action)
    if f.target_type:
        query = query.where(AuditEntry.target_type == f.target_type)
    if f.target_id:
        query = query.where(AuditEntry.target_id == f.target_id)
    if f.since:
        query = query.where(AuditEntry.created_at >= _stored(f.since))
    if f.until:
        query = query.where(AuditEntry.created_at < _stored(f.until + timedelta(days=1)))
    return query


def _stored(day: date) -> datetime:
    """Midnight UTC of ``day``."""
    return datetime.combine(day, time(), tzinfo=UTC)


def choices() -> tuple[list[str], list[str]]:
    """The actions and target types present in the log (for the filter menus)."""
    actions = db.scalars(select(AuditEntry.action).group_by(AuditEntry.action)
                         .order_by(AuditEntry.action)).all()
    kinds = db.scalars(select(AuditEntry.target_type).where(AuditEntry.target_type != "")
                       .group_by(AuditEntry.target_type)
                       .order_by(AuditEntry.target_type)).all()
    return list(actions), list(kinds)
