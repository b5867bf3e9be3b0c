"""Import every model so that ``Base.metadata`` is complete (alembic, tests)."""

from app.audit import AuditEntry
from app.auth.models import ApiToken, Invitation, RecoveryCode, User
from app.findings.models import Category, Finding, FindingOrg
from app.ndas.models import NdaAcknowledgement
from app.orgs.models import Organization, OrgDomain

__all__ = [
    "ApiToken", "AuditEntry", "Category", "Finding", "FindingOrg", "Invitation",
    "NdaAcknowledgement", "OrgDomain", "Organization", "RecoveryCode", "User",
]
