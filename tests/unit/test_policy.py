"""The policy loader: the default policy, its helpers, and every kind of bad policy."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from app.policy import (
    Level,
    Nda,
    Policy,
    PolicyError,
    default_policy_dir,
    load_policy,
)

DEFAULT_DIR = default_policy_dir()


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(DEFAULT_DIR)


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A writable copy of the default policy, named policies/ like the real one."""
    target = tmp_path / "policies"
    shutil.copytree(DEFAULT_DIR, target)
    return target


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    """Replace ``old`` (which must occur) in ``path``; ``count`` = -1 replaces all."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def level_block(key: str) -> str:
    return f'[[levels]]\nkey = "{key}"\n'


def replace_in_level(policy_dir: Path, key: str, old: str, new: str) -> None:
    """Replace the first ``old`` inside the [[levels]] table for ``key``."""
    path = policy_dir / "levels.toml"
    text = path.read_text(encoding="utf-8")
    start = text.index(level_block(key))
    end = text.find("[[levels]]", start + 1)
    end = len(text) if end == -1 else end
    table = text[start:end]
    assert old in table, f"{old!r} not in level {key}"
    path.write_text(text[:start] + table.replace(old, new, 1) + text[end:], encoding="utf-8")


def load_error(directory: Path) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_policy(directory)
    return info.value


def nda_body(path: Path) -> bytes:
    """The bytes after the closing '+++' line, found independently of the loader."""
    lines = path.read_bytes().splitlines(keepends=True)
    assert lines[0].strip() == b"+++"
    close = next(i for i in range(1, len(lines)) if lines[i].strip() == b"+++")
    return b"".join(lines[close + 1 :])


# --------------------------------------------------------------------------- default policy


def test_default_policy_dir_is_the_repo_policies_folder() -> None:
    repo = Path(__file__).resolve().parents[2]
    assert default_policy_dir() == repo / "policies"
    assert (DEFAULT_DIR / "levels.toml").is_file()


def test_loading_does_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    policy = load_policy()
    assert policy.source_dir == DEFAULT_DIR
    assert policy.level_keys() == ["public", "network", "restricted", "confidential"]


def test_default_levels_in_order(policy: Policy) -> None:
    assert policy.level_keys() == ["public", "network", "restricted", "confidential"]
    assert [level.rank for level in policy.levels] == [0, 1, 2, 3]
    assert all(isinstance(level, Level) for level in policy.levels)
    assert policy.lowest().key == "public"


@pytest.mark.parametrize(
    ("key", "ndas", "mfa", "compartment"),
    [
        ("public", (), False, False),
        ("network", ("network-terms",), False, False),
        ("restricted", ("network-terms", "restricted"), True, False),
        ("confidential", ("network-terms", "restricted", "confidential"), "passkey", True),
    ],
)
def test_default_level_settings(
    policy: Policy, key: str, ndas: tuple[str, ...], mfa: bool | str, compartment: bool
) -> None:
    level = policy.level(key)
    assert level.ndas == ndas
    assert level.mfa == mfa and type(level.mfa) is type(mfa)
    assert level.needs_passkey is (mfa == "passkey")
    assert level.requires_compartment is compartment
    assert re.fullmatch(r"#[0-9a-f]{6}", level.colour)
    assert level.label and level.description
    assert level.attachments is True
    assert 0 < level.max_attachment_mb <= policy.max_attachment_mb


def test_default_attachment_limits(policy: Policy) -> None:
    assert policy.level("public").max_attachment_mb == 100
    assert policy.max_attachment_mb == 16384
    assert policy.user_quota_mb == 65536


def test_default_ndas(policy: Policy) -> None:
    assert set(policy.ndas) == {"network-terms", "restricted", "confidential"}
    for key, nda in policy.ndas.items():
        assert isinstance(nda, Nda)
        assert nda.key == key
        assert nda.version == 1
        assert nda.title and nda.summary and nda.text.strip()
        assert nda.path == DEFAULT_DIR / "ndas" / f"{key}.md"
    assert policy.ndas["confidential"].binding is True
    assert policy.ndas["network-terms"].binding is False
    assert "+++" not in policy.ndas["confidential"].text


def test_nda_sha256_is_over_the_body_bytes(policy: Policy) -> None:
    for nda in policy.ndas.values():
        body = nda_body(nda.path)
        assert nda.text_sha256 == hashlib.sha256(body).hexdigest()
        assert nda.text_sha256 == hashlib.sha256(nda.text.encode("utf-8")).hexdigest()
        assert nda.text == body.decode("utf-8")


def test_default_review(policy: Policy) -> None:
    review = policy.review
    assert review.quorum == 2
    assert review.distinct_orgs is True
    assert review.exclude_author_org is True
    assert review.anonymous_reviewers is True
    assert review.reject_is_final is True
    assert review.risks == ("low", "medium", "high")
    assert review.blocking_risk == "high"
    assert review.rubric_keys() == [
        "capability_uplift",
        "method_specificity",
        "alignment_benefit",
        "availability_elsewhere",
    ]
    for item in review.rubric:
        assert (item.min, item.max) == (0, 4)
        assert item.question and item.help


def test_review_helpers(policy: Policy) -> None:
    review = policy.review
    assert review.risk_rank("low") == 0
    assert review.is_blocking("high")
    assert not review.is_blocking("medium")
    item = review.rubric_item("capability_uplift")
    assert item.accepts(0) and item.accepts(4)
    assert not item.accepts(5) and not item.accepts(-1) and not item.accepts(True)
    assert not item.accepts("2")
    with pytest.raises(KeyError):
        review.risk_rank("extreme")
    with pytest.raises(KeyError):
        review.rubric_item("nope")


# --------------------------------------------------------------------------- helpers


def test_rank_and_levels_up_to(policy: Policy) -> None:
    assert policy.rank("public") == 0
    assert policy.rank("confidential") == 3
    assert [lv.key for lv in policy.levels_up_to("public")] == ["public"]
    assert [lv.key for lv in policy.levels_up_to("restricted")] == [
        "public",
        "network",
        "restricted",
    ]
    assert len(policy.levels_up_to("confidential")) == 4


def test_compare_highest_is_level(policy: Policy) -> None:
    assert policy.compare("network", "restricted") == -1
    assert policy.compare("restricted", "restricted") == 0
    assert policy.compare("confidential", "public") == 1
    assert policy.highest(["network", "confidential", "public"]).key == "confidential"
    assert policy.highest(iter(["public"])).key == "public"
    assert policy.is_level("network")
    assert not policy.is_level("secret")
    assert not policy.is_level(None)
    assert not policy.is_level(["public"])


def test_ndas_for_level(policy: Policy) -> None:
    assert policy.ndas_for_level("public") == []
    assert [n.key for n in policy.ndas_for_level("confidential")] == [
        "network-terms",
        "restricted",
        "confidential",
    ]
    assert policy.nda("restricted").key == "restricted"


def test_unknown_keys_raise_key_error(policy: Policy) -> None:
    for call in (
        lambda: policy.level("secret"),
        lambda: policy.rank("secret"),
        lambda: policy.levels_up_to("secret"),
        lambda: policy.compare("public", "secret"),
        lambda: policy.highest(["public", "secret"]),
        lambda: policy.ndas_for_level("secret"),
        lambda: policy.nda("secret"),
    ):
        with pytest.raises(KeyError):
            call()
    with pytest.raises(ValueError):
        policy.highest([])


def test_policy_is_immutable_and_truthy(policy: Policy) -> None:
    with pytest.raises(AttributeError):
        policy.levels = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        policy.levels[0].mfa = True  # type: ignore[misc]
    assert bool(policy)  # app code uses `policy or state.policy()`
    assert hash(policy) == hash(load_policy(DEFAULT_DIR))


def test_copy_loads_and_equals_default(policy_dir: Path, policy: Policy) -> None:
    copy = load_policy(policy_dir)
    assert copy.levels == policy.levels
    assert copy.review == policy.review
    assert {k: n.text_sha256 for k, n in copy.ndas.items()} == {
        k: n.text_sha256 for k, n in policy.ndas.items()
    }


def test_crlf_nda_hash_covers_the_stored_bytes(policy_dir: Path) -> None:
    path = policy_dir / "ndas" / "restricted.md"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    nda = load_policy(policy_dir).ndas["restricted"]
    assert nda.text_sha256 == hashlib.sha256(nda_body(path)).hexdigest()
    assert nda.text.startswith("\r\n# Restricted")


def test_labels_use_the_directory_name(tmp_path: Path) -> None:
    target = tmp_path / "site-policy"
    shutil.copytree(DEFAULT_DIR, target)
    edit(target / "review.toml", "quorum = 2", "quorum = 0")
    assert "site-policy/review.toml: quorum: must be an integer >= 1" in str(load_error(target))


# --------------------------------------------------------------------------- bad policies

Corrupt = Callable[[Path], None]


def _remove(name: str) -> Corrupt:
    return lambda d: (d / name).unlink()


def _write(name: str, text: str) -> Corrupt:
    return lambda d: (d / name).write_text(text, encoding="utf-8")


def _edit(name: str, old: str, new: str, count: int = 1) -> Corrupt:
    return lambda d: edit(d / name, old, new, count)


def _level(key: str, old: str, new: str) -> Corrupt:
    return lambda d: replace_in_level(d, key, old, new)


def _only_public_level(d: Path) -> None:
    path = d / "levels.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: text.index(level_block("network"))], encoding="utf-8")


def _public_second(d: Path) -> None:
    replace_in_level(d, "public", 'key = "public"', 'key = "open"')
    replace_in_level(d, "network", 'key = "network"', 'key = "public"')


def _rename_nda(d: Path) -> None:
    (d / "ndas" / "restricted.md").rename(d / "ndas" / "Restricted Terms.md")


def _bad_utf8_body(d: Path) -> None:
    path = d / "ndas" / "restricted.md"
    path.write_bytes(path.read_bytes() + b"\xff\xfe")


RESTRICTED_MD = "ndas/restricted.md"

BAD_CASES: list[tuple[str, Corrupt, list[str]]] = [
    # --- files missing or unparsable
    ("levels missing", _remove("levels.toml"), ["policies/levels.toml: file not found"]),
    ("review missing", _remove("review.toml"), ["policies/review.toml: file not found"]),
    (
        "levels unparsable",
        _write("levels.toml", 'max_attachment_mb = 1\n\nkey "public"\n'),
        ["policies/levels.toml: cannot parse: ", "line 3"],
    ),
    (
        "review unparsable",
        _edit("review.toml", "quorum = 2", "quorum = = 2"),
        ["policies/review.toml: cannot parse: "],
    ),
    (
        "levels not utf-8",
        lambda d: (d / "levels.toml").write_bytes(b"# caf\xe9\n"),
        ["policies/levels.toml: cannot parse: not valid UTF-8"],
    ),
    # --- levels.toml: top level
    (
        "top-level field missing",
        _edit("levels.toml", "user_quota_mb = 65536\n", ""),
        ["policies/levels.toml: missing field 'user_quota_mb'"],
    ),
    (
        "top-level field unknown",
        _edit("levels.toml", "user_quota_mb = 65536\n", "user_quota_mb = 65536\nquota = 3\n"),
        ["policies/levels.toml: unknown field 'quota'"],
    ),
    (
        "global cap not an integer",
        _edit("levels.toml", "max_attachment_mb = 16384", 'max_attachment_mb = "16G"'),
        ["policies/levels.toml: max_attachment_mb: must be an integer >= 1"],
    ),
    (
        "quota below the global cap",
        _edit("levels.toml", "user_quota_mb = 65536", "user_quota_mb = 10"),
        ["policies/levels.toml: user_quota_mb: must be >= max_attachment_mb (16384)"],
    ),
    (
        "levels not an array of tables",
        _write("levels.toml", "max_attachment_mb = 1\nuser_quota_mb = 1\nlevels = 3\n"),
        ["policies/levels.toml: levels: must be an array of tables"],
    ),
    (
        "fewer than two levels",
        _only_public_level,
        ["policies/levels.toml: levels: at least 2 levels are required (got 1)"],
    ),
    # --- levels.toml: fields of a level
    (
        "level field missing",
        _level("restricted", "mfa = true\n", ""),
        ["policies/levels.toml: levels[2]: missing field 'mfa'"],
    ),
    (
        "level field unknown (typo)",
        _level("network", "mfa = false\n", "mfa = false\nmfaa = true\n"),
        ["policies/levels.toml: levels[1]: unknown field 'mfaa'", "did you mean 'mfa'?"],
    ),
    (
        "level bool is a string",
        _level("restricted", "mfa = true", 'mfa = "yes"'),
        ["policies/levels.toml: levels[2].mfa: must be true, false or \"passkey\""],
    ),
    (
        "level key not a slug",
        _level("confidential", 'key = "confidential"', 'key = "Top Secret"'),
        ["policies/levels.toml: levels[3].key: must be a slug"],
    ),
    (
        "duplicate level key",
        _level("restricted", 'key = "restricted"', 'key = "network"'),
        ["policies/levels.toml: levels[2].key: duplicate level key 'network'"],
    ),
    (
        "duplicate level label",
        _level("restricted", 'label = "Restricted"', 'label = "network"'),
        ["policies/levels.toml: levels[2].label: duplicate label 'network'"],
    ),
    (
        "empty label",
        _level("network", 'label = "Network"', 'label = "  "'),
        ["policies/levels.toml: levels[1].label: must be a non-empty string"],
    ),
    (
        "bad colour",
        _level("public", 'colour = "#2e7d32"', 'colour = "green"'),
        ["policies/levels.toml: levels[0].colour: must be a colour written #rrggbb"],
    ),
    (
        "colour too light for white text and badges",
        _level("restricted", 'colour = "#9a5b00"', 'colour = "#e08600"'),
        ["policies/levels.toml: levels[2].colour: #e08600 has a contrast of 2.77:1 on white"],
    ),
    (
        "short colour",
        _level("network", 'colour = "#1565c0"', 'colour = "#15c"'),
        ["policies/levels.toml: levels[1].colour"],
    ),
    (
        "unknown NDA",
        _level("restricted", '"restricted"]', '"restricted", "foo"]'),
        ["policies/levels.toml: levels[2].ndas: unknown NDA 'foo'"],
    ),
    (
        "NDA listed twice",
        _level("network", '["network-terms"]', '["network-terms", "network-terms"]'),
        ["policies/levels.toml: levels[1].ndas: 'network-terms' is listed twice"],
    ),
    (
        "ndas not a list",
        _level("network", '["network-terms"]', '"network-terms"'),
        ["policies/levels.toml: levels[1].ndas: must be an array of strings"],
    ),
    (
        "NDAs not cumulative",
        _level("confidential", '"network-terms", "restricted", ', '"network-terms", '),
        [
            "policies/levels.toml: levels[3].ndas: must include every NDA of the level below",
            "'restricted'",
        ],
    ),
    (
        "MFA dropped above a level that requires it",
        _level("confidential", 'mfa = "passkey"', "mfa = false"),
        ["policies/levels.toml: levels[3].mfa: must be true"],
    ),
    (
        "passkey dropped above a level that requires it",
        lambda d: (replace_in_level(d, "restricted", "mfa = true", 'mfa = "passkey"'),
                   replace_in_level(d, "confidential", 'mfa = "passkey"', "mfa = true")),
        ['policies/levels.toml: levels[3].mfa: must be "passkey": the level below '
         "('restricted') already requires a passkey"],
    ),
    (
        "mfa is an unknown factor",
        _level("restricted", "mfa = true", 'mfa = "sms"'),
        ["policies/levels.toml: levels[2].mfa: must be true, false or \"passkey\" "
         "(got 'sms')"],
    ),
    (
        "negative attachment cap",
        _level("network", "max_attachment_mb = 8192", "max_attachment_mb = -1"),
        ["policies/levels.toml: levels[1].max_attachment_mb: must be an integer >= 0"],
    ),
    (
        "float attachment cap",
        _level("network", "max_attachment_mb = 8192", "max_attachment_mb = 8.5"),
        ["policies/levels.toml: levels[1].max_attachment_mb: must be an integer >= 0"],
    ),
    (
        "level cap above the global cap",
        _level("network", "max_attachment_mb = 8192", "max_attachment_mb = 20000"),
        ["policies/levels.toml: levels[1].max_attachment_mb: must not exceed the global"],
    ),
    (
        "attachments off with a cap",
        _level("public", "attachments = true", "attachments = false"),
        ["policies/levels.toml: levels[0].max_attachment_mb: must be 0 when attachments = false"],
    ),
    (
        "attachments on with a zero cap",
        _level("public", "max_attachment_mb = 100", "max_attachment_mb = 0"),
        ["policies/levels.toml: levels[0].max_attachment_mb: must be >= 1 when attachments"],
    ),
    # --- traceability and expiry (optional fields)
    (
        "unknown download mode",
        _level("confidential", 'downloads = "stamped"', 'downloads = "watermarked"'),
        ["policies/levels.toml: levels[3].downloads: must be one of 'original', 'stamped', "
         "'view-only' (got 'watermarked')"],
    ),
    (
        "downloads less strict than the level below",
        _level("restricted", 'downloads = "original"', 'downloads = "view-only"'),
        ["policies/levels.toml: levels[3].downloads: must be at least as strict as the "
         "level below ('restricted': 'view-only')"],
    ),
    (
        "watermark dropped above a level that shows one",
        lambda d: (replace_in_level(d, "restricted", "watermark = false", "watermark = true"),
                   replace_in_level(d, "confidential", "watermark = true", "watermark = false")),
        ["policies/levels.toml: levels[3].watermark: must be true: the level below "
         "('restricted') already shows a watermark"],
    ),
    (
        "renewal longer above than below",
        _level("confidential", "renew_days = 365", "renew_days = 400"),
        ["policies/levels.toml: levels[3].renew_days: must be between 1 and 365: the level "
         "below ('restricted') already lapses after 365 days (got 400)"],
    ),
    (
        "re-vetting switched off above a level that has it",
        _level("confidential", "revet_days = 365", "revet_days = 0"),
        ["policies/levels.toml: levels[3].revet_days: must be between 1 and 365"],
    ),
    (
        "negative renewal",
        _level("network", "renew_days = 365", "renew_days = -1"),
        ["policies/levels.toml: levels[1].renew_days: must be an integer >= 0 (got -1)"],
    ),
    (
        "watermark not a boolean",
        _level("confidential", "watermark = true", 'watermark = "yes"'),
        ["policies/levels.toml: levels[3].watermark: must be true or false (got 'yes')"],
    ),
    (
        "public stamped",
        _level("public", "max_attachment_mb = 100",
               'max_attachment_mb = 100\ndownloads = "stamped"'),
        ["policies/levels.toml: levels[0].downloads: must be 'original' for the 'public' level"],
    ),
    # --- the public level
    (
        "no public level",
        _level("public", 'key = "public"', 'key = "open"'),
        ["policies/levels.toml: levels: no level with key 'public'", "the app relies on"],
    ),
    (
        "public not the lowest",
        _public_second,
        ["policies/levels.toml: levels[1].key: 'public' must be the first (lowest)"],
    ),
    # --- NDA files
    ("ndas directory missing", lambda d: shutil.rmtree(d / "ndas"), ["policies/ndas: directory"]),
    (
        "NDA without front matter",
        _write(RESTRICTED_MD, "# Restricted\n\nSome text.\n"),
        ["policies/ndas/restricted.md: front matter: missing"],
    ),
    (
        "NDA front matter not closed",
        _edit(RESTRICTED_MD, "\n+++\n", "\n"),
        ["policies/ndas/restricted.md: front matter: not closed"],
    ),
    (
        "NDA front matter missing field",
        _edit(RESTRICTED_MD, "version = 1\n", ""),
        ["policies/ndas/restricted.md: front matter: missing field 'version'"],
    ),
    (
        "NDA front matter unknown field",
        _edit(RESTRICTED_MD, "version = 1\n", "version = 1\nversoin = 2\n"),
        [
            "policies/ndas/restricted.md: front matter: unknown field 'versoin'",
            "did you mean 'version'?",
        ],
    ),
    (
        "NDA version zero",
        _edit(RESTRICTED_MD, "version = 1", "version = 0"),
        ["policies/ndas/restricted.md: front matter: version: must be an integer >= 1"],
    ),
    (
        "NDA binding not a bool",
        _edit(RESTRICTED_MD, "binding = false", 'binding = "no"'),
        ["policies/ndas/restricted.md: front matter: binding: must be true or false"],
    ),
    (
        "NDA front matter unparsable (line numbers are the file's)",
        _edit(RESTRICTED_MD, "version = 1", "version 1"),
        ["policies/ndas/restricted.md: front matter: cannot parse: ", "line 3,"],
    ),
    (
        "NDA empty body",
        lambda d: edit(
            d / RESTRICTED_MD,
            (d / RESTRICTED_MD).read_text(encoding="utf-8").split("+++\n", 2)[2],
            "\n  \n",
        ),
        ["policies/ndas/restricted.md: body: the NDA text is empty"],
    ),
    (
        "NDA body not utf-8",
        _bad_utf8_body,
        ["policies/ndas/restricted.md: body: not valid UTF-8"],
    ),
    (
        "NDA file name not a slug",
        _rename_nda,
        [
            "policies/ndas/Restricted Terms.md: file name: the NDA key 'Restricted Terms'",
            # and the levels that referenced it now name an unknown NDA
            "policies/levels.toml: levels[2].ndas: unknown NDA 'restricted'",
        ],
    ),
    # --- review.toml
    (
        "quorum zero",
        _edit("review.toml", "quorum = 2", "quorum = 0"),
        ["policies/review.toml: quorum: must be an integer >= 1"],
    ),
    (
        "quorum a string",
        _edit("review.toml", "quorum = 2", 'quorum = "2"'),
        ["policies/review.toml: quorum: must be an integer >= 1"],
    ),
    (
        "quorum a bool",
        _edit("review.toml", "quorum = 2", "quorum = true"),
        ["policies/review.toml: quorum: must be an integer >= 1 (got true)"],
    ),
    (
        "review field missing",
        _edit("review.toml", "reject_is_final = true\n", ""),
        ["policies/review.toml: missing field 'reject_is_final'"],
    ),
    (
        "review field unknown (typo)",
        _edit("review.toml", "quorum = 2", "quorom = 2"),
        [
            "policies/review.toml: unknown field 'quorom'",
            "did you mean 'quorum'?",
            "policies/review.toml: missing field 'quorum'",
        ],
    ),
    (
        "review bool is an int",
        _edit("review.toml", "distinct_orgs = true", "distinct_orgs = 1"),
        ["policies/review.toml: distinct_orgs: must be true or false"],
    ),
    (
        "blocking risk not in risks",
        _edit("review.toml", 'blocking_risk = "high"', 'blocking_risk = "severe"'),
        ["policies/review.toml: blocking_risk: must be one of risks"],
    ),
    (
        "duplicate risk",
        _edit("review.toml", '"medium", "high"]', '"medium", "medium", "high"]'),
        ["policies/review.toml: risks: 'medium' is listed twice"],
    ),
    (
        "no risks",
        _edit("review.toml", 'risks = ["low", "medium", "high"]', "risks = []"),
        ["policies/review.toml: risks: must list at least one risk"],
    ),
    (
        "rubric a table, not an array of tables",
        _write(
            "review.toml",
            (DEFAULT_DIR / "review.toml").read_text(encoding="utf-8").split("[[rubric]]")[0]
            + '[rubric]\nkey = "x"\n',
        ),
        ["policies/review.toml: rubric: must be an array of tables"],
    ),
    (
        "duplicate rubric key",
        _edit("review.toml", 'key = "method_specificity"', 'key = "capability_uplift"'),
        ["policies/review.toml: rubric[1].key: duplicate rubric key 'capability_uplift'"],
    ),
    (
        "rubric key not a slug",
        _edit("review.toml", 'key = "method_specificity"', 'key = "method specificity"'),
        ["policies/review.toml: rubric[1].key: must be a slug"],
    ),
    (
        "rubric min not below max",
        _edit("review.toml", "max = 4", "max = 0"),
        ["policies/review.toml: rubric[0].max: must be greater than min (0)"],
    ),
    (
        "rubric bound not an integer",
        _edit("review.toml", "min = 0", "min = 0.5"),
        ["policies/review.toml: rubric[0].min: must be an integer"],
    ),
    (
        "rubric item missing help",
        lambda d: edit(
            d / "review.toml",
            next(
                line + "\n"
                for line in (d / "review.toml").read_text(encoding="utf-8").splitlines()
                if line.startswith("help =")
            ),
            "",
        ),
        ["policies/review.toml: rubric[0]: missing field 'help'"],
    ),
    (
        "rubric item unknown field",
        _edit("review.toml", "min = 0\n", "min = 0\nweight = 2\n"),
        ["policies/review.toml: rubric[0]: unknown field 'weight'"],
    ),
]


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [pytest.param(corrupt, expected, id=name) for name, corrupt, expected in BAD_CASES],
)
def test_bad_policy_names_file_and_field(
    policy_dir: Path, corrupt: Corrupt, expected: list[str]
) -> None:
    corrupt(policy_dir)
    error = load_error(policy_dir)
    message = str(error)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    # every problem line starts with the offending file's path
    for line in error.errors:
        assert line.startswith("policies/"), line


def test_missing_policy_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    error = load_error(missing)
    assert "nowhere: policy directory not found" in str(error)


def test_all_problems_are_reported_together(policy_dir: Path) -> None:
    edit(policy_dir / "review.toml", "quorum = 2", "quorum = 0")
    replace_in_level(policy_dir, "public", 'colour = "#2e7d32"', 'colour = "green"')
    edit(policy_dir / RESTRICTED_MD, "version = 1\n", "")
    error = load_error(policy_dir)
    assert len(error.errors) == 3
    message = str(error)
    assert message.startswith("invalid policy (3 problems):")
    assert "policies/review.toml: quorum:" in message
    assert "policies/levels.toml: levels[0].colour:" in message
    assert "policies/ndas/restricted.md: front matter: missing field 'version'" in message


def test_a_single_problem_is_the_whole_message(policy_dir: Path) -> None:
    edit(policy_dir / "review.toml", "quorum = 2", "quorum = 0")
    error = load_error(policy_dir)
    assert str(error) == "policies/review.toml: quorum: must be an integer >= 1 (got 0)"


def test_broken_nda_is_not_also_reported_as_unknown(policy_dir: Path) -> None:
    edit(policy_dir / RESTRICTED_MD, "version = 1\n", "")
    error = load_error(policy_dir)
    assert error.errors == ("policies/ndas/restricted.md: front matter: missing field 'version'",)


def test_missing_ndas_directory_is_reported_once(policy_dir: Path) -> None:
    shutil.rmtree(policy_dir / "ndas")
    error = load_error(policy_dir)
    assert len(error.errors) == 1
    assert error.errors[0].startswith("policies/ndas: directory not found")


def test_non_markdown_files_in_ndas_are_ignored(policy_dir: Path) -> None:
    (policy_dir / "ndas" / "README.txt").write_text("notes", encoding="utf-8")
    (policy_dir / "ndas" / ".restricted.md.swp").write_text("junk", encoding="utf-8")
    assert set(load_policy(policy_dir).ndas) == {"network-terms", "restricted", "confidential"}


def test_traceability_fields_are_optional_and_default_to_off(policy_dir: Path) -> None:
    path = policy_dir / "levels.toml"
    text = path.read_text(encoding="utf-8")
    for line in ('downloads = "stamped"\n', 'downloads = "original"\n', "watermark = true\n",
                 "watermark = false\n", "renew_days = 365\n", "revet_days = 365\n",
                 "revet_days = 730\n"):
        text = text.replace(line, "")
    path.write_text(text, encoding="utf-8")
    levels = load_policy(policy_dir).levels
    assert {(lv.downloads, lv.watermark, lv.renew_days, lv.revet_days) for lv in levels} == {
        ("original", False, 0, 0)}


def test_default_policy_stamps_and_marks_confidential_and_renews_yearly(policy: Policy) -> None:
    confidential = policy.level("confidential")
    assert (confidential.downloads, confidential.watermark) == ("stamped", True)
    assert confidential.stamped and not confidential.view_only
    assert [lv.renew_days for lv in policy.levels] == [0, 365, 365, 365]
    assert [lv.revet_days for lv in policy.levels] == [0, 730, 365, 365]


def test_colour_is_normalised_to_lowercase(policy_dir: Path) -> None:
    replace_in_level(policy_dir, "public", 'colour = "#2e7d32"', 'colour = "#2E7D32"')
    assert load_policy(policy_dir).level("public").colour == "#2e7d32"
