"""The access rule: each clause on its own, and the property that the SQL form
returns exactly the findings the Python form allows, over random worlds."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app import access, state
from app.access import Denial
from app.db import db
from app.findings.models import Finding
from app.ndas.models import NdaAcknowledgement
from tests.conftest import empty_database
from tests.factories import make_finding, make_org, make_user

LEVELS = ["public", "network", "restricted", "confidential"]


def visible_ids(user) -> set[int]:
    return set(db.scalars(access.visible_findings(user).with_only_columns(Finding.id)))


def test_effective_clearance_is_min_of_user_and_org(app):
    org = make_org(ceiling="restricted")
    boss = make_user(org, clearance="confidential")
    junior = make_user(org, clearance="network")
    assert access.effective_clearance(boss) == "restricted"
    assert access.effective_clearance(junior) == "network"


def test_levels_need_ndas_and_mfa(app):
    org = make_org()
    full = make_user(org)
    no_mfa = make_user(org, mfa_on=False)
    only_network_nda = make_user(org, ndas=["network-terms"])
    nothing = make_user(org, ndas=[])
    assert access.readable_levels(full) == set(LEVELS)
    assert access.readable_levels(no_mfa) == {"public", "network"}
    assert access.readable_levels(only_network_nda) == {"public", "network"}
    assert access.readable_levels(nothing) == {"public"}


def test_untrusted_org_or_inactive_user_reads_nothing(app):
    for status in ("pending", "suspended"):
        org = make_org(status=status)
        user = make_user(org)
        assert access.readable_levels(user) == set()
    disabled = make_user(make_org(), active=False)
    assert access.readable_levels(disabled) == set()
    assert access.readable_levels(None) == set()


def test_outdated_nda_version_closes_the_level(app):
    org = make_org()
    user = make_user(org, ndas=["network-terms", "restricted"])
    nda = state.policy().ndas["restricted"]
    ack = db.scalar(select(NdaAcknowledgement).where(
        NdaAcknowledgement.user_id == user.id, NdaAcknowledgement.nda_key == "restricted"))
    ack.version = nda.version - 1 if nda.version > 1 else 0
    db.commit()
    access.forget(user)
    assert "restricted" not in access.readable_levels(user)
    assert access.missing_ndas(user, "restricted") == ["restricted"]


def test_compartment_limits_to_named_orgs_and_author_org(app):
    a, b, c = make_org(), make_org(), make_org()
    author = make_user(a)
    reader_b = make_user(b)
    reader_c = make_user(c)
    colleague = make_user(a)
    finding = make_finding(author, level="confidential", compartment=[b])
    assert access.can_read(reader_b, finding)
    assert access.can_read(colleague, finding)
    assert not access.can_read(reader_c, finding)
    assert access.denial(reader_c, finding) is Denial.NOT_FOUND
    assert visible_ids(reader_c) == set()
    assert visible_ids(reader_b) == {finding.id}


def test_a_passkey_level_needs_a_passkey_proof_not_just_a_passkey(app):
    """The account's passkey is not enough: the reader's own proof must be one (a phished
    password and authenticator code do not open a passkey level)."""
    org = make_org()
    reader = make_user(org, passkey=True)
    confidential = make_finding(reader, level="confidential")
    restricted = make_finding(reader, level="restricted")
    assert access.can_read(reader, confidential)  # as another user sees them: the account
    access.assume_proof(reader, "totp")
    assert access.can_read(reader, restricted) and not access.can_read(reader, confidential)
    assert access.denial(reader, confidential) is Denial.PASSKEY
    assert confidential.id not in visible_ids(reader)
    access.assume_proof(reader, "passkey")
    assert access.can_read(reader, confidential)
    assert confidential.id in visible_ids(reader)
    no_passkey = make_user(org, passkey=False)
    assert access.denial(no_passkey, confidential) is Denial.PASSKEY
    no_factor = make_user(org, mfa_on=False, passkey=False)
    assert access.denial(no_factor, confidential) is Denial.MFA


def test_a_level_closed_to_tokens_is_closed_in_both_forms(app):
    default = app.extensions["enclave.policy"]
    app.extensions["enclave.policy"] = dataclasses.replace(default, levels=tuple(
        dataclasses.replace(lv, api_tokens=lv.key != "restricted") for lv in default.levels))
    try:
        reader = make_user(make_org(), clearance="restricted")
        network = make_finding(reader, level="network")
        restricted = make_finding(reader, level="restricted")
        access.assume_proof(reader, "passkey")
        assert access.can_read(reader, restricted)
        assert set(db.scalars(access.visible_findings(reader)).all()) >= {network, restricted}
        access.assume_proof(reader, "passkey", token=True)
        assert not access.can_read(reader, restricted) and access.can_read(reader, network)
        assert restricted not in db.scalars(access.visible_findings(reader)).all()
        assert access.readable_levels(reader) == {"public", "network"}
    finally:
        app.extensions["enclave.policy"] = default


def test_denial_reports_nda_and_mfa_only_to_otherwise_cleared_readers(app):
    org = make_org()
    author = make_user(org)
    secret = make_finding(author, level="restricted")
    unsigned = make_user(org, ndas=["network-terms"])
    no_mfa = make_user(org, mfa_on=False)
    too_low = make_user(org, clearance="network", ndas=[])
    outsider = make_user(make_org(ceiling="network"), ndas=[])
    assert access.denial(unsigned, secret) is Denial.NDA
    assert access.denial(no_mfa, secret) is Denial.MFA
    assert access.denial(too_low, secret) is Denial.NOT_FOUND
    assert access.denial(outsider, secret) is Denial.NOT_FOUND
    assert access.denial(author, secret) is Denial.NONE


# ---------------------------------------------------------------- property test

# weighted towards worlds where most things are readable, so that each lapse decides
DAYS_AGO = st.sampled_from([0, 0, 200, 400, 800])
user_spec = st.fixed_dictionaries({
    "org": st.integers(0, 3),
    # the clearance grant ends this many days from now (None: no end; <= 0: lapsed)
    "expires_in": st.sampled_from([None, None, None, -1, 0, 5]),
    # each NDA signed this many days ago (renew_days is 365 above public)
    "signed_days_ago": DAYS_AGO,
    "clearance": st.sampled_from(LEVELS),
    "ndas": st.lists(st.sampled_from(["network-terms", "restricted", "confidential"]),
                     unique=True),
    "stale": st.lists(st.sampled_from(["network-terms", "restricted", "confidential"]),
                      unique=True),
    "mfa": st.booleans(),
    "passkey": st.booleans(),
    # how this reader proved who they are (None: not the one asking; the account counts)
    "proof": st.sampled_from([None, "password", "totp", "recovery_code", "passkey",
                              "operator"]),
    "active": st.sampled_from([True, True, True, False]),
    # asking through an API token (the policy below closes Restricted to tokens)
    "token": st.booleans(),
})
finding_spec = st.fixed_dictionaries({
    "author": st.integers(0, 7),
    "level": st.sampled_from(LEVELS),
    "compartment": st.lists(st.integers(0, 3), unique=True, max_size=3),
})
world_spec = st.fixed_dictionaries({
    # status, ceiling, vetted this many days ago (None: never; revet_days 730/365/365)
    "orgs": st.lists(st.tuples(st.sampled_from(["trusted", "trusted", "trusted", "pending",
                                                "suspended"]),
                               st.sampled_from(LEVELS),
                               st.sampled_from([None, 0, 0, 200, 400, 800])),
                     min_size=4, max_size=4),
    "users": st.lists(user_spec, min_size=1, max_size=8),
    "findings": st.lists(finding_spec, min_size=0, max_size=12),
})


def _build_world(spec, now):
    orgs = []
    for status, ceiling, vetted in spec["orgs"]:
        org = make_org(status=status, ceiling=ceiling)
        org.vetted_at = None if vetted is None else now - timedelta(days=vetted)
        orgs.append(org)
    users = []
    for u in spec["users"]:
        user = make_user(orgs[u["org"]], clearance=u["clearance"], ndas=u["ndas"],
                         mfa_on=u["mfa"], active=u["active"], passkey=u["passkey"])
        access.assume_proof(user, u["proof"], token=u["token"])
        if u["expires_in"] is not None:
            user.clearance_expires_at = now + timedelta(days=u["expires_in"])
        for ack in db.scalars(select(NdaAcknowledgement)
                              .where(NdaAcknowledgement.user_id == user.id)):
            ack.created_at = now - timedelta(days=u["signed_days_ago"])
        for key in u["stale"]:
            if key not in u["ndas"]:  # signed an older version only
                db.add(NdaAcknowledgement(user_id=user.id, nda_key=key, version=0,
                                          text_sha256="0" * 64, signed_name="old"))
        users.append(user)
    db.commit()
    findings = []
    for f in spec["findings"]:
        author = users[f["author"] % len(users)]
        compartment = [orgs[i] for i in f["compartment"]]
        findings.append(make_finding(author, level=f["level"], compartment=compartment))
    return users, findings


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=world_spec)
def test_sql_form_agrees_with_python_form(app, clock, spec):
    now = clock.now()
    default = app.extensions["enclave.policy"]
    # the default policy with Restricted closed to API tokens (``api_tokens = false``)
    app.extensions["enclave.policy"] = dataclasses.replace(default, levels=tuple(
        dataclasses.replace(lv, api_tokens=lv.key != "restricted") for lv in default.levels))
    try:
        users, findings = _build_world(spec, now)
        policy = state.policy()
        for user, u_spec in zip(users, spec["users"], strict=True):
            access.forget(user)
            allowed = {f.id for f in findings if access.can_read(user, f)}
            assert visible_ids(user) == allowed
            # and the Python form is the rule as written, with its dates
            s = access.subject_for(user)
            granted = user.clearance if (user.clearance_expires_at is None
                                         or now < user.clearance_expires_at) else "public"
            ceiling = "public"
            for level in policy.levels_up_to(user.org.ceiling):
                vetted = user.org.vetted_at
                if level.revet_days and (
                        vetted is None or now >= vetted + timedelta(days=level.revet_days)):
                    break
                ceiling = level.key
            eff = min(granted, ceiling, key=policy.rank)
            signed_at = now - timedelta(days=u_spec["signed_days_ago"])
            for f in findings:
                level = policy.level(f.level)
                proof = user.auth_proof
                totp, has_passkey = user.totp_enabled_at is not None, bool(user.passkeys)
                if proof in (None, "operator"):
                    second, phishing_resistant = totp or has_passkey, has_passkey
                elif proof == "passkey":
                    second = phishing_resistant = True
                else:
                    second = totp and proof in ("totp", "recovery_code")
                    phishing_resistant = False
                assert (s.mfa, s.passkey) == (second, phishing_resistant)

                def signed_in_time(level=level, signed_at=signed_at):
                    return not level.renew_days or now < signed_at + timedelta(
                        days=level.renew_days)

                expected = (
                    s.active and s.org_trusted
                    and policy.rank(f.level) <= policy.rank(eff)
                    and all((k, policy.ndas[k].version) in s.acknowledged
                            and signed_in_time() for k in level.ndas)
                    and (second or not level.mfa)
                    and (phishing_resistant or level.mfa != "passkey")
                    and (level.api_tokens or not u_spec["token"])
                    and (not f.compartmented or user.org_id in f.compartment_org_ids)
                )
                assert access.can_read(user, f) == expected
    finally:
        app.extensions["enclave.policy"] = default
        empty_database()


def test_old_versions_are_judged_at_their_own_level_and_compartment(app):
    a, b = make_org("alpha"), make_org("beta")
    author = make_user(a)
    network_reader = make_user(b, clearance="network", mfa_on=False)
    beta_cleared = make_user(b)
    finding = make_finding(author, level="network")
    assert access.can_read_version(network_reader, finding, "network", "")
    assert not access.can_read_version(network_reader, finding, "confidential", "alpha beta")
    assert access.can_read_version(beta_cleared, finding, "confidential", "alpha beta")
    assert not access.can_read_version(beta_cleared, finding, "confidential", "alpha")
    assert access.can_read_version(author, finding, "confidential", "alpha")
