"""A deeply nested JSON body is bad input: 400 with a JSON error, never a RecursionError
turned into a 500 (issue 12, item 10)."""

from __future__ import annotations

import pytest

from tests.factories import make_org, make_user


def _deep(depth: int, kind: str = "list") -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [40, 2_000, 200_000])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_deep_json_is_a_400_json_error(app, client, api_token, depth, kind):
    user = make_user(make_org("deeplab"), name="dee")
    headers = {**api_token(user), "Content-Type": "application/json"}
    body = _deep(depth, kind) if kind == "list" else '{"title":' + _deep(depth, kind) + "}"
    for method, path in (("post", "/api/v1/findings"),
                         ("post", "/api/v1/review/requests/1/withdraw"),
                         ("patch", "/api/v1/findings/1")):
        r = getattr(client, method)(path, data=body, headers=headers)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert r.is_json and r.json["error"]["code"] in ("bad_json", "not_found"), r.json
    r = client.post("/api/v1/findings", data=body, headers=headers)
    assert r.status_code == 400 and r.json["error"]["code"] == "bad_json"
    assert "nested" in r.json["error"]["message"]


def test_ordinary_nesting_still_works(app, client, api_token):
    user = make_user(make_org("deeplab"), name="dee")
    r = client.post("/api/v1/findings", headers=api_token(user),
                    json={"title": "t", "body": "b", "level": "network", "category": "x",
                          "orgs": []})
    assert r.status_code != 500 and r.json["error"]["code"] != "bad_json"
