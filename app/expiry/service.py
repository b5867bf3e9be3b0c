"""What lapses soon, and the warning e-mails before it does.

Three kinds of grant lapse by time (the access rule in ``app/access.py`` applies them):
a clearance grant with an end date (``users.clearance_expires_at``), an NDA signature at
a level with ``renew_days``, and an organization's trust at a level with ``revet_days``.
``send_warnings`` (``enclave expiry warn``, run daily from cron) e-mails each one once,
within ``ENCLAVE_EXPIRY_WARNING_DAYS`` of its lapse: the member for their clearance and
NDAs, the site admins and the organization's own admins for its trust. The e-mails name
levels and dates, never content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formataddr, make_msgid

from sqlalchemy import select

from app import clock, state
from app.auth.models import Role, User
from app.db import db
from app.expiry.models import ExpiryNotice
from app.orgs.models import Organization, OrgStatus


@dataclass
class Lapse:
    """One grant that lapses within the warning period (or already has, ``lapsed``)."""

    kind: str  # clearance | nda | org
    subject_id: int
    detail: str
    lapses_at: datetime
    subject: str  # the member's e-mail or the organization's slug
    what: str  # one line: what lapses
    recipients: list[User] = field(default_factory=list)

    @property
    def lapsed(self) -> bool:
        return clock.now() >= self.lapses_at


def _members() -> list[User]:
    return list(db.scalars(
        select(User).join(User.org)
        .where(User.is_active.is_(True), Organization.status == OrgStatus.TRUSTED.value)
        .order_by(User.id)))


def upcoming(days: int | None = None) -> list[Lapse]:
    """Grants lapsing between now and ``days`` from now (default: the warning period)."""
    from app.ndas.service import relevant_ndas
    from app.orgs.service import trust_lapse

    policy = state.policy()
    now = clock.now()
    horizon = now + timedelta(days=days if days is not None
                              else state.settings().expiry_warning_days)
    found: list[Lapse] = []
    for user in _members():
        ends = user.clearance_expires_at
        if ends is not None and now < ends <= horizon:
            label = policy.level(user.clearance).label if policy.is_level(user.clearance) \
                else user.clearance
            found.append(Lapse("clearance", user.id, user.clearance, ends, user.email,
                               f"{label} clearance of {user.email}", [user]))
        for status in relevant_ndas(user):
            if status.current and status.lapses_at is not None \
                    and now < status.lapses_at <= horizon:
                found.append(Lapse("nda", user.id, status.nda.key, status.lapses_at,
                                   user.email, f"{user.email}'s signature of "
                                   f"{status.nda.title} (version {status.nda.version})",
                                   [user]))
    admins = list(db.scalars(select(User).where(User.role == Role.ADMIN.value,
                                                 User.is_active.is_(True))))
    for org in db.scalars(select(Organization)
                          .where(Organization.status == OrgStatus.TRUSTED.value)
                          .order_by(Organization.slug)):
        lapse = trust_lapse(org)
        if lapse is None or not now < lapse.at <= horizon:
            continue
        own_admins = [u for u in db.scalars(select(User).where(
            User.org_id == org.id, User.role == Role.ORG_ADMIN.value,
            User.is_active.is_(True)))]
        recipients = {u.id: u for u in [*admins, *own_admins]}
        found.append(Lapse("org", org.id, lapse.level, lapse.at, org.slug,
                           f"{org.name}'s trust at {lapse.label}",
                           list(recipients.values())))
    found.sort(key=lambda item: (item.lapses_at, item.kind, item.subject))
    return found


def _already_sent(lapse: Lapse) -> bool:
    return db.scalar(select(ExpiryNotice.id).where(
        ExpiryNotice.kind == lapse.kind, ExpiryNotice.subject_id == lapse.subject_id,
        ExpiryNotice.detail == lapse.detail, ExpiryNotice.lapses_at == lapse.lapses_at,
    )) is not None


def _message(lapse: Lapse, recipient: User) -> EmailMessage:
    from app.notifications.mail import sender_address

    policy = state.policy()
    base = state.settings().base_url.rstrip("/")
    when = f"{lapse.lapses_at:%Y-%m-%d %H:%M} UTC"
    if lapse.kind == "clearance":
        level = policy.level(lapse.detail).label if policy.is_level(lapse.detail) \
            else lapse.detail
        subject = f"[Enclave] Your {level} clearance ends on {when}"
        body = [f"Your {level} clearance on Enclave ends on {when}.",
                "After that you read as if cleared for public content only: findings, "
                "search, notifications, files and API tokens above it stop working.",
                "Ask your organization's admin to renew the grant if you still need it."]
    elif lapse.kind == "nda":
        nda = policy.ndas.get(lapse.detail)
        title = nda.title if nda else lapse.detail
        subject = f"[Enclave] Renew your signature of {title} by {when}"
        body = [f"Your signature of {title} stops counting on {when}: the levels that "
                "require it ask for it to be renewed.",
                f"Read and sign it again here to keep reading at those levels: "
                f"{base}/ndas/{lapse.detail}"]
    else:
        level = policy.level(lapse.detail).label if policy.is_level(lapse.detail) \
            else lapse.detail
        subject = f"[Enclave] Re-vet {lapse.subject}: its {level} trust lapses on {when}"
        body = [f"The organization {lapse.subject} was last vetted long enough ago that "
                f"its trust at {level} lapses on {when}.",
                "Until an admin re-vets it, its members read as if its ceiling were the "
                "highest level still vetted.",
                f"Re-vet it on {base}/admin/orgs/{lapse.subject} or with "
                f"`enclave org renew {lapse.subject}`."]
    msg = EmailMessage()
    msg["From"] = sender_address()
    msg["To"] = formataddr((recipient.display_name, recipient.email))
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="enclave.invalid")
    msg["X-Enclave-Expiry"] = lapse.kind
    msg.set_content("\n\n".join([*body, "You get this e-mail once, "
                                 f"{state.settings().expiry_warning_days} days or less "
                                 "before the lapse."]))
    return msg


def send_warnings(*, dry_run: bool = False) -> list[Lapse]:
    """E-mail every lapse within the warning period that was not warned about yet (each
    once: a row in ``expiry_notices``, committed after its e-mails went). Returns the
    lapses warned about (or that would be, with ``dry_run``)."""
    from app import audit
    from app.notifications.mail import deliver_message

    settings = state.settings()
    sent: list[Lapse] = []
    for lapse in upcoming():
        if _already_sent(lapse):
            continue
        sent.append(lapse)
        if dry_run:
            continue
        for recipient in lapse.recipients:
            label = f"expiry-{lapse.kind}-{lapse.subject_id}-{lapse.detail}-{recipient.id}"
            deliver_message(_message(lapse, recipient), label, smtp_url=settings.smtp_url,
                            outbox=settings.instance_path / "outbox")
        db.add(ExpiryNotice(kind=lapse.kind, subject_id=lapse.subject_id, detail=lapse.detail,
                            lapses_at=lapse.lapses_at))
        audit.record("expiry_warning_sent", actor="cli", target_type=lapse.kind,
                     target_id=lapse.subject, detail=lapse.detail,
                     lapses_at=lapse.lapses_at.isoformat(),
                     recipients=[u.email for u in lapse.recipients])
        db.commit()
    return sent

