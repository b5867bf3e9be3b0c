"""NDA acknowledgements: which NDAs a user owes, and signing one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from app import access, audit, clock, state
from app.auth.models import User
from app.db import db
from app.errors import NotFound, ServiceError
from app.ndas.models import NdaAcknowledgement
from app.policy import Nda


@dataclass
class NdaStatus:
    nda: Nda
    levels: list[str]
    acknowledged_version: int | None
    #: when the current version was last signed (None: not signed)
    signed_at: datetime | None = None
    #: when that signature stops counting for the first of ``levels`` that asks for
    #: renewal (None: it does not lapse by time)
    lapses_at: datetime | None = None
    now: datetime | None = None

    @property
    def signed(self) -> bool:
        """The current version is signed (perhaps long enough ago to need renewing)."""
        return self.acknowledged_version == self.nda.version

    @property
    def lapsed(self) -> bool:
        return self.signed and self.lapses_at is not None and (
            (self.now or clock.now()) >= self.lapses_at)

    @property
    def current(self) -> bool:
        return self.signed and not self.lapsed

    @property
    def outdated(self) -> bool:
        return self.acknowledged_version is not None and not self.signed

    @property
    def renewal_open(self) -> bool:
        """Renewing is offered from the warning period before the lapse on."""
        if not self.signed or self.lapses_at is None:
            return False
        days = state.settings().expiry_warning_days
        return (self.now or clock.now()) >= self.lapses_at - timedelta(days=days)


def relevant_ndas(user: User) -> list[NdaStatus]:
    """The NDAs of every level up to the user's effective clearance, with their state."""
    policy = state.policy()
    ceiling = access.effective_clearance(user)
    if ceiling is None or not access.in_good_standing(user):
        return []
    by_key: dict[str, list[str]] = {}
    for level in policy.levels_up_to(ceiling):
        for key in level.ndas:
            by_key.setdefault(key, []).append(level.key)
    latest: dict[str, int] = {}
    signed: dict[tuple[str, int], datetime] = {}
    for key, version, at in db.execute(
        select(NdaAcknowledgement.nda_key, NdaAcknowledgement.version,
               func.max(NdaAcknowledgement.created_at))
        .where(NdaAcknowledgement.user_id == user.id)
        .group_by(NdaAcknowledgement.nda_key, NdaAcknowledgement.version)
    ):
        latest[key] = max(version, latest.get(key, 0))
        signed[(key, version)] = access.as_utc(at)
    now = clock.now()
    statuses = []
    for key, levels in by_key.items():
        nda = policy.ndas[key]
        at = signed.get((key, nda.version))
        lapses = [t for t in (access.nda_lapses_at(at, policy.level(lv)) for lv in levels)
                  if t is not None] if at is not None else []
        statuses.append(NdaStatus(nda, levels, latest.get(key), signed_at=at,
                                  lapses_at=min(lapses) if lapses else None, now=now))
    return statuses


def owed_ndas(user: User) -> list[NdaStatus]:
    return [s for s in relevant_ndas(user) if not s.current]


def nda_for(user: User, key: str) -> NdaStatus:
    for status in relevant_ndas(user):
        if status.nda.key == key:
            return status
    raise NotFound("No such NDA for your clearance.")


def _normalize_name(name: str) -> str:
    return " ".join(name.split()).casefold()


def acknowledge(
    user: User, key: str, signed_name: str, *, version: int | None = None
) -> NdaAcknowledgement:
    """Record the user's signature of the current version of NDA ``key``.

    ``version`` is the version the user was shown; if the policy changed since, the
    signature is refused so nobody signs a text they did not see.
    """
    status = nda_for(user, key)
    nda = status.nda
    if version is not None and version != nda.version:
        raise ServiceError("This NDA changed while you were reading it; read the new version.",
                           code="nda_changed")
    if status.current and not status.renewal_open:
        raise ServiceError(f"You already acknowledged version {nda.version} of {nda.title}.",
                           code="already_acknowledged")
    typed = " ".join((signed_name or "").split())
    if not typed:
        raise ServiceError("Type your full name to sign.", field="signed_name")
    if _normalize_name(typed) != _normalize_name(user.display_name):
        raise ServiceError(
            f"Type your full name exactly as on your account ({user.display_name}).",
            field="signed_name",
        )
    from app.context import client_ip

    ack = NdaAcknowledgement(user_id=user.id, nda_key=nda.key, version=nda.version,
                             text_sha256=nda.text_sha256, signed_name=typed,
                             ip=client_ip.get() or None)
    db.add(ack)
    db.flush()
    audit.record("nda_acknowledged", actor=user, target_type="nda", target_id=nda.key,
                 version=nda.version, text_sha256=nda.text_sha256,
                 **({"renewal": True} if status.signed else {}))
    access.forget(user)
    db.commit()
    return ack
