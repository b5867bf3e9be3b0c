"""The route matrix: every rule in the app's URL map, requested by every kind of user,
against a world seeded with "canary" strings at every level and compartment.

Each canary (a title, a body fragment, a reply, a file name and a file's bytes, an old
revision, a hidden reply, an author, a compartment organization, a reviewer's name and
organization, a flag reason and its flagger, a review comment, an unreleased public
version) has a visibility rule taken from the access rule itself (``app.access``, the
review roles). For every (principal, route, seeded id):

* no canary the principal may not see appears in the response body or headers;
* when the route's rule denies the principal, the answer is a refusal (404; 401 or a
  redirect to sign-in; the NDA or 2FA page, or a 403 nda_required/mfa_required for a
  cleared reader; a 403 for an API role check), never 200 with content, never 5xx;
* a refused request changes nothing (every table, the audit log included).

State-changing routes are sent (with a valid CSRF token for pages, a bearer token for
the API) only by principals the rule refuses, so that the world stays the same for the
whole module. A rule that is neither on the public allow-list nor in ``ROUTES`` fails
``test_every_rule_has_a_matrix_entry``: a new route needs a line here.
"""

from __future__ import annotations

import html
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select, text, update
from werkzeug.routing import Rule

from app import access, state
from app.attachments import service as attachments
from app.auth import service as users
from app.auth import tokens as api_tokens
from app.auth.models import Role, User
from app.db import Base, db, utcnow
from app.findings import service as findings
from app.findings.models import Category, Finding
from app.ndas.models import NdaAcknowledgement
from app.notifications import service as notify
from app.orgs import service as orgs
from app.orgs.models import Organization
from app.review import flags, rules
from app.review import service as review
from app.review.levels import change_level
from app.review.models import Flag, ReviewRequest
from app.review.pins import current as seen_of
from tests.conftest import csrf_from, empty_database, make_app
from tests.factories import PASSWORD, login, make_org, make_user

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

# --------------------------------------------------------------------------- allow-list

#: Reachable without signing in, by design. They are still requested by every principal
#: and checked for canaries (the public pages must never show internal content).
PUBLIC_ENDPOINTS: dict[str, str] = {
    "static": "stylesheets, scripts, icons",
    "main.index": "redirects to sign-in or home",
    "main.levels_css": "level colours from policy",
    "ops.healthz": "liveness and readiness, no counts",
    "ops.metrics": "network-gated (ENCLAVE_METRICS_ALLOW, loopback by default) or admins; "
                   "endpoint names and counts only",
    "auth.login": "sign-in",
    "auth.second_factor": "second step of sign-in (needs a pending sign-in)",
    "auth.logout": "sign-out (POST only, CSRF-checked)",
    "auth.accept_invitation": "invitation link (needs the token)",
    "auth.forgot_password": "password reset request (one answer for every address)",
    "auth.reset_password": "password reset link (needs the token)",
    "auth.passkey_assertion_options": "passkey sign-in: a challenge (POST only, CSRF-checked)",
    "auth.passkey_assertion_verify": "passkey sign-in or confirmation (POST only, CSRF-checked)",
    "sso.start": "single sign-on: to the organization's provider (POST only, CSRF-checked)",
    "sso.callback": "single sign-on: the provider's answer (needs this browser's flow)",
    "sso.backchannel_logout": "the provider's signed logout token (POST only)",
    "public.index": "released findings",
    "public.show": "a released finding (unreleased ids 404)",
    "public.download": "a released file (anything else 404)",
    "public.feed": "Atom feed of released findings",
    "api.openapi_json": "the API description",
    "api.public_findings": "released findings (JSON)",
    "api.public_finding": "a released finding (JSON)",
}

# --------------------------------------------------------------------------- canaries

_serial = iter(range(1, 10_000))


def canary(kind: str) -> str:
    """A unique word: letters and digits only, so no escaping or Markdown changes it,
    and no canary is a substring of another (the counter is fixed-width, then 'q')."""
    return f"cnry{kind}{next(_serial):04d}q"


@dataclass(frozen=True)
class Vis:
    """Who may see a canary: ``kind`` names the rule, ``keys`` what it is about."""

    kind: str  # finding | version | hidden | request | flag | author | person | org | public
    keys: tuple[str, ...] = ()  # version: (finding key, level then, compartment then)


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    findings: dict[str, int] = field(default_factory=dict)
    replies: dict[str, int] = field(default_factory=dict)  # key = finding key
    attachments: dict[str, str] = field(default_factory=dict)
    att_finding: dict[str, str] = field(default_factory=dict)  # attachment key -> finding
    requests: dict[str, int] = field(default_factory=dict)  # pub, rel, declass
    request_files: dict[str, int] = field(default_factory=dict)  # request key -> row id
    flags: dict[str, int] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)
    orgs: dict[str, str] = field(default_factory=dict)  # key -> slug
    tokens: dict[str, int] = field(default_factory=dict)  # principal -> token row id
    passkeys: dict[str, int] = field(default_factory=dict)  # principal -> passkey row id
    plaintext_tokens: dict[str, str] = field(default_factory=dict)
    affiliation: int = 0
    invitation: str = ""
    reset_token: str = ""
    category: str = "circuits"
    canaries: dict[str, Vis] = field(default_factory=dict)
    finding_of_request: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, vis: Vis) -> str:
        word = canary(kind)
        self.canaries[word] = vis
        return word


#: Principals of the matrix, in the order requests are made.
PRINCIPALS = [
    "anonymous", "pending", "suspended", "disabled", "revoked", "outsider",
    "clr_public", "clr_network", "clr_restricted", "insider", "nda_missing",
    "nda_outdated", "nda_lapsed", "lapsed", "mfa_off", "totp_session", "colleague_reviewer",
    "author", "reviewer", "east_member", "admin", "admin_network", "org_admin", "flagger",
]
#: What each principal is (printed with the counts, and documentation for readers).
PRINCIPAL_HELP = {
    "anonymous": "not signed in, no token",
    "pending": "member of a pending organization (sign-in refused; its token is refused)",
    "suspended": "member of an organization suspended after they signed in",
    "disabled": "a user disabled after signing in (sessions and tokens end)",
    "revoked": "a revoked API token (and the web without a session)",
    "outsider": "trusted organization, cleared confidential, outside every compartment",
    "clr_public": "author's organization, clearance public",
    "clr_network": "author's organization, clearance network",
    "clr_restricted": "author's organization, clearance restricted",
    "insider": "author's organization, clearance confidential (reads every finding)",
    "nda_missing": "cleared confidential, signed only the network terms",
    "nda_outdated": "cleared confidential, acknowledged every NDA at version 0",
    "nda_lapsed": "cleared confidential, signed every NDA 400 days ago (renewal due)",
    "lapsed": "cleared confidential until yesterday: the grant lapsed after notifications "
              "arrived",
    "mfa_off": "cleared confidential, 2FA off (turned off after notifications arrived)",
    "totp_session": "cleared confidential, holds a passkey but signed in with password and "
                    "authenticator code (a phished pair); its token was made from that session",
    "colleague_reviewer": "a reviewer in the author's organization",
    "author": "the author of the requests (reviewers are anonymous to her)",
    "reviewer": "an eligible reviewer from another organization (restricted)",
    "east_member": "member of the organization named in the compartments",
    "admin": "administrator in the author's organization, cleared confidential",
    "admin_network": "administrator of another organization, clearance network",
    "org_admin": "organization admin of the authors' organization, clearance restricted",
    "flagger": "flagged the network finding (reviewers stay anonymous to them)",
}


def _display(user: User, name: str) -> None:
    user.display_name = name
    db.commit()


def build_world(world: World) -> dict[str, User]:
    """Organizations, people and content. Returns the users by principal/role key."""
    north = make_org("north")
    east = make_org("east")
    west = make_org("west")
    bravo, charlie, delta = make_org("bravo"), make_org("charlie"), make_org("delta")
    pend = make_org("pendorg")
    susp = make_org("susporg")
    for org, key in ((east, "east"), (bravo, "bravo"), (charlie, "charlie"), (delta, "delta")):
        vis = Vis("org", (key,))
        org.name = world.add(f"org{key}", vis) + " Labs"
        world.orgs[key] = org.slug
    world.orgs.update(north="north", west="west")
    db.commit()

    u: dict[str, User] = {}

    def person(key: str, org: Organization, vis: Vis | None = None, **kw: Any) -> User:
        uname = world.add("uname", vis) if vis else None
        user = make_user(org, name=uname or f"p{key.replace('_', '')}", **kw)
        if vis:
            _display(user, world.add("person", vis) + " Tester")
        u[key] = user
        world.users[key] = user.id
        return user

    # principals
    person("insider", north)
    person("clr_public", north, clearance="public")
    person("clr_network", north, clearance="network")
    person("clr_restricted", north, clearance="restricted")
    person("nda_missing", north, ndas=["network-terms"])
    person("nda_outdated", north)
    person("nda_lapsed", north)
    person("lapsed", north)
    person("mfa_off", north, passkey=False)
    person("totp_session", north)
    person("colleague_reviewer", north, role="reviewer")
    person("author", north)
    person("admin", north, role="admin")
    person("org_admin", north, role="org_admin", clearance="restricted")
    person("outsider", west)
    person("admin_network", west, role="admin", clearance="network", ndas=["network-terms"])
    person("east_member", east)
    person("reviewer", bravo, Vis("person", ("reviewer",)), role="reviewer",
           clearance="restricted")
    person("pending", pend)
    person("suspended", susp)
    person("disabled", north)
    person("revoked", north)
    # people whose names are canaries
    person("rev_c", charlie, Vis("person", ("rev_c",)), role="reviewer", clearance="restricted")
    person("flagger", delta, Vis("person", ("flagger",)), clearance="network",
           ndas=["network-terms"], mfa_on=False)

    existing = set(db.scalars(select(Category.slug)))  # the first migration adds some
    for slug in ("circuits", "steering"):
        if slug not in existing:
            db.add(Category(slug=slug, name=slug.title(), description=f"About {slug}."))
    db.commit()
    # watchers: notifications are made for readers at posting time
    for key in ("insider", "mfa_off", "nda_outdated", "nda_lapsed", "lapsed", "clr_network",
                "outsider", "east_member"):
        for cat in db.scalars(select(Category)):
            notify.watch_category(u[key], cat)

    plan = [
        # key, level, compartment, author key
        ("net", "network", [], "net_author"),
        ("res", "restricted", [], "res_author"),
        ("rcomp", "restricted", ["east"], "rcomp_author"),
        ("conf", "confidential", ["east"], "conf_author"),
        ("confn", "confidential", [], "confn_author"),
        ("pub", "restricted", [], "author"),
        ("rel", "restricted", [], "author"),
        # declassified through review (restricted -> network); its first version stays
        # restricted in the history
        ("decl", "restricted", [], "decl_author"),
        # released through review and then at the public level itself
        ("pubf", "network", [], "pubf_author"),
    ]
    tails: dict[str, str] = {}
    with notify.suppress_email():
        for key, level, compartment, author_key in plan:
            if author_key not in u:
                person(author_key, north, Vis("author", (key,)))
            author = u[author_key]
            fv = Vis("finding", (key,))
            title = f"{world.add('title', fv)} study of {level} heads"
            tails[key] = world.add('tail', fv)
            body = (f"zebrafish {world.add('body', fv)} details.\n\n"
                    f"More zebrafish {tails[key]} notes.")
            category = "steering" if key in ("res", "conf") else "circuits"
            f = findings.create_finding(author, title=title, body=body, category=category,
                                        level=level, orgs=[world.orgs[o] for o in compartment])
            world.findings[key] = f.id
            r = findings.add_reply(u["insider"], f, f"zebrafish {world.add('reply', fv)} agreed")
            world.replies[key] = r.id
            # the released finding's file is published with it
            file_vis = Vis("public") if key == "rel" else fv
            data = f"file bytes {world.add('filebody', file_vis)}\n".encode()
            name = f"{world.add('file', file_vis)}.csv"
            att = attachments.upload(author, f.id, filename=name, stream=io.BytesIO(data),
                                     content_length=len(data), content_type="text/csv")
            world.attachments[key] = att.id
            world.att_finding[key] = key

        net = db.get(Finding, world.findings["net"])
        conf = db.get(Finding, world.findings["conf"])
        # a hidden reply: only moderators read its text
        hidden = findings.add_reply(u["insider"], net,
                                    f"zebrafish {world.add('hidden', Vis('hidden', ('net',)))}")
        findings.set_reply_hidden(u["admin"], hidden, True, "Off topic.")
        # an edit: the old title and body stay in the history
        cv = Vis("finding", ("conf",))
        old_title = conf.title
        findings.edit_finding(u["conf_author"], conf,
                              title=f"{world.add('newtitle', cv)} study, revised",
                              body=conf.body + f"\n\nUpdate {world.add('newbody', cv)}.")
        assert old_title != conf.title
        # a mention of someone who cannot read the finding
        findings.add_reply(u["conf_author"], conf,
                           f"{world.add('mention', cv)} @{u['outsider'].username} see this")

        # review: a pending publication request with one review and a thread
        pub = review.create_publication(
            u["author"], world.findings["pub"],
            public_title=f"{world.add('pubtitle', Vis('request', ('pub',)))} public heads",
            public_body=f"Public {world.add('pubbody', Vis('request', ('pub',)))} text.",
            attachments=[world.attachments["pub"]],
            note=f"note {world.add('pubnote', Vis('request', ('pub',)))}")
        world.requests["pub"] = pub.id
        world.request_files["pub"] = pub.attachments[0].id
        scores = {k: 1 for k in state.policy().review.rubric_keys()}
        review.add_review(u["reviewer"], pub, seen=seen_of(pub),
                          decision="approve", risk="low", scores=scores,
                          comment=f"ok {world.add('reviewcomment', Vis('request', ('pub',)))}")
        review.add_comment(u["reviewer"], pub,
                           f"thread {world.add('threadcomment', Vis('request', ('pub',)))}")
        # a released one: its public version is public, its finding is not
        rel = review.create_publication(
            u["author"], world.findings["rel"],
            public_title=f"{world.add('reltitle', Vis('public'))} released heads",
            public_body=f"Released {world.add('relbody', Vis('public'))} text.",
            attachments=[world.attachments["rel"]])
        world.requests["rel"] = rel.id
        world.request_files["rel"] = rel.attachments[0].id
        review.add_review(u["reviewer"], rel, seen=seen_of(rel),
                          decision="approve", risk="low", scores=scores,
                          comment=f"fine {world.add('relreview', Vis('request', ('rel',)))}")
        review.add_review(u["rev_c"], rel, seen=seen_of(rel),
                          decision="approve", risk="low", scores=scores,
                          comment="Fine to publish.")
        review.release(u["admin"], rel, seen=seen_of(rel))
        assert rel.state == "released"
        # the released file is public now; the finding's other file is not
        data = f"second {world.add('filebody', Vis('finding', ('rel',)))}".encode()
        second = attachments.upload(
            u["author"], world.findings["rel"],
            filename=f"{world.add('file', Vis('finding', ('rel',)))}.txt",
            stream=io.BytesIO(data), content_length=len(data))
        world.attachments["rel2"] = second.id
        world.att_finding["rel2"] = "rel"
        # a declassification request on the compartmented confidential finding
        dec = review.create_declassification(
            u["conf_author"], world.findings["conf"], target_level="restricted",
            note=f"why {world.add('declassnote', Vis('request', ('declass',)))}")
        world.requests["declass"] = dec.id
        world.finding_of_request.update(pub="pub", rel="rel", declass="conf")
        # a flag, by someone whose name is a canary
        flag = flags.create_flag(u["flagger"], world.findings["net"],
                                 reason=f"risky {world.add('flagreason', Vis('flag', ('net',)))}",
                                 suggested_level="restricted")
        world.flags["net"] = flag.id
        # a resolved (dismissed) flag on the restricted finding
        done = flags.create_flag(
            u["clr_restricted"], world.findings["res"],
            reason=f"resolved {world.add('flagreason', Vis('flag', ('res',)))}",
            suggested_level="confidential")
        flags.resolve_flag(u["reviewer"], done, outcome="dismiss",
                           note=f"dismissed {world.add('flagnote', Vis('flag', ('res',)))}")
        assert done.state != "open"
        world.flags["res"] = done.id

        # an applied declassification: two approvals, then the admin applies it. The first
        # version (restricted, with the old tail) is kept in the history, above the
        # network readers who can read the finding now
        decl = db.get(Finding, world.findings["decl"])
        dv = Vis("finding", ("decl",))
        world.canaries[tails["decl"]] = Vis("version", ("decl", "restricted", ""))
        findings.edit_finding(u["decl_author"], decl,
                              body=decl.body.replace(tails["decl"], world.add("newtail", dv)))
        applied = review.create_declassification(
            u["decl_author"], world.findings["decl"], target_level="network",
            note=f"why {world.add('declnote', Vis('request', ('applied',)))}")
        review.add_review(u["reviewer"], applied, seen=seen_of(applied),
                          decision="approve", risk="low",
                          scores=scores,
                          comment=f"ok {world.add('declreview', Vis('request', ('applied',)))}")
        review.add_review(u["rev_c"], applied, seen=seen_of(applied),
                          decision="approve", risk="low", scores=scores,
                          comment="Fine to lower.")
        review.release(u["admin"], applied, seen=seen_of(applied))
        assert applied.state == "applied" and decl.level == "network"
        world.requests["applied"] = applied.id
        world.finding_of_request["applied"] = "decl"

        # a finding released through review and then at the public level itself (the
        # services never lower a finding to public: the review outcome is applied here
        # the way a declassification is)
        pubf = db.get(Finding, world.findings["pubf"])
        out = review.create_publication(
            u["pubf_author"], pubf.id,
            public_title=f"{world.add('pubftitle', Vis('public'))} open heads",
            public_body=f"Open {world.add('pubfbody', Vis('public'))} text.",
            note=f"note {world.add('pubfnote', Vis('request', ('pubrel',)))}")
        review.add_review(u["reviewer"], out, seen=seen_of(out),
                          decision="approve", risk="low", scores=scores,
                          comment="Fine.")
        review.add_review(u["rev_c"], out, seen=seen_of(out),
                          decision="approve", risk="low", scores=scores,
                          comment="Fine.")
        review.release(u["admin"], out, seen=seen_of(out))
        change_level(u["admin"], pubf, "public", why=f"request:{out.id}")
        db.commit()
        assert pubf.level == "public" and out.state == "released"
        world.requests["pubrel"] = out.id
        world.finding_of_request["pubrel"] = "pubf"
        aff = flags.add_affiliation(u["admin"], "west", "delta", "sister labs")
        world.affiliation = aff.id
        world.invitation = users.invite(u["admin"], north, "invitee@north.example", "network",
                                        "member").token
        reset_mail = users.request_password_reset(u["admin"].email)
        assert reset_mail is not None
        world.reset_token = re.search(r"/reset/([A-Za-z0-9_-]+)",
                                      reset_mail.get_content()).group(1)

    # API tokens (before standing changes, so that they exist and must stop working), as
    # `enclave token create` makes them, but the one made from a password+code session
    for key in PRINCIPALS:
        if key in u and key != "pending":
            token, plaintext = api_tokens.create_token(u[key], "matrix",
                                                  proof=PROOFS.get(key, "operator"),
                                                  scopes=api_tokens.allowed_scopes(u[key]))
            world.tokens[key] = token.id
            world.plaintext_tokens[key] = plaintext
    world.passkeys.update({key: u[key].passkeys[0].id for key in ("insider",)})
    return u


#: How principals other than the default (a passkey) prove who they are: signing in, their
#: token, and so the facts the oracle computes.
PROOFS = {"totp_session": "totp", "mfa_off": "totp"}


def _degrade(world: World, u: dict[str, User]) -> None:
    """The state changes that happen after sign-in: each principal's defect."""
    api_tokens.revoke_token(u["revoked"], world.tokens["revoked"])
    users.set_active(None, u["disabled"], False)
    orgs.set_status(None, db.get(Organization, u["suspended"].org_id), "suspended")
    orgs.set_status(None, db.get(Organization, u["pending"].org_id), "pending")
    # an NDA text changed since nda_outdated signed: their acknowledgements are stale
    db.execute(update(NdaAcknowledgement)
               .where(NdaAcknowledgement.user_id == u["nda_outdated"].id)
               .values(version=0))
    # renew_days (365) ran out for nda_lapsed; lapsed's clearance grant ended yesterday
    db.execute(update(NdaAcknowledgement)
               .where(NdaAcknowledgement.user_id == u["nda_lapsed"].id)
               .values(created_at=utcnow() - timedelta(days=400)))
    u["lapsed"].clearance_expires_at = utcnow() - timedelta(days=1)
    mfa_off = u["mfa_off"]
    mfa_off.totp_enabled_at = None
    mfa_off.totp_secret_enc = None
    db.commit()


# --------------------------------------------------------------------------- facts


@dataclass
class Facts:
    """What the access rule says about one principal (computed once, in Python)."""

    web_ok: bool = False
    api_ok: bool = False
    admin: bool = False
    org_admin: bool = False
    reviewer: bool = False
    user_key: str = ""
    org_slug: str = ""
    readable: set[str] = field(default_factory=set)
    denial: dict[str, access.Denial] = field(default_factory=dict)
    viewer: dict[str, str | None] = field(default_factory=dict)
    flag_role: dict[str, str | None] = field(default_factory=dict)
    visible: set[str] = field(default_factory=set)
    versions: dict[str, bool] = field(default_factory=dict)  # version canary -> readable


def _facts(key: str, world: World, *, signed_in: bool, token_ok: bool) -> Facts:
    facts = Facts(user_key=key)
    if key == "anonymous":
        return facts
    user = db.get(User, world.users[key])
    access.assume_proof(user, PROOFS.get(key, "passkey"))
    good = access.in_good_standing(user)
    facts.web_ok = signed_in and good
    facts.api_ok = token_ok and good
    facts.admin = good and user.has_role(Role.ADMIN)
    facts.org_admin = good and user.has_role(Role.ORG_ADMIN)
    facts.reviewer = good and rules.is_reviewer(user)
    facts.org_slug = user.org.slug
    for fkey, fid in world.findings.items():
        finding = db.get(Finding, fid)
        facts.denial[fkey] = access.denial(user, finding)
        if access.can_read(user, finding):
            facts.readable.add(fkey)
    for rkey, rid in world.requests.items():
        facts.viewer[rkey] = review.viewer_role(user, db.get(ReviewRequest, rid))
    for fkey, flag_id in world.flags.items():
        facts.flag_role[fkey] = flags.flag_role(user, db.get(Flag, flag_id))
    for word, vis in world.canaries.items():
        if vis.kind == "version":
            fkey, level, compartment = vis.keys
            finding = db.get(Finding, world.findings[fkey])
            facts.versions[word] = (fkey in facts.readable and access.can_read_version(
                user, finding, level, compartment))
    return facts


def _visible(facts: Facts, world: World) -> set[str]:
    """The canaries this principal may see anywhere."""
    out = set()
    reviewed = {"reviewer": ("pub", "rel", "applied", "pubrel"),
                "rev_c": ("rel", "applied", "pubrel")}
    for word, vis in world.canaries.items():
        k = vis.keys[0] if vis.keys else ""
        if vis.kind == "public":
            ok = True
        elif vis.kind == "finding":
            ok = k in facts.readable
        elif vis.kind == "version":
            ok = facts.versions.get(word, False)
        elif vis.kind == "hidden":
            ok = k in facts.readable and facts.admin
        elif vis.kind == "author":
            ok = k in facts.readable or facts.admin or facts.user_key == f"{k}_author"
        elif vis.kind == "request":
            ok = facts.viewer.get(k) is not None
        elif vis.kind == "flag":
            ok = facts.flag_role.get(k) is not None
        elif vis.kind == "person":
            # a reviewer's or flagger's identity: admins (who manage users), the person,
            # and those the review rules show names to
            ok = facts.admin or facts.user_key == k
            if k == "flagger":
                ok = ok or facts.flag_role.get("net") in ("admin", "reviewer")
            else:
                ok = ok or any(facts.viewer.get(r) in ("admin", "reviewer")
                               for r in reviewed[k])
                if k == "reviewer":  # he resolved the "res" flag
                    ok = ok or facts.flag_role.get("res") in ("admin", "reviewer")
        elif vis.kind == "org":
            ok = facts.admin or facts.org_slug == k
            if k == "east":
                ok = ok or bool(facts.readable & {"rcomp", "conf"})
            elif k == "bravo":  # the reviewer's organization is shown with the name
                ok = ok or any(facts.viewer.get(r) in ("admin", "reviewer")
                               for r in reviewed["reviewer"])
                ok = ok or facts.flag_role.get("res") in ("admin", "reviewer")
            elif k == "charlie":
                ok = ok or any(facts.viewer.get(r) in ("admin", "reviewer")
                               for r in reviewed["rev_c"])
            elif k == "delta":
                ok = ok or facts.flag_role.get("net") in ("admin", "reviewer")
        else:  # pragma: no cover
            raise AssertionError(vis)
        if ok:
            out.add(word)
    return out


#: Pages that list every trusted organization to any member in good standing (the
#: compartment picker, the admin pages): organization names are not secret there.
#: Pages where an organization admin manages the members of their own organization: the
#: names of those members (authors included) are not secret to them there.
MEMBER_LISTING = {"admin.user_list", "admin.invite", "admin.user_edit", "api.admin_user",
                  "api.admin_user_update"}

ORG_LISTING = {"findings.new", "findings.edit", "review.admin", "orgs.index", "orgs.edit",
               "admin.user_list", "admin.invite", "admin.user_edit", "api.admin_orgs",
               "api.affiliations_list", "admin.audit_log", "api.admin_audit",
               "orgs.renew", "api.admin_org_renew", "api.admin_user", "api.admin_user_update"}


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class R:
    """How to exercise one endpoint.

    ``target``: the kind of seeded id its URL takes (every seeded one is tried).
    ``gate``: who the rule lets through: public | member | reviewer | org_admin | admin
    | read (the target's own rule) | review (a reviewer who can read it) |
    reviewer+read | admin+read | owner (the token's owner, or an admin).
    """

    methods: tuple[str, ...]
    target: str = "none"
    gate: str = "member"
    form: dict[str, Any] | None = None
    json: dict[str, Any] | None = None
    raw: bool = False
    json_answers: bool = False  # a page endpoint that answers JSON (the upload XHR)
    query: tuple[dict[str, str], ...] = ({},)


REVIEW_FORM = {"decision": "approve", "risk": "low", "comment": "ok",
               **{f"score_{k}": "1" for k in ("capability_uplift", "method_specificity",
                                              "alignment_benefit", "availability_elsewhere")}}
SEARCH = ({"q": "zebrafish"},)
AUDIT_PAGES = tuple({"per_page": "100", "page": str(n)} for n in range(1, 6))

ROUTES: dict[str, R] = {
    # ---- pages for members
    "main.home": R(("GET",)),
    "auth.account": R(("GET", "POST"), form={"current_password": PASSWORD,
                                             "password": "a-new-long-passphrase-9",
                                             "confirm": "a-new-long-passphrase-9"}),
    "auth.mfa_setup": R(("GET", "POST"), form={"code": "123456"}),
    "auth.mfa_disable": R(("POST",), form={"password": PASSWORD, "code": "123456"}),
    "auth.mfa_recovery_codes": R(("POST",), form={"code": "123456"}),
    "auth.tokens": R(("GET", "POST"), form={"name": "new"}),
    "auth.passkeys": R(("GET",)),
    "auth.passkey_register_options": R(("POST",), form={}),
    "auth.passkey_register": R(("POST",), form={}),
    "auth.passkey_remove": R(("POST",), target="passkey", gate="self", form={}),
    "auth.confirm": R(("GET", "POST"), form={"password": PASSWORD, "code": "123456"}),
    "auth.openpgp_key": R(("POST",), form={"key": ""}),
    "auth.revoke_token": R(("POST",), target="token", gate="owner", form={}),
    "ndas.index": R(("GET",)),
    "ndas.show": R(("GET", "POST"), target="nda", form={"signed_name": "Someone",
                                                         "version": "1"}),
    "notifications.index": R(("GET",)),
    "notifications.mark_all_read": R(("POST",), form={}),
    "findings.index": R(("GET",)),
    "findings.categories": R(("GET",)),
    "findings.by_category": R(("GET",), target="category"),
    "findings.by_level": R(("GET",), target="level"),
    "findings.search": R(("GET",), query=SEARCH),
    "findings.watch_category": R(("POST",), target="category", form={}),
    "findings.new": R(("GET", "POST"), form={"title": "New", "body": "Body", "level": "network",
                                            "category": "circuits"}),
    "findings.show": R(("GET",), target="finding", gate="read"),
    "findings.history": R(("GET",), target="finding", gate="read"),
    "findings.edit": R(("GET", "POST"), target="finding", gate="read",
                       form={"title": "Taken over", "body": "Overwritten"}),
    "findings.reply": R(("POST",), target="finding", gate="read", form={"body": "Me too"}),
    "findings.preview": R(("POST",), target="finding", gate="read", form={"body": "Me *too*"},
                          json_answers=True),
    "findings.preview_new": R(("POST",), form={"body": "Me *too*"}, json_answers=True),
    # people who can read the finding; "zz" matches no seeded name (a reader may learn
    # who else can read it, by name: docs/writing.md)
    "findings.mentions": R(("GET",), target="finding", gate="read",
                           query=({"q": "zz"},)),
    "findings.watch": R(("POST",), target="finding", gate="read", form={}),
    "reactions.finding": R(("POST",), target="finding", gate="read", form={"kind": "agree"}),
    "reactions.reply": R(("POST",), target="reply", gate="read", form={"kind": "agree"}),
    "findings.lock": R(("POST",), target="finding", gate="admin+read", form={}),
    "findings.move": R(("POST",), target="finding", gate="admin+read",
                       form={"category": "steering"}),
    "findings.hide_reply": R(("POST",), target="reply", gate="admin+read",
                             form={"reason": "spam"}),
    "attachments.upload": R(("POST",), target="finding", gate="read", raw=True,
                            json_answers=True),
    "attachments.download": R(("GET",), target="attachment", gate="read"),
    "attachments.delete": R(("POST",), target="attachment", gate="read", form={}),
    # ---- traceability: view-only files (none in this world's policy: every one is 404),
    # the watermark of a level, and tracing (admins)
    "traceability.view": R(("GET",), target="attachment", gate="read"),
    "traceability.view_image": R(("GET",), target="view_image", gate="read"),
    # figures in the text: this world's files are not images, so 404 for everyone
    "traceability.figure": R(("GET",), target="attachment", gate="read"),
    "traceability.watermark_css": R(("GET",), target="level"),
    "traceability.watermark_png": R(("GET",), target="level"),
    "traceability.trace": R(("GET", "POST"), gate="admin", form={"code": "ABCDE-FGH23"}),
    # ---- review
    "review.queue": R(("GET",), gate="reviewer"),
    "review.mine": R(("GET",)),
    "review.admin": R(("GET",), gate="admin"),
    "review.add_affiliation": R(("POST",), gate="admin",
                                form={"org_a": "north", "org_b": "east", "note": "x"}),
    "review.remove_affiliation": R(("POST",), target="affiliation", gate="admin", form={}),
    "review.declare_conflict": R(("POST",), target="finding", gate="reviewer+read",
                                 form={"reason": "conflict"}),
    "review.flag_new": R(("GET", "POST"), target="finding", gate="read",
                         form={"reason": "dual use", "suggested_level": "confidential"}),
    "review.publish_new": R(("GET", "POST"), target="finding", gate="read",
                            form={"public_title": "Out", "public_body": "Out",
                                  "embargo_tz": "UTC"}),
    "review.declassify_new": R(("GET", "POST"), target="finding", gate="read",
                               form={"target_level": "network", "note": "old news"}),
    "review.flag_show": R(("GET",), target="flag", gate="read"),
    "review.flag_resolve": R(("POST",), target="flag", gate="review",
                             form={"outcome": "dismiss", "note": "fine"}),
    "review.request_show": R(("GET",), target="request", gate="read"),
    "review.request_edit": R(("GET", "POST"), target="request", gate="read",
                             form={"public_title": "Changed", "public_body": "Changed",
                                   "embargo_tz": "UTC"}),
    "review.request_review": R(("POST",), target="request", gate="review", form=REVIEW_FORM),
    "review.request_comment": R(("POST",), target="request", gate="read",
                                form={"body": "A comment"}),
    "review.request_withdraw": R(("POST",), target="request", gate="read", form={"reason": "x"}),
    "review.request_escalate": R(("POST",), target="request", gate="admin+read",
                                 form={"reason": "x"}),
    "review.request_reopen": R(("POST",), target="request", gate="admin+read",
                               form={"reason": "x"}),
    "review.request_release": R(("POST",), target="request", gate="admin+read",
                                form={"reason": ""}),
    # ---- administration
    "admin.user_list": R(("GET",), gate="org_admin"),
    "admin.invite": R(("POST",), gate="org_admin",
                      form={"email": "x@north.example", "org": "north", "clearance": "network",
                            "role": "member"}),
    "admin.user_edit": R(("GET", "POST"), target="user", gate="org_admin",
                         form={"clearance": "public", "role": "member"}),
    "admin.user_active": R(("POST",), target="user", gate="org_admin", form={"active": "0"}),
    "admin.user_passkeys_reset": R(("POST",), target="user", gate="org_admin", form={}),
    "sso.settings": R(("GET", "POST"), target="org", gate="admin",
                      form={"issuer": "https://idp.example.org", "client_id": "taken",
                            "client_secret": "over"}),
    "admin.audit_log": R(("GET",), gate="admin", query=AUDIT_PAGES),
    "orgs.index": R(("GET",), gate="admin"),
    "orgs.renew": R(("POST",), target="org", gate="admin", form={}),
    "orgs.create": R(("POST",), gate="admin",
                     form={"slug": "newco", "name": "New Co", "domains": "newco.example",
                           "ceiling": "network", "trusted": "y"}),
    "orgs.edit": R(("GET", "POST"), target="org", gate="admin",
                   form={"name": "Renamed", "domains": "east.example", "ceiling": "network",
                         "status": "suspended"}),
    "categories.admin_index": R(("GET",), gate="admin"),
    "categories.admin_create": R(("POST",), gate="admin",
                                 form={"slug": "newcat", "name": "New", "description": ""}),
    "categories.admin_edit": R(("GET", "POST"), target="category", gate="admin",
                               form={"name": "Renamed", "description": ""}),
    # ---- API (bearer token)
    "api.me": R(("GET",)),
    "api.my_passkeys": R(("GET",)),
    "api.my_openpgp_key": R(("PUT",), json={"key": ""}),
    "api.org_sso_get": R(("GET",), target="org", gate="admin"),
    "api.org_sso_put": R(("PUT",), target="org", gate="admin",
                         json={"issuer": "https://idp.example.org", "client_id": "taken",
                               "client_secret": "over"}),
    "api.levels": R(("GET",)),
    "api.nda_list": R(("GET",)),
    "api.nda_acknowledge": R(("POST",), target="nda", json={"signed_name": "Someone"}),
    "api.categories": R(("GET",)),
    "api.finding_list": R(("GET",), query=({}, *SEARCH)),
    "api.finding_create": R(("POST",), json={"title": "New", "body": "Body", "level": "network",
                                             "category": "circuits"}),
    "api.finding_get": R(("GET",), target="finding", gate="read"),
    "api.finding_patch": R(("PATCH",), target="finding", gate="read",
                           json={"title": "Taken over"}),
    "api.reply_create": R(("POST",), target="finding", gate="read", json={"body": "Me too"}),
    "api.finding_respond": R(("POST",), target="finding", gate="read", json={"kind": "agree"}),
    "api.reply_respond": R(("POST",), target="reply", gate="read", json={"kind": "agree"}),
    "api.list_attachments": R(("GET",), target="finding", gate="read"),
    "api.upload_attachment": R(("POST",), target="finding", gate="read", raw=True),
    "api.download_attachment": R(("GET",), target="attachment", gate="read"),
    "api.delete_attachment": R(("DELETE",), target="attachment", gate="read"),
    "api.notification_list": R(("GET",)),
    "api.flag_create": R(("POST",), target="finding", gate="read",
                         json={"reason": "dual use", "suggested_level": "confidential"}),
    "api.flag_get": R(("GET",), target="flag", gate="read"),
    "api.flag_resolve": R(("POST",), target="flag", gate="review",
                          json={"outcome": "dismiss", "note": "fine"}),
    "api.conflict_declare": R(("POST",), target="finding", gate="read",
                              json={"reason": "conflict"}),
    "api.publication_create": R(("POST",), target="finding", gate="read",
                                json={"public_title": "Out", "public_body": "Out"}),
    "api.declassification_create": R(("POST",), target="finding", gate="read",
                                     json={"target_level": "network", "note": "old news"}),
    "api.review_queue": R(("GET",), gate="reviewer"),
    "api.request_get": R(("GET",), target="request", gate="read"),
    "api.request_edit": R(("PATCH",), target="request", gate="read", json={"note": "x"}),
    "api.request_decide": R(("POST",), target="request", gate="review",
                            json={"decision": "approve", "risk": "low", "comment": "ok",
                                  "scores": {k: 1 for k in (
                                      "capability_uplift", "method_specificity",
                                      "alignment_benefit", "availability_elsewhere")}}),
    "api.request_comment": R(("POST",), target="request", gate="read", json={"body": "x"}),
    "api.request_escalate": R(("POST",), target="request", gate="read", json={"reason": "x"}),
    "api.request_reopen": R(("POST",), target="request", gate="read", json={"reason": "x"}),
    "api.request_withdraw": R(("POST",), target="request", gate="read", json={}),
    "api.request_release": R(("POST",), target="request", gate="read", json={}),
    "api.affiliations_list": R(("GET",), gate="admin"),
    "api.affiliations_add": R(("POST",), gate="admin", json={"orgs": ["north", "east"]}),
    "api.affiliations_remove": R(("DELETE",), target="affiliation", gate="admin"),
    "api.admin_orgs": R(("GET",), gate="admin"),
    "api.admin_org_create": R(("POST",), gate="admin",
                              json={"slug": "newco", "name": "New", "domains": ["newco.example"],
                                    "ceiling": "network"}),
    "api.admin_org_update": R(("PATCH",), target="org", gate="admin",
                              json={"status": "suspended"}),
    "api.admin_org_renew": R(("POST",), target="org", gate="admin", json={}),
    "api.admin_trace": R(("POST",), gate="admin", raw=True),
    "api.admin_user": R(("GET",), target="user", gate="org_admin"),
    "api.admin_user_update": R(("PATCH",), target="user", gate="org_admin",
                               json={"clearance": "public"}),
    "api.admin_audit": R(("GET",), gate="admin", query=AUDIT_PAGES),
    # ---- SCIM (one organization's bearer token; no principal here holds one: every
    # cookie and API token is refused with 401; tests/test_scim.py drives it with one)
    "scim.service_provider_config": R(("GET",), target="scim", gate="scim"),
    "scim.resource_types": R(("GET",), target="scim", gate="scim"),
    "scim.schemas": R(("GET",), target="scim", gate="scim"),
    "scim.user_list": R(("GET",), target="scim", gate="scim"),
    "scim.user_create": R(("POST",), target="scim", gate="scim",
                          json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                "userName": "x@north.example"}),
    "scim.user_get": R(("GET",), target="scim_user", gate="scim"),
    "scim.user_replace": R(("PUT",), target="scim_user", gate="scim", json={}),
    "scim.user_patch": R(("PATCH",), target="scim_user", gate="scim", json={}),
    "scim.user_delete": R(("DELETE",), target="scim_user", gate="scim"),
}

#: The public routes, with the ids they are tried with (canaries only; no gate).
PUBLIC_ROUTES: dict[str, R] = {
    "static": R(("GET",), target="static", gate="public"),
    "main.index": R(("GET",), gate="public"),
    "main.levels_css": R(("GET",), gate="public"),
    "ops.healthz": R(("GET",), gate="public"),
    "ops.metrics": R(("GET",), gate="public"),
    "auth.login": R(("GET", "POST"), gate="public"),
    "auth.second_factor": R(("GET", "POST"), gate="public"),
    "auth.logout": R(("POST",), gate="public"),
    "auth.accept_invitation": R(("GET", "POST"), target="invitation", gate="public"),
    "auth.forgot_password": R(("GET", "POST"), gate="public", form={"email": "x@north.example"}),
    "auth.reset_password": R(("GET", "POST"), target="reset", gate="public",
                             form={"password": "harbour-violet-tundra-anchor",
                                   "confirm": "harbour-violet-tundra-anchor"}),
    "auth.passkey_assertion_options": R(("POST",), gate="public"),
    "auth.passkey_assertion_verify": R(("POST",), gate="public"),
    "sso.start": R(("POST",), gate="public"),
    "sso.callback": R(("GET",), gate="public"),
    "sso.backchannel_logout": R(("POST",), gate="public"),
    "public.index": R(("GET",), gate="public"),
    "public.show": R(("GET",), target="public_item", gate="read"),
    "public.download": R(("GET",), target="public_file", gate="read"),
    "public.feed": R(("GET",), gate="public"),
    "api.openapi_json": R(("GET",), gate="public"),
    "api.public_findings": R(("GET",), gate="public"),
    "api.public_finding": R(("GET",), target="public_item", gate="read"),
}
assert set(PUBLIC_ROUTES) == set(PUBLIC_ENDPOINTS)
assert not set(PUBLIC_ROUTES) & set(ROUTES)
ALL_ROUTES = {**ROUTES, **PUBLIC_ROUTES}


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    values: dict[str, Any]
    key: str = ""  # the seeded item's key (finding, request, flag, ...)
    finding: str = ""  # the finding it belongs to, if any


def _targets(kind: str, rule: Rule, world: World) -> list[Target]:
    args = set(rule.arguments)
    fid = "finding_id" if "finding_id" in args else "id"
    rid = "request_id" if "request_id" in args else "id"
    if kind == "none":
        return [Target({})]
    if kind == "finding":
        return [Target({fid: i}, k, k) for k, i in world.findings.items()]
    if kind == "reply":
        return [Target({"reply_id": i}, k, k) for k, i in world.replies.items()]
    if kind == "attachment":
        return [Target({"attachment_id": i}, k, world.att_finding[k])
                for k, i in world.attachments.items()]
    if kind == "request":
        return [Target({rid: i}, k, world.finding_of_request[k])
                for k, i in world.requests.items()]
    if kind == "flag":
        return [Target({"flag_id" if "flag_id" in args else "id": i}, k, k)
                for k, i in world.flags.items()]
    if kind == "public_item":
        key = "item_id" if "item_id" in args else "id"
        return [Target({key: public_number(world, k)}, k) for k in world.requests]
    if kind == "public_file":
        return [Target({"item_id": public_number(world, k), "file_id": i}, k)
                for k, i in world.request_files.items()]
    if kind == "category":
        return [Target({"slug": s}) for s in ("circuits", "steering")]
    if kind == "level":
        name = "key" if "key" in args else "level"
        return [Target({name: lv}) for lv in state.policy().level_keys()]
    if kind == "view_image":  # a view id nobody has: refused (404) for everyone
        return [Target({"attachment_id": i, "copy_id": "0" * 32, "page": 0}, k,
                       world.att_finding[k]) for k, i in world.attachments.items()]
    if kind == "nda":
        return [Target({"key": k}) for k in state.policy().ndas]
    if kind == "org":
        return [Target({"slug": world.orgs["east"]}, "east")]
    if kind == "user":
        return [Target({"user_id": world.users["insider"]}, "insider")]
    if kind == "token":
        return [Target({"token_id": world.tokens["insider"]}, "insider")]
    if kind == "scim":
        return [Target({"org": "north"})]
    if kind == "scim_user":
        return [Target({"org": "north", "user_id": world.users["insider"]}, "insider")]
    if kind == "passkey":
        return [Target({"passkey_id": world.passkeys["insider"]}, "insider")]
    if kind == "affiliation":
        return [Target({"id" if "id" in args else "affiliation_id": world.affiliation})]
    if kind == "invitation":
        return [Target({"token": world.invitation})]
    if kind == "reset":
        return [Target({"token": world.reset_token})]
    if kind == "static":
        return [Target({"filename": "enclave.css"})]
    raise AssertionError(kind)  # pragma: no cover


#: The released publication requests (their public versions are on the public pages).
RELEASED = {"rel", "pubrel"}


def public_number(world: World, key: str) -> int:
    """The public item number of request ``key``: its own number once released; for an
    unreleased request, a number no released item has (public URLs never take request
    ids, so the request's own id would say nothing)."""
    rid = world.requests[key]
    number = db.scalar(select(ReviewRequest.public_id).where(ReviewRequest.id == rid))
    return number if number is not None else 10_000 + rid


def entitled(facts: Facts, spec: R, target: Target, api: bool) -> bool:
    """Whether the rule lets this principal through (the matrix's oracle)."""
    gate = spec.gate
    if gate == "read" and spec.target in ("public_item", "public_file"):
        return target.key in RELEASED
    if gate == "public":
        return True
    if gate == "scim":
        return False  # an organization's SCIM token, which no principal holds
    if not (facts.api_ok if api else facts.web_ok):
        return False
    if gate == "member":
        return True
    if gate == "reviewer":
        return facts.reviewer
    if gate == "org_admin":
        return facts.org_admin
    if gate == "admin":
        return facts.admin
    if gate == "owner":
        return facts.admin or facts.user_key == target.key
    if gate == "self":
        return facts.user_key == target.key
    reads = _reads(facts, spec.target, target)
    if gate == "read":
        return reads
    if gate == "review":
        return facts.reviewer and target.finding in facts.readable
    if gate == "reviewer+read":
        return facts.reviewer and reads
    if gate == "admin+read":
        return facts.admin and reads
    raise AssertionError(gate)  # pragma: no cover


def _reads(facts: Facts, kind: str, target: Target) -> bool:
    if kind == "request":
        return facts.viewer.get(target.key) is not None
    if kind == "flag":
        return facts.flag_role.get(target.key) is not None
    return target.finding in facts.readable


# --------------------------------------------------------------------------- the run


@dataclass
class Principal:
    key: str
    client: FlaskClient
    headers: dict[str, str]
    csrf: str
    facts: Facts


@dataclass
class Matrix:
    app: Flask
    world: World
    principals: list[Principal]
    counts: Counter[str] = field(default_factory=Counter)
    checked: set[tuple[str, str]] = field(default_factory=set)
    spec: Any = None  # the API's OpenAPI document, loaded by schemathesis
    writes: list[str] = field(default_factory=list)  # every INSERT/UPDATE/DELETE sent
    snapshot: tuple[Any, ...] = ()
    snapshot_at: int = -1  # len(writes) when the snapshot was taken

    def current(self) -> tuple[Any, ...]:
        """The database as it is now (re-read only when something wrote since)."""
        if self.snapshot_at != len(self.writes):
            self.snapshot = fingerprint(self.app)
            self.snapshot_at = len(self.writes)
        return self.snapshot


def _sign_in(client: FlaskClient, user: User, key: str) -> bool:
    response = login(client, user, with_passkey=PROOFS.get(key, "passkey") == "passkey"
                     and user.has_passkeys)
    return response.status_code == 302 and "/login" not in response.location


def _csrf(client: FlaskClient) -> str:
    for url in ("/account", "/login"):
        page = client.get(url)
        try:
            return csrf_from(page.get_data(as_text=True))
        except AssertionError:
            continue
    # a signed-in user whose pages all 404: the error page still carries the sign-out form
    return csrf_from(client.get("/findings/999999").get_data(as_text=True))


@pytest.fixture(scope="module")
def matrix(migrated: str, instance_dir: Path) -> Iterator[Matrix]:
    app = make_app(migrated, instance_dir)
    world = World()
    clients: dict[str, FlaskClient] = {}
    signed_in: dict[str, bool] = {}
    with app.app_context():
        u = build_world(world)
        for key in PRINCIPALS:
            client = app.test_client()
            clients[key] = client
            signed_in[key] = False
            if key in u and key not in ("revoked", "pending"):
                # revoked: a token principal; pending: sign-in is refused (tried anyway)
                signed_in[key] = _sign_in(client, u[key], key)
        login(clients["pending"], u["pending"])
        _degrade(world, u)
        db.remove()
    principals = []
    with app.app_context():
        for key in PRINCIPALS:
            token = world.plaintext_tokens.get(key)
            facts = _facts(key, world, signed_in=signed_in[key],
                           token_ok=key not in ("revoked", "disabled", "suspended"))
            facts.visible = _visible(facts, world)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            principals.append(Principal(key, clients[key], headers, "", facts))
        db.remove()
    for p in principals:
        p.csrf = _csrf(p.client)
    m = Matrix(app, world, principals)
    m.spec = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)

    def _track(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            m.writes.append(statement)

    event.listen(app.extensions["enclave.engine"], "before_cursor_execute", _track)
    try:
        yield m
    finally:
        _report(m)
        with app.app_context():
            empty_database()
        app.extensions["enclave.engine"].dispose()


def _report(m: Matrix) -> None:
    if not m.checked:  # another module (the confidentiality test) reused the world
        return
    routes = {r for r, _ in m.checked}
    lines = [f"route matrix: {len(routes)} routes x {len(m.principals)} principals = "
             f"{len(m.checked)} (route, principal) pairs checked",
             *(f"  principal {k}: {PRINCIPAL_HELP[k]}" for k in PRINCIPALS),
             *(f"  {k}: {v}" for k, v in sorted(m.counts.items()))]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "route-matrix.txt").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


VOLATILE = {"api_tokens": ("last_used_at", "last_used_ip")}


def fingerprint(app: Flask) -> tuple[Any, ...]:
    """Every row of every table (the world is small): a refused request changes none."""
    with app.app_context():
        rows = []
        for table in Base.metadata.sorted_tables:
            # a token's last use is recorded (at most every 5 minutes) on any request
            columns = [c for c in table.columns if c.name not in VOLATILE.get(table.name, ())]
            # ordered: PostgreSQL moves an updated row, so heap order is not stable
            query = select(*columns).order_by(*table.primary_key.columns)
            rows.append((table.name, db.execute(query).all()))
        db.remove()
    return tuple(rows)


_TEXT_TYPES = ("text/", "application/json", "application/atom+xml", "application/xml")


def _response_text(response: Any) -> str:
    raw = response.get_data()
    body = raw.decode("utf-8", errors="replace")
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return f"{headers}\n{body}\n{html.unescape(body)}"


def _protected(p: Principal, endpoint: str, world: World) -> list[str]:
    hidden = []
    for word, vis in world.canaries.items():
        if word in p.facts.visible:
            continue
        if vis.kind == "org" and endpoint in ORG_LISTING and (p.facts.web_ok or p.facts.api_ok):
            continue
        if (vis.kind == "author" and endpoint in MEMBER_LISTING and p.facts.org_admin
                and p.facts.org_slug == "north"):  # every author is in north
            continue
        hidden.append(word)
    return hidden


def _refusal_problem(response: Any, api: bool, p: Principal, spec: R, target: Target) -> str:
    """'' when the response is a proper refusal for this principal."""
    status = response.status_code
    if spec.gate == "scim":
        return "" if status == 401 else f"status {status}"
    if api:
        if status == 401:
            return "" if not p.facts.api_ok else "401 for a valid token"
        if status == 404:
            return ""
        if status == 403:
            code = (response.get_json(silent=True) or {}).get("error", {}).get("code")
            if code in ("nda_required", "mfa_required", "passkey_required"):
                denial = p.facts.denial.get(target.finding)
                ok = denial in (access.Denial.NDA, access.Denial.MFA, access.Denial.PASSKEY)
                return "" if ok else f"403 {code} to someone not cleared for it"
            if code == "forbidden" and spec.gate in ("admin", "reviewer", "org_admin"):
                return ""
            return f"403 {code}"
        return f"status {status}"
    if status == 404:
        return ""
    if status == 403 and spec.json_answers:  # the upload XHR answers like the API
        code = (response.get_json(silent=True) or {}).get("error", {}).get("code")
        denial = p.facts.denial.get(target.finding)
        if code in ("nda_required", "mfa_required", "passkey_required") and denial in (
                access.Denial.NDA, access.Denial.MFA, access.Denial.PASSKEY):
            return ""
        return f"403 {code}"
    if status == 302:
        path = urlsplit(response.location).path
        if path == "/login":
            return "" if not p.facts.web_ok else "sent a signed-in member to sign in"
        if path.startswith(("/ndas", "/account/2fa", "/account/confirm", "/account/passkeys")):
            denial = p.facts.denial.get(target.finding)
            ok = denial in (access.Denial.NDA, access.Denial.MFA, access.Denial.PASSKEY)
            return "" if ok else f"redirect to {path} for someone not cleared for it"
        return f"redirect to {path}"
    return f"status {status}"


def _request(p: Principal, method: str, url: str, spec: R, api: bool) -> Any:
    headers = dict(p.headers) if api or p.key == "revoked" else {}
    if api:
        if spec.raw:
            return p.client.open(url, method=method, data=b"payload bytes", headers={
                **headers, "Content-Type": "application/octet-stream"},
                query_string={"filename": "x.bin"})
        if method in ("POST", "PATCH", "PUT", "DELETE") and spec.json is not None:
            return p.client.open(url, method=method, json=spec.json, headers=headers)
        return p.client.open(url, method=method, headers=headers)
    if method == "GET":
        return p.client.get(url, headers=headers)
    if spec.raw:
        return p.client.post(url, data=b"payload bytes", query_string={"filename": "x.bin"},
                             headers={**headers, "X-CSRFToken": p.csrf,
                                      "Content-Type": "application/octet-stream"})
    return p.client.open(url, method=method, headers=headers,
                         data={**(spec.form or {}), "csrf_token": p.csrf})


def run_route(m: Matrix, endpoint: str) -> list[str]:
    spec = ALL_ROUTES[endpoint]
    app, world = m.app, m.world
    rules_ = [r for r in app.url_map.iter_rules() if r.endpoint == endpoint]
    assert rules_, f"{endpoint} is in the matrix but not in the URL map"
    api = endpoint.startswith("api.")
    adapter = app.url_map.bind("localhost")
    problems: list[str] = []
    for rule in rules_:
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        with app.app_context():
            targets = _targets(spec.target, rule, world)
        for method in methods:
            if endpoint in PUBLIC_ENDPOINTS and method != "GET":
                continue  # sign-in, sign-out, invitations: their own tests; not the matrix's
            for target in targets:
                url = adapter.build(endpoint, target.values, method=method)
                for query in spec.query:
                    full = url + ("?" + "&".join(f"{k}={v}" for k, v in query.items())
                                  if query else "")
                    # refusals first: one snapshot of the database serves them all
                    order = sorted(m.principals,
                                   key=lambda p: entitled(p.facts, spec, target, api))
                    for p in order:
                        problems += _check_one(m, p, endpoint, method, full, spec, target, api)
    return problems


def _schema_problems(m: Matrix, method: str, url: str, response: Any, where: str) -> list[str]:
    """An API answer (success or error) matches the schema documented for its status."""
    path = urlsplit(url).path.removeprefix("/api/v1")
    operation = m.spec.find_operation_by_path(method.lower(), path)
    if operation is None:
        return [f"{where}: no documented operation"]
    documented = operation.definition.raw.get("responses", {})
    if str(response.status_code) not in documented:
        return [f"{where}: status {response.status_code} is not documented"]
    try:
        operation.validate_response(response)
    except Exception as exc:  # noqa: BLE001 - report the schema mismatch
        return [f"{where}: response does not match its schema: {str(exc)[:300]}"]
    return []


#: Reads whose rule is exactly the matrix's oracle: everyone it allows gets a 200 (the
#: other direction of the access rule: no reader is wrongly refused).
MUST_SERVE = {"findings.show", "findings.history", "api.finding_get", "api.list_attachments",
              "attachments.download", "api.download_attachment", "review.request_show",
              "api.request_get", "review.flag_show", "api.flag_get", "public.show",
              "api.public_finding", "public.download", "review.flag_new", "review.publish_new"}


SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options",
                    "Referrer-Policy", "Permissions-Policy")


def _missing_security_headers(response: Any) -> list[str]:
    """Every response type (pages, JSON, files, redirects, errors) carries them all."""
    h = response.headers
    missing = [name for name in SECURITY_HEADERS if not h.get(name)]
    csp = h.get("Content-Security-Policy", "")
    if csp and "frame-ancestors 'none'" not in csp:
        missing.append("CSP frame-ancestors 'none'")
    if csp and "script-src" in csp and "'unsafe-inline'" in csp:
        missing.append("CSP without 'unsafe-inline'")
    if h.get("X-Content-Type-Options", "nosniff") != "nosniff":
        missing.append("X-Content-Type-Options: nosniff")
    return missing


def _check_one(m: Matrix, p: Principal, endpoint: str, method: str, url: str, spec: R,
               target: Target, api: bool) -> list[str]:
    ok = entitled(p.facts, spec, target, api)
    mutating = method != "GET"
    if mutating and ok:
        return []  # the world must stay as it is; refusals are what is checked here
    before = m.current() if not ok else ()
    response = _request(p, method, url, spec, api)
    m.checked.add((endpoint, p.key))
    m.counts["requests"] += 1
    m.counts["refusals checked" if not ok else "allowed reads checked"] += 1
    where = f"{method} {url} as {p.key}"
    problems = []
    if response.status_code >= 500:
        problems.append(f"{where}: {response.status_code}")
    if api and endpoint != "api.openapi_json":
        problems += _schema_problems(m, method, url, response, where)
    missing = _missing_security_headers(response)
    if missing:
        problems.append(f"{where}: no {', '.join(missing)} (status {response.status_code})")
    seen = _response_text(response)
    leaked = [w for w in _protected(p, endpoint, m.world) if w in seen]
    if leaked:
        kinds = sorted({m.world.canaries[w].kind + ":" + w for w in leaked})
        problems.append(f"{where}: leaked {', '.join(kinds)} (status {response.status_code})")
    if ok and endpoint in MUST_SERVE and response.status_code != 200:
        problems.append(f"{where}: the rule allows it, the route answered "
                        f"{response.status_code}")
    if not ok:
        why = _refusal_problem(response, api, p, spec, target)
        if why:
            problems.append(f"{where}: not refused properly: {why}")
        after = m.current()
        if after != before:
            changed = [b[0] for b, a in zip(before, after, strict=True) if a != b]
            problems.append(f"{where}: a refused request changed {', '.join(changed)}")
    return problems


# --------------------------------------------------------------------------- tests


def _app_rules(app: Flask) -> list[Rule]:
    return list(app.url_map.iter_rules())


def test_every_rule_has_a_matrix_entry(app: Flask) -> None:
    """A new route must be classified: public (allow-list) or in the matrix table."""
    endpoints = {r.endpoint for r in _app_rules(app)}
    missing = sorted(endpoints - set(ALL_ROUTES))
    assert not missing, f"new route without a matrix entry: {missing}"
    stale = sorted(set(ALL_ROUTES) - endpoints)
    assert not stale, f"matrix entries for routes that no longer exist: {stale}"
    for rule in _app_rules(app):
        methods = set(rule.methods or ()) - {"HEAD", "OPTIONS"}
        declared = set(ALL_ROUTES[rule.endpoint].methods)
        assert methods <= declared, (rule.rule, rule.endpoint, methods - declared)


def _openapi_path(rule: Rule) -> str:
    path = rule.rule.removeprefix("/api/v1")
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", path)


def test_every_api_rule_is_in_the_openapi_spec(app: Flask) -> None:
    """The spec documents exactly the API's operations (and those that need no token
    are exactly the public endpoints)."""
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    documented = {(path, method.upper()) for path, ops in spec["paths"].items()
                  for method in ops}
    served = set()
    for rule in _app_rules(app):
        if not rule.endpoint.startswith("api."):
            continue
        for method in set(rule.methods or ()) - {"HEAD", "OPTIONS"}:
            served.add((_openapi_path(rule), method))
    assert served - documented == set(), "API operations missing from the spec"
    assert documented - served == set(), "documented operations the API does not serve"
    public = {(p, m.upper()) for p, ops in spec["paths"].items() for m, op in ops.items()
              if op.get("security") == []}
    public_rules = {(_openapi_path(r), m) for r in _app_rules(app)
                    if r.endpoint in PUBLIC_ENDPOINTS and r.endpoint.startswith("api.")
                    for m in set(r.methods or ()) - {"HEAD", "OPTIONS"}}
    assert public == public_rules


# tests on the function-scoped `app` (it empties the database) run before the matrix's

def test_session_cookie_flags(app: Flask, migrated: str, instance_dir: Path) -> None:
    """The session cookie is HttpOnly and SameSite=Lax; Secure when configured (the
    default in production). It is re-issued at sign-in (a new session)."""
    org = make_org("cookies")
    user = make_user(org, mfa_on=False)
    for secure in (False, True):
        served = app if not secure else make_app(migrated, instance_dir, secure_cookies=True)
        client = served.test_client()
        page = client.get("/login")
        response = client.post("/login", data={"email": user.email, "password": PASSWORD,
                                               "csrf_token": csrf_from(page.text)})
        assert response.status_code == 302
        cookies = [c for c in response.headers.getlist("Set-Cookie")
                   if c.startswith("enclave_session=")]
        assert cookies, response.headers
        for cookie in cookies:
            flags_ = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
            assert "httponly" in flags_, cookie
            assert "samesite=lax" in cookie.lower(), cookie
            assert ("secure" in flags_) is secure, cookie
        if secure:
            served.extensions["enclave.engine"].dispose()


def test_hsts_over_tls(app: Flask) -> None:
    response = app.test_client().get("/login", base_url="https://enclave.example")
    assert "max-age=" in response.headers.get("Strict-Transport-Security", "")
    plain = app.test_client().get("/login")
    assert "Strict-Transport-Security" not in plain.headers


@pytest.mark.parametrize("endpoint", sorted(ALL_ROUTES))
def test_route_matrix(matrix: Matrix, endpoint: str) -> None:
    problems = run_route(matrix, endpoint)
    assert not problems, "\n".join(problems[:40]) + (
        f"\n... and {len(problems) - 40} more" if len(problems) > 40 else "")


def _get(m: Matrix, key: str, url: str, api: bool = False) -> str:
    p = next(p for p in m.principals if p.key == key)
    response = p.client.get(url, headers=p.headers if api else {})
    assert response.status_code == 200, (key, url, response.status_code)
    return _response_text(response)


def test_canaries_show_where_they_should(matrix: Matrix) -> None:
    """The positive control: every canary is seen by someone entitled to it, so that a
    page rendering nothing (or everything refused) cannot pass the matrix vacuously."""
    w = matrix.world
    seen = ""
    for key, fid in w.findings.items():
        seen += _get(matrix, "insider", f"/findings/{fid}")
        seen += _get(matrix, "admin", f"/api/v1/findings/{fid}", api=True)
        seen += _get(matrix, "author" if key in ("pub", "rel") else "insider",
                     f"/findings/{fid}/history")
    seen += _get(matrix, "admin", f"/findings/{w.findings['net']}")
    for att in w.attachments.values():
        seen += _get(matrix, "insider", f"/attachments/{att}")
    for rid in w.requests.values():
        seen += _get(matrix, "admin", f"/review/requests/{rid}")
    seen += _get(matrix, "reviewer", f"/review/requests/{w.requests['pub']}")
    for flag_id in w.flags.values():
        seen += _get(matrix, "admin", f"/review/flags/{flag_id}")
    for key in sorted(RELEASED):
        seen += _get(matrix, "anonymous", f"/public/{public_number(w, key)}")
    seen += _get(matrix, "admin", "/admin/users?per_page=100")
    missing = [f"{v.kind}:{c}" for c, v in w.canaries.items() if c not in seen]
    assert not missing, f"canaries never shown to anyone entitled: {missing}"


def test_notifications_of_lost_access_stay_hidden(matrix: Matrix) -> None:
    """mfa_off and nda_outdated were notified while they could read; now they cannot,
    and the list (and its count) shows nothing of those findings."""
    w = matrix.world
    for key in ("mfa_off", "nda_outdated"):
        body = _get(matrix, key, "/notifications/")
        api = _get(matrix, key, "/api/v1/notifications", api=True)
        p = next(p for p in matrix.principals if p.key == key)
        with matrix.app.app_context():
            user = db.get(User, w.users[key])
            raw = db.execute(text("SELECT count(*) FROM notifications WHERE user_id = :u"),
                             {"u": user.id}).scalar()
            db.remove()
        assert raw, f"{key} was never notified: the check would be vacuous"
        readable_titles = {c for c, v in w.canaries.items()
                           if v.kind == "finding" and c in p.facts.visible}
        for word, vis in w.canaries.items():
            if vis.kind == "finding" and word not in readable_titles:
                assert word not in body and word not in api, (key, word)



def test_search_counts_only_what_one_may_read(matrix: Matrix) -> None:
    """Searching for a finding's own words: its total is 1 for its readers, 0 for
    everyone else (a count is metadata too), on the page and in the API."""
    w = matrix.world
    bodies = {v.keys[0]: c for c, v in w.canaries.items()
              if v.kind == "finding" and c.startswith("cnrybody")}
    assert set(bodies) == set(w.findings)
    for p in matrix.principals:
        for key, word in bodies.items():
            expected = 1 if key in p.facts.readable else 0
            if p.facts.api_ok:
                body = p.client.get("/api/v1/findings", query_string={"q": word},
                                    headers=p.headers).get_json()
                assert body["total"] == expected, (p.key, key, body)
            if p.facts.web_ok:
                page = p.client.get("/findings/search", query_string={"q": word})
                text_ = page.get_data(as_text=True)
                assert page.status_code == 200
                assert f"{expected} finding{'s' if expected != 1 else ''} you can read" \
                    in text_, (p.key, key)


def test_out_of_range_ids_and_pages_are_refused_cleanly(matrix: Matrix) -> None:
    """Ids past a 64-bit integer are 404 (not a database overflow), for every method of
    every route that takes one; absurd page numbers are a 400, never a 500."""
    admin = next(p for p in matrix.principals if p.key == "admin")
    adapter = matrix.app.url_map.bind("localhost")
    huge = 2**70
    checked = 0
    for rule in matrix.app.url_map.iter_rules():
        ints = [name for name, conv in rule._converters.items()
                if type(conv).__name__ == "BoundedIntConverter"]
        if not ints:
            continue
        values = {name: huge if name in ints else "x" for name in rule.arguments}
        if "attachment_id" in values:
            values["attachment_id"] = "0" * 32
        api = rule.endpoint.startswith("api.")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            url = adapter.build(rule.endpoint, values, method=method)
            spec = ALL_ROUTES[rule.endpoint]
            response = _request(admin, method, url, spec, api)
            checked += 1
            assert response.status_code == 404, (method, url, response.status_code)
    assert checked > 30
    for path in ("/notifications/", "/api/v1/notifications", "/api/v1/findings",
                 "/api/v1/admin/audit", "/admin/audit", "/admin/users", "/review/",
                 "/public/", "/api/v1/public/findings", "/findings/search?q=zebrafish&"):
        for query in (f"page={10**30}", f"per_page={10**30}", "page=0", "page=x"):
            url = path + ("&" if "?" in path else "?") + query.lstrip("&")
            response = admin.client.get(url, headers=admin.headers)
            assert response.status_code in (200, 400), (url, response.status_code)


def test_audit_log_withholds_file_names_above_the_admins_access(matrix: Matrix) -> None:
    """Both administrators see every entry; only the one cleared for the finding sees the
    names of its files (the stored entry and the hash chain are untouched)."""
    w = matrix.world
    conf_file = next(c for c, v in w.canaries.items()
                     if v.kind == "finding" and v.keys == ("conf",) and c.startswith("cnryfile")
                     and not c.startswith("cnryfilebody"))
    pages = {key: "".join(_get(matrix, key, f"/admin/audit?per_page=100&page={n}")
                          for n in range(1, 6)) for key in ("admin", "admin_network")}
    api = {key: "".join(_get(matrix, key, f"/api/v1/admin/audit?per_page=100&page={n}",
                             api=True) for n in range(1, 6))
           for key in ("admin", "admin_network")}
    assert conf_file in pages["admin"] and conf_file in api["admin"]
    assert conf_file not in pages["admin_network"] and conf_file not in api["admin_network"]
    assert "withheld" in pages["admin_network"] and "withheld" in api["admin_network"]
    assert pages["admin"].count("attachment_uploaded") == \
        pages["admin_network"].count("attachment_uploaded")
