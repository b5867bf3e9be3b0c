"""@mention suggestions in the editor: only people who can read the finding, through the
visibility gate, by username or display name prefix."""

from __future__ import annotations

import re

from app.db import db
from tests.factories import login, make_finding, make_org, make_user


def _names(response) -> list[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200 and response.is_json
    return [p["username"] for p in response.get_json()["people"]]


def test_only_readers_of_the_finding_are_suggested(app, client):
    north = make_org("north")
    east = make_org("east")
    author = make_user(north, name="alice")
    nina = make_user(north, name="nina", clearance="restricted")
    make_user(north, name="nick", clearance="network")  # cannot read restricted
    nils = make_user(north, name="nils", clearance="restricted")
    nils.is_active = False
    make_user(east, name="noor", clearance="confidential")  # outside the compartment
    nadia = make_user(north, name="nadia", clearance="confidential")
    nadia.display_name = "Nadia Lind"
    ned = make_user(east, name="ned", clearance="restricted")
    db.commit()
    restricted = make_finding(author, level="restricted")
    secret = make_finding(author, level="confidential", compartment=[north])
    login(client, author)
    assert _names(client.get(f"/findings/{restricted.id}/mentions?q=n")) == \
        ["nadia", "ned", "nina", "noor"]
    assert _names(client.get(f"/findings/{secret.id}/mentions?q=n")) == ["nadia"]
    # display names count too; case does not matter; nothing for odd input
    assert _names(client.get(f"/findings/{secret.id}/mentions?q=LIND")) == []
    assert _names(client.get(f"/findings/{secret.id}/mentions?q=Nadia")) == ["nadia"]
    for q in ("", "%", "_", "n%", "@n", "x" * 41):
        assert _names(client.get(f"/findings/{secret.id}/mentions", query_string={"q": q})) \
            == []
    assert "alice" not in _names(client.get(f"/findings/{secret.id}/mentions?q=a"))
    assert nina.id and ned.id


def test_someone_who_cannot_read_gets_what_a_missing_id_gets(app, client):
    north = make_org("north")
    author = make_user(north, name="alice")
    secret = make_finding(author, level="confidential", compartment=[north])
    outsider = make_user(make_org("east"), name="otto", clearance="confidential")
    login(client, outsider)
    theirs = client.get(f"/findings/{secret.id}/mentions?q=a")
    missing = client.get("/findings/999999/mentions?q=a")
    assert theirs.status_code == missing.status_code == 404
    # the same page, but for the sign-out form's CSRF token (signed with the time)
    assert re.sub(r'value="[^"]*"', "", theirs.text) == \
        re.sub(r'value="[^"]*"', "", missing.text)
    assert b"alice" not in theirs.get_data()
