

def test_finding_json_lists_its_attachments(app, client):
    """GET /api/v1/findings/{id} carries the attachment list (INTERFACES.md)."""
    from app.auth.tokens import create_token
    from tests.factories import make_finding, make_org, make_user

    user = make_user(make_org())
    finding = make_finding(user, level="restricted")
    _, token = create_token(user, "t", scopes=["read", "write"])
    headers = {"Authorization": f"Bearer {token}"}
    up = client.post(f"/api/v1/findings/{finding.id}/attachments?filename=notes.txt",
                     data=b"hello attachments", headers=headers)
    assert up.status_code == 201, up.json
    body = client.get(f"/api/v1/findings/{finding.id}", headers=headers).json
    assert [a["filename"] for a in body["attachments"]] == ["notes.txt"]
    assert body["attachments"][0]["size"] == len(b"hello attachments")
    assert body["attachments"][0]["id"] == up.json["id"]
