"""Import every model so that ``Base.metadata`` is complete (alembic, tests)."""

from app.attachments.models import Attachment
from app.audit import AuditEntry
from app.auth.models import (
    ApiToken,
    Invitation,
    Passkey,
    PasswordReset,
    RecoveryCode,
    User,
)
from app.content.models import ContentJob
from app.expiry.models import ExpiryNotice
from app.findings.models import (
    Category,
    Finding,
    FindingOrg,
    FindingRead,
    FindingRevision,
    Reply,
)
from app.ndas.models import NdaAcknowledgement
from app.notifications.models import Notification, Watch
from app.orgs.models import Organization, OrgDomain
from app.reactions.models import FindingReaction, ReplyReaction
from app.review.models import (
    ConflictDeclaration,
    Escalation,
    Flag,
    OrgAffiliation,
    RequestAttachment,
    Review,
    ReviewComment,
    ReviewEvent,
    ReviewRequest,
)
from app.scim.models import ScimToken
from app.sso.models import OrgSso, SsoSession
from app.submissions.models import FormSubmission
from app.traceability.models import AttachmentCopy

__all__ = [
    "ApiToken", "Attachment", "AttachmentCopy", "AuditEntry", "ContentJob", "Category",
    "ExpiryNotice", "Finding", "FindingOrg", "FindingRead",
    "FindingReaction", "FindingRevision", "Invitation", "NdaAcknowledgement", "Notification",
    "OrgDomain", "Organization", "Passkey", "PasswordReset", "RecoveryCode", "Reply",
    "ReplyReaction", "User", "Watch",
    "ConflictDeclaration", "Escalation", "Flag", "OrgAffiliation", "RequestAttachment",
    "Review", "ReviewComment", "ReviewEvent", "ReviewRequest", "FormSubmission",
    "OrgSso", "ScimToken", "SsoSession",
]
