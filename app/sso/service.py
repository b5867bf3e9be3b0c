"""Per-organization single sign-on with OpenID Connect (Authlib's OAuth 2 client, ID
tokens checked with joserfc, Authlib's JOSE library).

The flow is the authorization code flow with PKCE (S256), ``state`` and ``nonce``; the
ID token must be signed with an asymmetric algorithm by a key of the provider's JWKS,
name the configured issuer, have the client id among its audiences (and as ``azp`` when
there are several), be current, and carry the nonce sent. The provider vouches for who
someone is and whether they are still employed; it never admits anyone on its own: a
person needs an open invitation, or an administrator's rule admitting members of one of
their provider groups. Group-to-clearance mappings are capped by what the organization's
admin may grant and by the ceiling.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select, update

from app import access, audit, state
from app.auth.models import Invitation, Role, User
from app.crypto.wrap import IntegrityError, seal, unseal
from app.db import db, utcnow
from app.errors import Forbidden, NotFound, ServiceError
from app.orgs.models import Organization, OrgStatus
from app.sso.models import OrgSso, SsoSession

SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                      "ES512", "EdDSA")
FLOW_SECONDS = 600
HTTP_TIMEOUT = 5
_DISCOVERY_TTL = 300
_discovery_cache: dict[str, tuple[float, dict[str, Any]]] = {}
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class SsoRefused(ServiceError):
    status = 401
    code = "sso_refused"


# ---------------------------------------------------------------- configuration

def _aad(org: Organization) -> bytes:
    return f"enclave-oidc-client-secret:{org.id}".encode()


def config_for(org: Organization) -> OrgSso | None:
    return db.scalar(select(OrgSso).where(OrgSso.org_id == org.id))


def client_secret(config: OrgSso) -> str:
    try:
        return unseal(state.keyring().app_key(), bytes.fromhex(config.client_secret_enc),
                      _aad(config.org)).decode()
    except (IntegrityError, ValueError):
        raise ServiceError("The stored client secret cannot be opened (was the keyring "
                           "replaced?). Set it again.") from None


def _check_issuer(issuer: str) -> str:
    issuer = (issuer or "").strip()
    parts = urlsplit(issuer)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise ServiceError("The issuer must be an https:// URL (http:// only on localhost).",
                           field="issuer")
    if not parts.hostname or parts.query or parts.fragment or len(issuer) > 500:
        raise ServiceError("The issuer must be a plain URL (no query or fragment).",
                           field="issuer")
    return issuer


def group_clearances(config: OrgSso) -> dict[str, str]:
    return json.loads(config.group_clearances or "{}")


def allowed_groups(config: OrgSso) -> list[str]:
    return json.loads(config.allowed_groups or "[]")


def configure(actor: User | None, org: Organization, *, issuer: str, client_id: str,
              client_secret_value: str | None, passwords_allowed: bool,
              clearances: dict[str, str] | None = None,
              allow_groups: list[str] | None = None) -> OrgSso:
    """Set ``org``'s provider. ``actor`` None is the command line (an operator); an org
    admin may configure their own organization, but only an admin sets admission rules,
    and no one maps a group above what they may grant."""
    from app.auth.service import can_manage_org, grantable_clearance

    if actor is not None and not can_manage_org(actor, org):
        raise Forbidden("You cannot manage this organization's sign-in.")
    config = config_for(org)
    issuer = _check_issuer(issuer)
    client_id = (client_id or "").strip()
    if not client_id or len(client_id) > 255:
        raise ServiceError("Give the client id the provider issued (at most 255 characters).",
                           field="client_id")
    if config is None and not client_secret_value:
        raise ServiceError("Give the client secret the provider issued.", field="client_secret")
    policy = state.policy()
    if clearances is not None:
        limit = grantable_clearance(actor, org)
        for group, level in clearances.items():
            if not group or len(group) > 200:
                raise ServiceError("A group name has 1-200 characters.", field="clearances")
            if not policy.is_level(level):
                raise ServiceError(f"Unknown level {level!r} for group {group!r}.",
                                   field="clearances")
            if policy.rank(level) > policy.rank(limit):
                raise ServiceError(f"Group {group!r} cannot map to {level!r}: above what you "
                                   f"may grant in {org.slug} ({limit!r}).", field="clearances")
    if allow_groups is not None and actor is not None and not actor.is_admin:
        current = allowed_groups(config) if config else []
        if sorted(allow_groups) != sorted(current):
            raise Forbidden("Only an administrator admits members of a provider group.")
    if config is None:
        config = OrgSso(org_id=org.id, org=org, issuer=issuer, client_id=client_id,
                        client_secret_enc="")
        db.add(config)
    config.issuer, config.client_id = issuer, client_id
    config.passwords_allowed = passwords_allowed
    if client_secret_value:
        if len(client_secret_value) > 1000:
            raise ServiceError("The client secret is too long.", field="client_secret")
        config.client_secret_enc = seal(state.keyring().app_key(), client_secret_value.encode(),
                                        _aad(org)).hex()
    if clearances is not None:
        config.group_clearances = json.dumps(clearances, sort_keys=True)
    if allow_groups is not None:
        config.allowed_groups = json.dumps(sorted(set(allow_groups)))
    config.updated_at = utcnow()
    db.flush()
    audit.record("sso_configured", actor=actor or "cli", target_type="org", target_id=org.id,
                 org=org.slug, issuer=issuer, client_id=client_id,
                 passwords_allowed=passwords_allowed, secret_changed=bool(client_secret_value),
                 group_clearances=group_clearances(config),
                 allowed_groups=allowed_groups(config))
    db.commit()
    return config


def remove(actor: User | None, org: Organization) -> None:
    from app.auth.service import can_manage_org

    if actor is not None and not can_manage_org(actor, org):
        raise Forbidden("You cannot manage this organization's sign-in.")
    config = config_for(org)
    if config is None:
        raise NotFound("This organization has no single sign-on.")
    db.delete(config)
    audit.record("sso_removed", actor=actor or "cli", target_type="org", target_id=org.id,
                 org=org.slug)
    db.commit()


def passwords_allowed(user: User) -> bool:
    """Whether ``user`` may sign in with a password (or a passkey alone): not when their
    organization signs in only through its provider."""
    config = config_for(user.org)
    return config is None or config.passwords_allowed


def org_for_email(email: str) -> Organization | None:
    from app.orgs.models import OrgDomain

    domain = email.rsplit("@", 1)[-1].strip().lower()
    return db.scalar(select(Organization).join(OrgDomain).where(OrgDomain.domain == domain))


# ---------------------------------------------------------------- provider metadata

def discover(issuer: str) -> dict[str, Any]:
    """The provider's metadata (cached for five minutes); its issuer must be ours."""
    cached = _discovery_cache.get(issuer)
    if cached and time.monotonic() - cached[0] < _DISCOVERY_TTL:
        return cached[1]
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        metadata = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise SsoRefused(f"Your organization's identity provider cannot be reached ({exc})."
                         , code="sso_unavailable") from None
    if not isinstance(metadata, dict) or metadata.get("issuer") != issuer:
        raise SsoRefused("The identity provider's metadata names another issuer.")
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(metadata.get(key), str):
            raise SsoRefused(f"The identity provider's metadata lacks {key}.")
    _discovery_cache[issuer] = (time.monotonic(), metadata)
    return metadata


def _keys(metadata: dict[str, Any]) -> KeySet:
    try:
        response = requests.get(metadata["jwks_uri"], timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        return KeySet.import_key_set(response.json())
    except (requests.RequestException, ValueError, JoseError) as exc:
        raise SsoRefused(f"The identity provider's keys cannot be read ({exc}).",
                         code="sso_unavailable") from None


def redirect_uri() -> str:
    return state.settings().base_url.rstrip("/") + "/sso/callback"


def backchannel_uri() -> str:
    return state.settings().base_url.rstrip("/") + "/sso/backchannel-logout"


# ---------------------------------------------------------------- the flow

@dataclass
class Start:
    url: str
    flow: dict[str, Any]


def begin(org: Organization, next_url: str | None = None) -> Start:
    """The provider URL to send the browser to, and the flow to keep in the session."""
    config = config_for(org)
    if config is None or org.status != OrgStatus.TRUSTED.value:
        raise NotFound("Your organization has no single sign-on on Enclave.")
    metadata = discover(config.issuer)
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(24)
    client = OAuth2Session(config.client_id, scope="openid email profile groups",
                           redirect_uri=redirect_uri(), code_challenge_method="S256")
    url, flow_state = client.create_authorization_url(
        metadata["authorization_endpoint"], state=secrets.token_urlsafe(24),
        code_verifier=verifier, nonce=nonce)
    assert "code_challenge=" + create_s256_code_challenge(verifier) in url
    return Start(url, {"org": org.id, "state": flow_state, "nonce": nonce,
                       "verifier": verifier, "at": int(time.time()), "next": next_url})


@dataclass
class Identity:
    """Who the provider says signed in."""

    org: Organization
    sub: str
    sid: str | None
    email: str
    name: str
    groups: list[str]


def complete(flow: dict[str, Any] | None, callback_url: str, args: dict[str, str]) -> Identity:
    """Check the provider's answer (state, code exchange with the PKCE verifier, the ID
    token); raise SsoRefused with the reason."""
    if not isinstance(flow, dict) or time.time() - flow.get("at", 0) > FLOW_SECONDS:
        raise SsoRefused("The sign-in took too long or was not started here. Try again.",
                         code="sso_expired")
    if not secrets.compare_digest(str(args.get("state", "")), str(flow.get("state", ""))):
        raise SsoRefused("The sign-in answer does not belong to this browser (state).",
                         code="sso_state")
    if args.get("error"):
        raise SsoRefused(f"Your identity provider refused: {args.get('error')} "
                         f"{args.get('error_description', '')}".strip())
    org = db.get(Organization, flow.get("org"))
    config = config_for(org) if org is not None else None
    if config is None:
        raise SsoRefused("Single sign-on is no longer set up for your organization.")
    metadata = discover(config.issuer)
    if args.get("iss") and args["iss"] != config.issuer:  # RFC 9207 mix-up defence
        raise SsoRefused("The answer came from another issuer.", code="sso_issuer")
    client = OAuth2Session(config.client_id, client_secret(config),
                           redirect_uri=redirect_uri(), code_challenge_method="S256",
                           token_endpoint_auth_method="client_secret_basic")  # noqa: S106
    try:
        token = client.fetch_token(metadata["token_endpoint"],
                                   authorization_response=callback_url,
                                   code_verifier=flow["verifier"], state=flow["state"],
                                   timeout=HTTP_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - Authlib/requests errors: refuse with the reason
        raise SsoRefused(f"The provider did not exchange the code: {exc}") from None
    claims = verify_id_token(config, metadata, token.get("id_token"), nonce=flow["nonce"])
    return _identity(org, claims)


def verify_id_token(config: OrgSso, metadata: dict[str, Any], id_token: Any, *,
                    nonce: str) -> dict[str, Any]:
    if not isinstance(id_token, str) or not id_token:
        raise SsoRefused("The provider sent no ID token.")
    try:
        decoded = jwt.decode(id_token, _keys(metadata), algorithms=list(SIGNING_ALGORITHMS))
    except JoseError as exc:
        raise SsoRefused(f"The ID token is not signed by the provider ({exc.error}).") \
            from None
    registry = jwt.JWTClaimsRegistry(
        leeway=60, iss={"essential": True, "value": config.issuer},
        aud={"essential": True, "value": config.client_id}, sub={"essential": True},
        exp={"essential": True}, iat={"essential": True},
        nonce={"essential": True, "value": nonce})
    try:
        registry.validate(decoded.claims)
    except JoseError as exc:
        raise SsoRefused(f"The ID token was refused: {exc.description or exc.error}.") \
            from None
    claims = decoded.claims
    aud = claims["aud"]
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != config.client_id:
        raise SsoRefused("The ID token was issued to another client (azp).")
    return claims


def _identity(org: Organization, claims: dict[str, Any]) -> Identity:
    from app.auth.service import email_domain, normalize_email

    email = claims.get("email")
    if not isinstance(email, str) or claims.get("email_verified") is False:
        raise SsoRefused("Your identity provider did not give a verified e-mail address.")
    email = normalize_email(email)
    if email_domain(email) not in org.domain_names:
        raise SsoRefused(f"{email} is not in a domain of {org.name}.")
    groups = claims.get("groups") or []
    if not isinstance(groups, list):
        groups = []
    name = claims.get("name") if isinstance(claims.get("name"), str) else ""
    sid = claims.get("sid") if isinstance(claims.get("sid"), str) else None
    return Identity(org=org, sub=str(claims["sub"])[:255], sid=sid, email=email,
                    name=" ".join(name.split())[:120],
                    groups=[g for g in groups if isinstance(g, str)][:200])


# ---------------------------------------------------------------- admission

def admit(identity: Identity) -> User:
    """The Enclave account for ``identity``: linked by the provider's subject, else by
    e-mail, else created from an open invitation or an admin's group rule. Clearance
    follows the group mapping, if the organization has one. Raises SsoRefused."""
    from app.auth import service as users

    org = identity.org
    config = config_for(org)
    assert config is not None
    user = db.scalar(select(User).where(User.org_id == org.id,
                                        User.sso_subject == identity.sub))
    if user is None:
        user = users.get_user_by_email(identity.email)
        if user is not None and user.org_id != org.id:
            user = None  # never an account of another organization
        if user is not None and user.sso_subject and user.sso_subject != identity.sub:
            _refuse(identity, "the account is linked to another provider identity")
        if user is not None:
            user.sso_subject = identity.sub
            audit.record("sso_linked", actor=user, target_type="user", target_id=user.id,
                         org=org.slug)
    if user is None:
        user = _create(identity, config)
    problem = users.standing_problem(user)
    if problem:
        audit.record("login_refused", actor=user, target_type="user", target_id=user.id,
                     reason=problem, method="sso")
        db.commit()
        raise SsoRefused(problem)
    _apply_group_clearance(user, identity, config)
    db.commit()
    return user


def _refuse(identity: Identity, reason: str) -> None:
    audit.record("login_failed", actor=identity.email, target_type="org",
                 target_id=identity.org.id, stage="sso", reason=reason)
    db.commit()
    raise SsoRefused("Enclave has no account for you yet. Ask your organization's "
                     "administrator for an invitation.", code="sso_not_admitted")


def _create(identity: Identity, config: OrgSso) -> User:
    from app.auth import service as users

    policy = state.policy()
    invitation = db.scalar(
        select(Invitation).where(Invitation.email == identity.email,
                                 Invitation.org_id == identity.org.id,
                                 Invitation.used_at.is_(None), Invitation.revoked_at.is_(None),
                                 Invitation.expires_at > utcnow()))
    rule = sorted(set(identity.groups) & set(allowed_groups(config)))
    if invitation is not None:
        try:
            users.find_invitation_by_id(invitation.id)
        except ServiceError:
            invitation = None
    if invitation is None and not rule:
        _refuse(identity, "no invitation and no admission rule")
    members_floor = policy.levels[1].key if len(policy.levels) > 1 else policy.levels[0].key
    clearance = invitation.clearance if invitation else members_floor
    clearance = min(clearance, identity.org.ceiling, key=policy.rank)
    role = invitation.role if invitation else Role.MEMBER.value
    username = users.free_username(identity.email.split("@", 1)[0])
    user = User(email=identity.email, username=username,
                display_name=identity.name or username, org_id=identity.org.id,
                clearance=clearance, role=role, password_hash=None,
                sso_subject=identity.sub)
    if invitation is not None:
        claimed = db.execute(update(Invitation)
                             .where(Invitation.id == invitation.id, Invitation.used_at.is_(None))
                             .values(used_at=utcnow()))
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            db.rollback()
            raise SsoRefused("This invitation was just used. Sign in again.")
    db.add(user)
    db.flush()
    audit.record("sso_account_created", actor=user, target_type="user", target_id=user.id,
                 org=identity.org.slug, clearance=clearance, role=role,
                 invitation=invitation.id if invitation else None, groups_rule=rule)
    return user


def _apply_group_clearance(user: User, identity: Identity, config: OrgSso) -> None:
    mapping = group_clearances(config)
    if not mapping:
        return
    policy = state.policy()
    mapped = [mapping[g] for g in identity.groups if g in mapping and policy.is_level(mapping[g])]
    wanted = max(mapped, key=policy.rank) if mapped else policy.lowest().key
    wanted = min(wanted, identity.org.ceiling, key=policy.rank)
    if wanted != user.clearance and not user.is_admin:
        old = user.clearance
        user.clearance = wanted
        access.forget(user)
        audit.record("clearance_changed", actor="sso", target_type="user", target_id=user.id,
                     email=user.email, old=old, new=wanted, groups=identity.groups[:20])


def open_session(user: User, identity: Identity) -> str:
    """Record the provider's session for back-channel logout; the key goes in the
    browser's session."""
    key = secrets.token_urlsafe(32)
    db.add(SsoSession(key=key, user_id=user.id, org_id=identity.org.id, sub=identity.sub,
                      sid=identity.sid))
    db.commit()
    return key


def session_ended(key: str) -> bool:
    row = db.scalar(select(SsoSession.ended_at).where(SsoSession.key == key))
    return row is not None


# ---------------------------------------------------------------- back-channel logout

def backchannel_logout(logout_token: str) -> int:
    """Check an OIDC back-channel logout token and end the sessions it names (``sid``:
    those of that provider session; only ``sub``: every session of that person).
    Returns how many Enclave sessions ended; raises SsoRefused."""
    from app.auth.service import end_all_sessions

    if not isinstance(logout_token, str) or not 0 < len(logout_token) < 20_000:
        raise SsoRefused("No logout token.", code="invalid_request")
    try:
        unverified = json.loads(_payload_segment(logout_token))
    except ValueError:
        raise SsoRefused("The logout token is not a JWT.", code="invalid_request") from None
    issuer, aud = unverified.get("iss"), unverified.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    config = db.scalar(select(OrgSso).where(OrgSso.issuer == issuer,
                                            OrgSso.client_id.in_(
                                                [a for a in audiences if isinstance(a, str)])))
    if config is None:
        raise SsoRefused("The logout token is for no organization here.", code="invalid_request")
    metadata = discover(config.issuer)
    try:
        decoded = jwt.decode(logout_token, _keys(metadata), algorithms=list(SIGNING_ALGORITHMS))
        jwt.JWTClaimsRegistry(
            leeway=60, iss={"essential": True, "value": config.issuer},
            aud={"essential": True, "value": config.client_id}, iat={"essential": True},
            jti={"essential": True}, events={"essential": True}).validate(decoded.claims)
    except JoseError as exc:
        raise SsoRefused(f"The logout token was refused ({exc.error}).",
                         code="invalid_request") from None
    claims = decoded.claims
    if (not isinstance(claims.get("events"), dict) or BACKCHANNEL_EVENT not in claims["events"]
            or "nonce" in claims or not (claims.get("sub") or claims.get("sid"))):
        raise SsoRefused("The logout token is malformed.", code="invalid_request")
    query = select(SsoSession).where(SsoSession.org_id == config.org_id,
                                     SsoSession.ended_at.is_(None))
    if claims.get("sid"):
        query = query.where(SsoSession.sid == claims["sid"])
    if claims.get("sub"):
        query = query.where(SsoSession.sub == str(claims["sub"]))
    rows = list(db.scalars(query))
    now = utcnow()
    for row in rows:
        row.ended_at = now
    if claims.get("sub") and not claims.get("sid"):
        # the person's every session: their own sessions end at once, SSO or not
        for user in db.scalars(select(User).where(User.org_id == config.org_id,
                                                  User.sso_subject == str(claims["sub"]))):
            end_all_sessions(user)
    audit.record("sso_backchannel_logout", actor=f"idp:{config.org.slug}", target_type="org",
                 target_id=config.org_id, sub=claims.get("sub"), sid=claims.get("sid"),
                 sessions_ended=len(rows))
    db.commit()
    return len(rows)


def _payload_segment(token: str) -> bytes:
    import base64

    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWS")
    segment = parts[1]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
