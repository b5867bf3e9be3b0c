"""Full-text search: the access filter in the query, ranking, phrases/OR/exclusion,
safe snippets, malformed queries as clear errors, and the index kept in sync."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app.db import db
from app.findings import search, service
from app.findings.search import SearchError, compile_query, parse
from tests.factories import login, make_org, make_user
from tests.findings_world import (
    build_world,
    isolated_clients,
    page_text,
    post,
    refresh,
    reply,
)

__all__ = ["isolated_clients"]  # autouse fixture


def ids(page: search.SearchPage) -> list[int]:
    return [r.finding.id for r in page.results]


# ---------------------------------------------------------------- the access filter


def test_results_counts_and_snippets_come_only_from_readable_findings(app):
    w = build_world()
    for name, user in w.users.items():
        expected = w.expected(user)
        for q in ("zebrafish", "quokka", "zebrafish OR quokka"):
            page = search.search(user, q, {"per_page": "100"})
            assert set(ids(page)) == expected, (name, q)
            assert page.total == len(expected)
        allowed_words = {k for k, f in w.findings.items() if f.id in expected}
        for key in w.findings:
            word = {"net": "alpha", "res": "bravo", "res_north": "charlie",
                    "conf_north": "delta", "conf_east": "echo", "res_mer": "foxtrot"}[key]
            page = search.search(user, word)
            assert (page.total == 1) == (key in allowed_words), (name, key)
            for r in page.results:
                assert word in r.snippet_html


def test_a_reply_hit_shows_the_reply_and_hidden_replies_are_not_searchable(app):
    author = make_user(make_org("north"), name="carol")
    admin = make_user(make_org("west"), role="admin", name="root")
    finding = post(author, title="Probing results", body="Linear probes work.")
    visible = reply(author, finding, "The **wombat** direction is causal.")
    page = search.search(author, "wombat")
    assert page.total == 1
    hit = page.results[0]
    assert hit.source == "reply" and hit.reply_id == visible.id
    assert str(hit.snippet_html) == "The <mark>wombat</mark> direction is causal."
    service.set_reply_hidden(admin, visible, True, "leaks a method")
    for user in (author, admin):
        assert search.search(user, "wombat").total == 0
    service.set_reply_hidden(admin, refresh(visible), False)
    assert search.search(author, "wombat").total == 1


def test_ranking_phrases_or_and_exclusion(app):
    author = make_user(make_org("north"), name="carol")
    in_title = post(author, title="Steering vectors", body="Nothing else here.")
    in_body = post(author, title="Notes", body="Some steering happens late.")
    both = post(author, title="Sparse autoencoders", body="Features for steering and probing")
    assert ids(search.search(author, "steering"))[0] == in_title.id
    assert set(ids(search.search(author, "steer"))) == {in_title.id, in_body.id, both.id}
    assert ids(search.search(author, '"steering happens"')) == [in_body.id]
    assert ids(search.search(author, '"happens steering"')) == []
    assert set(ids(search.search(author, "vectors OR probing"))) == {in_title.id, both.id}
    assert set(ids(search.search(author, "steering -probing"))) == {in_title.id, in_body.id}
    assert set(ids(search.search(author, "steering NOT vectors"))) == {in_body.id, both.id}
    assert ids(search.search(author, "steering AND sparse")) == [both.id]
    assert ids(search.search(author, "autoencoder")) == [both.id]  # stems
    assert ids(search.search(author, "autoenc")) == []  # no prefixes: exact terms


def test_level_and_category_filters(app):
    author = make_user(make_org("north"), name="carol")
    a = post(author, title="One", body="lantern", level="network")
    b = post(author, title="Two", body="lantern", level="restricted", category="steering")
    assert ids(search.search(author, "lantern", level="network")) == [a.id]
    cat = service.get_category("steering")
    assert ids(search.search(author, "lantern", category=cat)) == [b.id]


def test_a_broad_search_ranks_its_newest_readable_hits_and_says_so(app, client, api_token,
                                                                     monkeypatch):
    monkeypatch.setattr(search, "RANK_CANDIDATES", 3)
    author = make_user(make_org("north"), name="carol")
    outsider = make_user(make_org("south"), name="sam", clearance="network")
    old = [post(author, title="Notes", body=f"an old lantern note {i}") for i in range(3)]
    in_body = post(author, title="Notes", body="the lantern, later")
    in_title = post(author, title="Lantern maps", body="nothing else")
    # the newest hits are above the outsider: the filter runs before the candidates
    # are picked, so the outsider's candidates are their own newest readable hits
    secret = [post(author, title="Lantern secret", body="lantern", level="restricted")
              for _ in range(3)]
    newest = post(author, title="Notes", body="the newest lantern")
    reply(author, old[0], "a lantern in a reply")

    page = search.search(author, "lantern", {"per_page": "100"})
    assert page.capped
    # the newest 3 + 1 finding hits and the one reply hit (on old[0]) are ranked
    assert set(ids(page)) == {newest.id, *(f.id for f in secret), old[0].id}
    assert page.total == 5
    assert ids(page)[:3] == [f.id for f in reversed(secret)]  # title hits first, newest
    page = search.search(outsider, "lantern", {"per_page": "100"})
    assert page.capped and page.total == 5
    assert set(ids(page)) == {newest.id, in_title.id, in_body.id, old[2].id, old[0].id}
    assert ids(page)[0] == in_title.id
    assert all("secret" not in str(r.title_html).lower() for r in page.results)

    specific = search.search(outsider, "later")
    assert not specific.capped and ids(specific) == [in_body.id]

    login(client, outsider)
    html = client.get("/findings/search?q=lantern").text
    assert "More than 5 findings you can read match. The newest 5 are ranked here" in html
    body = client.get("/api/v1/findings?q=lantern", headers=api_token(outsider)).json
    assert body["total"] == 5 and body["total_capped"] is True
    body = client.get("/api/v1/findings?q=later", headers=api_token(outsider)).json
    assert body["total"] == 1 and body["total_capped"] is False


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize(("raw", "needle"), [
    ('"unclosed phrase', "quotation mark is not closed"),
    ("steering OR", "ends with OR"),
    ("OR steering", "OR needs a word on each side"),
    ("steering OR OR probing", "OR needs a word"),
    ("AND", "AND needs a word"),
    ("NOT", "ends with NOT"),
    ("-steering", "cannot only leave words out"),
    ("", "at least one word"),
    ("*** ((( ^^^", "at least one word"),
    ("x" * 201, "limit is 200"),
    (" ".join(f"w{i}" for i in range(13)), "at most 12 words"),
    ("a" * 65, "longer than 64"),
])
def test_malformed_queries_get_a_clear_error(app, client, api_token, raw, needle):
    with pytest.raises(SearchError) as exc:
        parse(raw)
    assert needle in exc.value.message
    user = make_user(make_org(), name="mia")
    if raw:
        response = client.get("/api/v1/findings", query_string={"q": raw},
                              headers=api_token(user))
        assert response.status_code == 400
        assert response.json["error"]["code"] == "bad_query"
    login(client, user)
    page = client.get("/findings/search", query_string={"q": raw})
    if raw.strip():
        assert page.status_code == 400 and needle in page_text(page)


@pytest.mark.parametrize("raw", [
    'NEAR(steering probing)', "title:steering", "steer*", "^steering", "steering + probing",
    "{steering}", "col:(a OR b)", "a & b | !c", "'; DROP TABLE findings; --", "\x00steering",
    "steering:*", "ſteering", "日本語 テキスト", "naïve café", "😀 steering",
])
def test_fts_syntax_in_user_input_is_neutralised(app, raw):
    """Operators and syntax of FTS5/tsquery become plain words, and words become keyed
    hashes: nothing the user typed reaches SQL. The query still runs."""
    user = make_user(make_org(), name="mia")
    post(user, title="Steering probing", body="steering probing words")
    compiled = compile_query(parse(raw), {"network"})
    hashes = [h for g in compiled.groups for h in g.any_of] + \
        [h for g in compiled.groups for a in g.all_of for h in a]
    assert all(isinstance(h, int) and -2**63 <= h < 2**63 for h in hashes)
    search.search(user, raw)  # runs without a database error


def test_snippets_escape_the_text_and_mark_only_the_words(app):
    author = make_user(make_org("north"), name="carol")
    post(author, title="<b>Bold</b> & <i>title</i> probe",
         body="Before <script>alert('x')</script> the probe <img src=x onerror=alert(1)> "
              "after " + "filler " * 80 + "probe end")
    hit = search.search(author, "probe").results[0]
    snippet = str(hit.snippet_html)
    assert "<script" not in snippet and "<img" not in snippet
    assert "&lt;script&gt;" in snippet and "<mark>probe</mark>" in snippet
    assert snippet.replace("<mark>", "").replace("</mark>", "").count("<") == 0
    assert str(hit.title_html) == \
        "&lt;b&gt;Bold&lt;/b&gt; &amp; &lt;i&gt;title&lt;/i&gt; <mark>probe</mark>"


def test_search_page_and_api_results(client, app, api_token):
    w = build_world()
    omar = w.users["omar"]
    login(client, omar)
    html = client.get("/findings/search?q=zebrafish").text
    assert "3 findings you can read match." in html
    assert "<mark>zebrafish</mark>" in html
    for hidden in ("delta", "echo", "charlie"):
        assert hidden not in html
    body = client.get("/api/v1/findings?q=quokka", headers=api_token(omar)).json
    assert body["total"] == 3
    assert all(i["snippet_source"] == "reply" for i in body["items"])
    assert all("<mark>quokka</mark>" in i["snippet_html"] for i in body["items"])


# ---------------------------------------------------------------- the index


def test_index_follows_edits_and_deletes(app):
    author = make_user(make_org("north"), name="carol")
    finding = post(author, title="Original", body="platypus")
    assert search.search(author, "platypus").total == 1
    service.edit_finding(author, finding, body="echidna")
    assert search.search(author, "platypus").total == 0
    assert search.search(author, "echidna").total == 1
    db.delete(refresh(finding))
    db.commit()
    assert search.search(author, "echidna").total == 0


def test_the_index_holds_keyed_hashes_not_words(app):
    """No trigger copies text any more (the database never sees it); the application
    writes hashes under the level's search key, and a level change re-hashes them."""
    author = make_user(make_org("north"), name="carol")
    finding = post(author, title="Quetzal", body="quetzal feathers")
    reply(author, finding, "more quetzal")
    dump = " ".join(str(row) for table in ("findings_fts", "replies_fts")
                    for row in db.execute(text(f"SELECT * FROM {table}")))  # noqa: S608
    assert "quetzal" not in dump.lower() and "feather" not in dump.lower()
    if db.get_bind().dialect.name == "sqlite":
        names = {r[0] for r in db.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'"))}
        assert not {n for n in names if "fts" in n}
    before = db.execute(text("SELECT terms FROM findings_fts")).scalar()
    service.edit_finding(author, refresh(finding), level="restricted")
    after = db.execute(text("SELECT terms FROM findings_fts")).scalar()
    assert before != after  # the restricted search key
    assert search.search(author, "quetzal").total == 1
