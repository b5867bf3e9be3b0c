"""A wrapped data key binds the attachment's finding (and level): a row moved to another
finding in the database fails to open instead of being served there. Older rows, wrapped
before the finding was bound, keep working until `enclave keys rotate` rewraps them in
the bound format (issue 12, weaknesses)."""

from __future__ import annotations

from sqlalchemy import update

from app import state
from app.attachments import service
from app.attachments.models import Attachment
from app.crypto.wrap import key_wrap_aad, unwrap_data_key, wrap_key, wraps_finding
from app.db import db
from tests import attachments_world
from tests.attachments_world import attach, audit_actions, build_world, reload
from tests.factories import make_finding

att_app = attachments_world.att_app  # fixtures
att_client = attachments_world.att_client


def _move(att: Attachment, finding_id: int) -> None:
    """What a database-write attacker does: re-point the row, nothing else."""
    db.execute(update(Attachment).where(Attachment.id == att.id)
               .values(finding_id=finding_id))
    db.commit()


def _make_legacy(att: Attachment) -> None:
    """Rewrap the row's key as releases before the binding did (format version 1)."""
    row = reload(att)
    _, kek = state.keyring().kek(row.kek_level, row.kek_version)
    key = unwrap_data_key(kek, row.wrapped_key, attachment_id=row.id,
                          finding_id=row.finding_id, level=row.kek_level,
                          kek_version=row.kek_version)
    row.wrapped_key = wrap_key(kek, key, key_wrap_aad(row.id, row.kek_level,
                                                      row.kek_version))
    db.commit()


def test_a_row_moved_to_another_finding_does_not_open(att_app, att_client, api_token):
    w = build_world()
    other = make_finding(w.author, level="network", title="Another open finding")
    att = attach(w.author, w.finding, b"belongs to the first finding")
    assert wraps_finding(reload(att).wrapped_key)
    headers = api_token(w.reader)
    assert att_client.get(f"/api/v1/attachments/{att.id}", headers=headers).data == \
        b"belongs to the first finding"

    for target in (other, w.secret):  # same level; another level
        _move(att, target.id)
        response = att_client.get(f"/api/v1/attachments/{att.id}", headers=headers)
        assert response.status_code == 500, target.level
        assert response.json["error"]["code"] == "integrity_error"
        assert b"belongs to the first finding" not in response.data
        failure = audit_actions("attachment_integrity_failure")[-1]
        assert failure.target_id == att.id
    _move(att, w.finding.id)  # put back where it was wrapped: opens again
    assert att_client.get(f"/api/v1/attachments/{att.id}", headers=headers).data == \
        b"belongs to the first finding"


def test_legacy_keys_keep_working_and_rotation_binds_them(att_app, att_client, api_token):
    w = build_world()
    other = make_finding(w.author, level="network", title="Another open finding")
    att = attach(w.author, w.finding, b"uploaded before the binding")
    _make_legacy(att)
    assert not wraps_finding(reload(att).wrapped_key)
    headers = api_token(w.reader)
    assert att_client.get(f"/api/v1/attachments/{att.id}", headers=headers).data == \
        b"uploaded before the binding"

    report = service.rotate_keys(add_versions=False)
    assert report.rewrapped == 1 and report.remaining == 0 and not report.failed
    row = reload(att)
    assert wraps_finding(row.wrapped_key) and row.kek_version == 1
    assert att_client.get(f"/api/v1/attachments/{att.id}", headers=headers).data == \
        b"uploaded before the binding"
    assert service.rotate_keys(add_versions=False).rewrapped == 0  # nothing left to do
    _move(att, other.id)
    assert att_client.get(f"/api/v1/attachments/{att.id}",
                          headers=headers).status_code == 500


def test_the_startup_key_check_opens_bound_and_legacy_keys(att_app):
    w = build_world()
    bound = attach(w.author, w.finding, b"bound")
    legacy = attach(w.author, w.secret, b"legacy")
    _make_legacy(legacy)
    service.check_keys(att_app.extensions["enclave.engine"], state.keyring())
    assert wraps_finding(reload(bound).wrapped_key)
