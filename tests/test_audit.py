from __future__ import annotations

from sqlalchemy import select, text

from app import audit
from app.cli import enclave
from app.db import db
from tests.factories import make_org


def _entries(n: int) -> None:
    for i in range(n):
        audit.record("test_event", actor="tester", target_type="thing", target_id=i, n=i)
    db.commit()


def test_chain_links_every_entry(app):
    _entries(5)
    result = audit.verify_chain()
    assert result.ok and result.checked == 5
    rows = db.scalars(select(audit.AuditEntry).order_by(audit.AuditEntry.seq)).all()
    assert rows[0].prev_hash == audit.GENESIS
    for prev, cur in zip(rows, rows[1:], strict=False):
        assert cur.prev_hash == prev.hash
        assert cur.seq == prev.seq + 1


def test_editing_a_row_in_the_database_is_detected(app):
    _entries(6)
    with db.get_bind().begin() as conn:
        conn.execute(text("UPDATE audit_log SET details = :d WHERE seq = 4"), {"d": '{"n": 99}'})
    result = audit.verify_chain()
    assert not result.ok
    assert result.broken_seq == 4
    assert "altered" in result.reason


def test_deleting_a_middle_row_is_detected(app):
    _entries(6)
    with db.get_bind().begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 3"))
    result = audit.verify_chain()
    assert not result.ok and result.broken_seq == 3


def test_relinking_a_forged_row_still_breaks_the_next_link(app):
    _entries(4)
    with db.get_bind().begin() as conn:
        conn.execute(text("UPDATE audit_log SET hash = :h WHERE seq = 2"), {"h": "f" * 64})
    result = audit.verify_chain()
    assert not result.ok and result.broken_seq == 2


def test_cli_verify_exit_codes(app):
    runner = app.test_cli_runner()
    make_org()  # writes nothing to the audit log by itself (factory), so add entries:
    _entries(3)
    ok = runner.invoke(enclave, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "3 entries" in ok.output
    with db.get_bind().begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2"))
    bad = runner.invoke(enclave, ["audit", "verify"])
    assert bad.exit_code == 1
    assert "entry #2" in bad.output


def test_org_admin_actions_are_logged(app):
    from app.orgs import service

    org = service.add_org(None, slug="acme", name="Acme Labs", domains=["acme.example"],
                          ceiling="restricted")
    service.set_status(None, org, "trusted")
    service.set_ceiling(None, org, "network")
    actions = [e.action for e in db.scalars(
        select(audit.AuditEntry).order_by(audit.AuditEntry.seq))]
    assert actions == ["org_added", "org_status_changed", "org_ceiling_changed"]
    assert audit.verify_chain().ok


def test_long_target_ids_fit_and_stay_whole_in_the_details(app):
    """PostgreSQL enforces column lengths: a long path as target must not break a write."""
    path = "/tmp/" + "x" * 200
    entry = audit.record("export", actor="cli", target_type="export", target_id=path)
    db.commit()
    assert len(entry.target_id) == 64 and entry.details_dict["target"] == path
    assert audit.verify_chain().ok
