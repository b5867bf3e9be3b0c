"""Open redirects: a sign-in's or an NDA page's ``next`` is followed only when it is a
path on this site. The corpus is the usual bypass list: tabs and newlines a browser
drops, backslashes it reads as slashes, encoded slashes, dot segments, userinfo, other
schemes and unicode look-alikes."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import pytest

from app import state
from app.web import safe_next
from tests.conftest import csrf_from
from tests.factories import PASSWORD, login, make_org, make_user
from tests.test_auth import isolated_requests, logout

__all__ = ["isolated_requests"]

SITE = "https://enclave.test/login"

BYPASSES = [
    "/\t/evil.example/", "/%09/evil.example/", "/\n/evil.example", "/%0a/evil.example",
    "/\r\n/evil.example", "/%0d%0a/evil.example", "\t//evil.example", " //evil.example",
    "//evil.example", "///evil.example", "////evil.example/", "/\\evil.example",
    "\\\\evil.example", "/%5Cevil.example", "/%5c%5cevil.example", "\\/evil.example",
    "/%2F%2Fevil.example", "/%2f/evil.example", "%2F%2Fevil.example", "/.//evil.example",
    "/./%2F/evil.example", "/%2e/%2fevil.example", "/%2e%2e//evil.example",
    "https://evil.example/", "HTTPS://evil.example", "https:evil.example",
    "https:/evil.example", "javascript:alert(1)", "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>", "//user@evil.example",
    "https://enclave.test@evil.example/", "//enclave.test%40evil.example",
    "/\u3002evil.example", "//evil\u3002example", "/\uff0fevil.example",
    "//evil%E3%80%82example", "/\u2215evil.example", "evil.example", "@evil.example",
    "/\x00/evil.example", "\x0b//evil.example", "/ /evil.example", "//%09/evil.example",
    "/" + "a" * 3000,
]


def lands_on_site(url: str) -> bool:
    """Resolved as a browser resolves a Location header, does it stay on this site?"""
    resolved = urlsplit(urljoin(SITE, url))
    return resolved.scheme == "https" and resolved.netloc == "enclave.test"


@pytest.mark.parametrize("target", BYPASSES)
def test_bypass_corpus_is_refused_or_made_a_local_path(target):
    result = safe_next(target, "/home")
    assert lands_on_site(result), (target, result)
    assert result.startswith("/") and not result.startswith("//"), (target, result)
    assert all(c not in result for c in "\t\r\n\\ "), (target, result)
    assert result == "/home" or result == safe_next(result, "/home"), (target, result)


def test_paths_on_the_site_are_kept_and_normalised():
    assert safe_next("/ndas/", "/home") == "/ndas/"
    assert safe_next("/findings/3?tab=replies&x=%2F%2Fa", "/home") == \
        "/findings/3?tab=replies&x=%2F%2Fa"
    assert safe_next("/.//findings/3", "/home") == "/findings/3"
    assert safe_next("/a/../findings", "/home") == "/findings"
    assert safe_next("/", "/home") == "/"
    assert safe_next("", "/home") == "/home"
    assert safe_next(None, "/home") == "/home"


def _login_with_next(client, user, target):
    page = client.get("/login", query_string={"next": target})
    if "\x00" in target:  # refused before any page (400): nothing to follow
        assert page.status_code == 400
        return None
    assert page.status_code == 200, (target, page.status_code)
    return client.post("/login", query_string={"next": target}, data={
        "email": user.email, "password": PASSWORD, "csrf_token": csrf_from(page.text)})


def test_login_next_never_leaves_the_site(client):
    user = make_user(make_org(), mfa_on=False)
    for target in BYPASSES:
        response = _login_with_next(client, user, target)
        if response is None:
            continue
        assert response.status_code == 302
        assert lands_on_site(response.location), (target, response.location)
        assert response.location.startswith("/") and "//" not in response.location, target
        logout(client)


def test_login_next_of_the_reported_bypass_goes_home(client):
    user = make_user(make_org(), mfa_on=False)
    response = client.get("/login?next=/%09/evil.example/")
    page = response
    response = client.post("/login?next=/%09/evil.example/", data={
        "email": user.email, "password": PASSWORD, "csrf_token": csrf_from(page.text)})
    assert response.location == "/home"


def test_nda_page_next_never_leaves_the_site(client):
    user = make_user(make_org(), clearance="network", ndas=[])
    login(client, user)
    for target in BYPASSES:
        page = client.get("/ndas/network-terms", query_string={"next": target})
        assert page.status_code == (400 if "\x00" in target else 200)
        assert "evil.example" not in page.text, target
    index = client.get("/ndas/", query_string={"next": "/%09/evil.example/"})
    assert "evil.example" not in index.text
    page = client.get("/ndas/network-terms", query_string={"next": "/\t/evil.example/"})
    response = client.post("/ndas/network-terms", query_string={"next": "/\t/evil.example/"},
                           data={"signed_name": user.display_name,
                                 "version": str(state.policy().ndas["network-terms"].version),
                                 "csrf_token": csrf_from(page.text)})
    assert response.status_code == 302
    assert response.location == "/ndas/", response.location
