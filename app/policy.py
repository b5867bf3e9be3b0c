"""Enclave policy: security levels, NDAs and review rules, loaded from data files.

A policy directory (by default ``<repo>/policies``, see :func:`default_policy_dir`) holds::

    levels.toml      [[levels]] tables, lowest first, plus the global attachment limits
    review.toml      review quorum, risk scale and [[rubric]] questions
    ndas/<key>.md    one NDA per file: TOML front matter between '+++' lines, then Markdown

:func:`load_policy` reads and validates all of it at start-up. Unknown fields are errors
(typos must not pass silently), as are missing fields, wrong types, out-of-range values
and broken cross-references. All problems found are collected into a single
:class:`PolicyError`; each reads ``<dir>/<file>: <field path>: <problem>``, where
``<dir>`` is the policy directory's own name, e.g.::

    policies/levels.toml: levels[2].ndas: unknown NDA 'foo' (...)
    policies/review.toml: quorum: must be an integer >= 1 (got 0)
    policies/ndas/restricted.md: front matter: missing field 'version'

Indexes in field paths are 0-based: ``levels[2]`` is the third ``[[levels]]`` table.

Levels: ordered lowest first; a level's ``rank`` is its position (0 = lowest). A level
keyed ``public`` must exist and be the lowest; the app relies on it. NDAs are listed
explicitly per level and must be cumulative (each level lists every NDA of the level
below it), and MFA, once required, stays required at every higher level. ``mfa`` is
``false``, ``true`` (any second factor: an authenticator code or a passkey) or
``"passkey"`` (a phishing-resistant factor: this session proved a passkey); a level's
factor is never weaker than the one of the level below it.

NDA text and hash: ``Nda.text`` is everything after the line that closes the front
matter (the second ``+++`` line, including that line's line ending), decoded as UTF-8
exactly as stored: no stripping and no newline normalisation. ``Nda.text_sha256`` is the
hex SHA-256 of those bytes, i.e. ``hashlib.sha256(nda.text.encode("utf-8")).hexdigest()``.
Any edit to the body, whitespace included, changes the hash; bump ``version`` whenever
the meaning changes so that members are asked to accept the new text.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DOWNLOAD_MODES",
    "LEVELS_FILE",
    "NDA_DIR",
    "PUBLIC_LEVEL",
    "REVIEW_FILE",
    "Level",
    "Nda",
    "Policy",
    "PolicyError",
    "ReviewPolicy",
    "RubricItem",
    "default_policy_dir",
    "load_policy",
]

LEVELS_FILE = "levels.toml"
REVIEW_FILE = "review.toml"
NDA_DIR = "ndas"
NDA_SUFFIX = ".md"
PUBLIC_LEVEL = "public"
#: The ``mfa`` value of a level that needs a phishing-resistant factor (a passkey).
MFA_PASSKEY = "passkey"
FRONT_MATTER_DELIMITER = "+++"

_SLUG_RE = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
_SLUG_MAX = 64
_SLUG_RULE = "lowercase letters, digits, '-' or '_', starting with a letter"
_COLOUR_RE = re.compile(r"#[0-9a-fA-F]{6}")
#: A level's colour is the text of its badge on white and the background of its marking
#: under white text: both need WCAG AA contrast for normal text.
MIN_CONTRAST = 4.5


def contrast_on_white(colour: str) -> float:
    """The WCAG 2 contrast ratio of ``#rrggbb`` against white."""
    channels = []
    for i in (1, 3, 5):
        c = int(colour[i:i + 2], 16) / 255
        channels.append(c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4)
    luminance = 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]
    return 1.05 / (luminance + 0.05)
_TOML_POSITION_RE = re.compile(r"\(at line (\d+), column (\d+)\)")
_UTF8_BOM = b"\xef\xbb\xbf"

_LEVELS_TOP_FIELDS = ("max_attachment_mb", "user_quota_mb", "levels")
#: Optional top-level fields of levels.toml: API tokens' lifetime in days
_LEVELS_TOP_OPTIONAL = ("token_default_days", "token_max_days")
TOKEN_DEFAULT_DAYS = 30
TOKEN_MAX_DAYS = 90
_LEVEL_FIELDS = (
    "key",
    "label",
    "colour",
    "description",
    "ndas",
    "mfa",
    "requires_compartment",
    "attachments",
    "max_attachment_mb",
)
#: Optional level fields (traceability and expiry), with the value an absent field means.
_LEVEL_OPTIONAL_FIELDS = ("downloads", "watermark", "renew_days", "revet_days", "api_tokens")
#: What a level lets readers take away, least strict first: the file as uploaded, a
#: per-reader stamped copy, or nothing (view in the page only).
DOWNLOAD_MODES = ("original", "stamped", "view-only")
_NDA_FIELDS = ("title", "version", "binding", "summary")
_REVIEW_FIELDS = (
    "quorum",
    "distinct_orgs",
    "exclude_author_org",
    "anonymous_reviewers",
    "risks",
    "blocking_risk",
    "reject_is_final",
    "rubric",
)
_RUBRIC_FIELDS = ("key", "question", "min", "max", "help")


class PolicyError(Exception):
    """The policy files are missing or invalid; start-up stops with this message.

    ``errors`` holds every problem found, one ``<file>: <field>: <problem>`` line each.
    """

    def __init__(self, errors: str | Iterable[str]) -> None:
        self.errors: tuple[str, ...] = (errors,) if isinstance(errors, str) else tuple(errors)
        if len(self.errors) == 1:
            message = self.errors[0]
        else:
            message = f"invalid policy ({len(self.errors)} problems):\n" + "\n".join(
                f"  {error}" for error in self.errors
            )
        super().__init__(message)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Level:
    """One security level; ``rank`` is its position in levels.toml (0 = lowest)."""

    key: str
    label: str
    colour: str
    description: str
    ndas: tuple[str, ...]
    #: False, True (any second factor) or "passkey" (a phishing-resistant one)
    mfa: bool | str
    requires_compartment: bool
    attachments: bool
    max_attachment_mb: int
    rank: int
    #: ``original`` | ``stamped`` | ``view-only`` (see DOWNLOAD_MODES)
    downloads: str = "original"
    #: pages showing this level's content carry the reader's on-screen watermark
    watermark: bool = False
    #: NDA signatures count for this level for this many days (0: until the version changes)
    renew_days: int = 0
    #: an organization's trust up to this level lapses this many days after an admin
    #: last vetted it (0: never)
    revet_days: int = 0
    #: API tokens may read this level (for a level with ``mfa``: only tokens made with a
    #: fresh second-factor proof, see app/access.py)
    api_tokens: bool = True

    @property
    def stamped(self) -> bool:
        return self.downloads == "stamped"

    @property
    def view_only(self) -> bool:
        return self.downloads == "view-only"

    @property
    def needs_passkey(self) -> bool:
        """Reading needs a phishing-resistant factor proved in this session."""
        return self.mfa == MFA_PASSKEY

    @property
    def factor_strength(self) -> int:
        """0 = none, 1 = any second factor, 2 = a passkey (for ordering levels)."""
        return _FACTOR_STRENGTH[self.mfa]


_FACTOR_STRENGTH: dict[bool | str, int] = {False: 0, True: 1, MFA_PASSKEY: 2}


@dataclass(frozen=True)
class Nda:
    """An NDA text; see the module docstring for what ``text_sha256`` covers."""

    key: str
    title: str
    version: int
    binding: bool
    summary: str
    text: str = field(repr=False)
    text_sha256: str
    path: Path


@dataclass(frozen=True)
class RubricItem:
    """A review question scored as an integer in ``min..max`` (inclusive)."""

    key: str
    question: str
    min: int
    max: int
    help: str

    @property
    def label(self) -> str:
        """The key as people read it: ``capability_uplift`` -> "Capability uplift"."""
        return self.key.replace("_", " ").replace("-", " ").capitalize()

    def accepts(self, score: object) -> bool:
        """True when ``score`` is an integer (not a bool) within ``min..max``."""
        return (
            isinstance(score, int) and not isinstance(score, bool) and self.min <= score <= self.max
        )


@dataclass(frozen=True)
class ReviewPolicy:
    """How findings are reviewed. ``risks`` is ordered lowest first."""

    quorum: int
    distinct_orgs: bool
    exclude_author_org: bool
    anonymous_reviewers: bool
    risks: tuple[str, ...]
    blocking_risk: str
    reject_is_final: bool
    rubric: tuple[RubricItem, ...]

    def risk_rank(self, risk: str) -> int:
        """Position of ``risk`` in ``risks`` (0 = lowest); KeyError if unknown."""
        try:
            return self.risks.index(risk)
        except ValueError:
            raise KeyError(f"unknown risk {risk!r}") from None

    def is_blocking(self, risk: str) -> bool:
        """True when ``risk`` is at or above ``blocking_risk``; KeyError if unknown."""
        return self.risk_rank(risk) >= self.risk_rank(self.blocking_risk)

    def rubric_keys(self) -> list[str]:
        return [item.key for item in self.rubric]

    def rubric_item(self, key: str) -> RubricItem:
        """The rubric item ``key``; KeyError if unknown."""
        for item in self.rubric:
            if item.key == key:
                return item
        raise KeyError(f"unknown rubric item {key!r}")


@dataclass(frozen=True)
class Policy:
    """The validated policy. Build it with :func:`load_policy`."""

    levels: tuple[Level, ...]
    ndas: dict[str, Nda] = field(hash=False)
    review: ReviewPolicy
    max_attachment_mb: int
    user_quota_mb: int
    source_dir: Path
    _by_key: dict[str, Level] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )
    #: an API token lives this many days unless its maker asks for fewer or more ...
    token_default_days: int = TOKEN_DEFAULT_DAYS
    #: ... and never more than this many
    token_max_days: int = TOKEN_MAX_DAYS

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {level.key: level for level in self.levels})

    def level(self, key: str) -> Level:
        """The level ``key``; KeyError if there is none."""
        level = self._by_key.get(key) if isinstance(key, str) else None
        if level is None:
            raise KeyError(f"unknown level {key!r}")
        return level

    def level_keys(self) -> list[str]:
        """Level keys, lowest first."""
        return [level.key for level in self.levels]

    def is_level(self, key: object) -> bool:
        return isinstance(key, str) and key in self._by_key

    def rank(self, key: str) -> int:
        """The level's position, 0 = lowest; KeyError if unknown."""
        return self.level(key).rank

    def levels_up_to(self, key: str) -> list[Level]:
        """Every level ranked at or below ``key``, lowest first; KeyError if unknown."""
        top = self.rank(key)
        return [level for level in self.levels if level.rank <= top]

    def compare(self, a: str, b: str) -> int:
        """-1, 0 or 1 as level ``a`` ranks below, equal to or above ``b``; KeyError."""
        ra, rb = self.rank(a), self.rank(b)
        return (ra > rb) - (ra < rb)

    def highest(self, keys: Iterable[str]) -> Level:
        """The highest-ranked of ``keys``; KeyError if one is unknown, ValueError if empty."""
        levels = [self.level(key) for key in keys]
        if not levels:
            raise ValueError("highest() needs at least one level key")
        return max(levels, key=lambda level: level.rank)

    def lowest(self) -> Level:
        """The lowest level (always ``public`` in a loaded policy)."""
        return self.levels[0]

    def nda(self, key: str) -> Nda:
        """The NDA ``key``; KeyError if unknown."""
        try:
            return self.ndas[key]
        except KeyError:
            raise KeyError(f"unknown NDA {key!r}") from None

    def ndas_for_level(self, key: str) -> list[Nda]:
        """The NDAs level ``key`` requires, in the order levels.toml lists them."""
        return [self.ndas[nda_key] for nda_key in self.level(key).ndas]


# --------------------------------------------------------------------------- loading


def default_policy_dir() -> Path:
    """The repository's ``policies/`` folder, independent of the working directory."""
    return Path(__file__).resolve().parent.parent / "policies"


def load_policy(directory: Path | str | None = None) -> Policy:
    """Load and validate the policy in ``directory`` (default: :func:`default_policy_dir`).

    Raises :class:`PolicyError` listing every problem found.
    """
    root = Path(directory).expanduser() if directory is not None else default_policy_dir()
    root = root.resolve()
    if not root.is_dir():
        raise PolicyError(f"{root.name or root}: policy directory not found: {root}")

    errors: list[str] = []
    ndas, nda_keys = _load_ndas(root, errors)

    levels: tuple[Level, ...] | None = None
    max_attachment_mb: int | None = None
    user_quota_mb: int | None = None
    levels_file = _File(_label(root, LEVELS_FILE), errors)
    levels_doc = levels_file.read_toml(root / LEVELS_FILE)
    token_days = (TOKEN_DEFAULT_DAYS, TOKEN_MAX_DAYS)
    if levels_doc is not None:
        levels, max_attachment_mb, user_quota_mb = _parse_levels(levels_file, levels_doc, nda_keys)
        token_days = _parse_token_days(levels_file, levels_doc)

    review: ReviewPolicy | None = None
    review_file = _File(_label(root, REVIEW_FILE), errors)
    review_doc = review_file.read_toml(root / REVIEW_FILE)
    if review_doc is not None:
        review = _parse_review(review_file, review_doc)

    if errors:
        raise PolicyError(errors)
    assert levels is not None and review is not None
    assert max_attachment_mb is not None and user_quota_mb is not None
    return Policy(
        levels=levels,
        ndas=ndas,
        review=review,
        max_attachment_mb=max_attachment_mb,
        user_quota_mb=user_quota_mb,
        source_dir=root,
        token_default_days=token_days[0],
        token_max_days=token_days[1],
    )


def _parse_token_days(file: _File, doc: dict[str, Any]) -> tuple[int, int]:
    default = file.integer(doc, "token_default_days", "", minimum=1,
                           default=TOKEN_DEFAULT_DAYS)
    maximum = file.integer(doc, "token_max_days", "", minimum=1, default=TOKEN_MAX_DAYS)
    if default is None or maximum is None:
        return TOKEN_DEFAULT_DAYS, TOKEN_MAX_DAYS
    if default > maximum:
        file.error("token_default_days",
                   f"must be <= token_max_days ({maximum}) (got {default})")
    return default, maximum


def _label(root: Path, relative: str) -> str:
    return f"{root.name}/{relative}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


class _File:
    """Typed field access for one file's TOML data, recording problems as it goes.

    Getters return ``None`` when the field is absent (reported by :meth:`fields`) or
    invalid (reported by the getter), so callers only build objects from clean values.
    """

    def __init__(self, label: str, errors: list[str]) -> None:
        self.label = label
        self.errors = errors

    def error(self, path: str, message: str) -> None:
        where = f"{self.label}: {path}" if path else self.label
        self.errors.append(f"{where}: {message}")

    def read_toml(self, path: Path) -> dict[str, Any] | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            self.error("", f"file not found (expected at {path})")
            return None
        except OSError as exc:
            self.error("", f"cannot read: {exc.strerror or exc}")
            return None
        return self.parse_toml(raw)

    def parse_toml(self, raw: bytes, *, line_offset: int = 0) -> dict[str, Any] | None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.error("", f"cannot parse: not valid UTF-8 (byte {exc.start})")
            return None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message = str(exc)
            if line_offset:
                message = _TOML_POSITION_RE.sub(
                    lambda m: f"(at line {int(m[1]) + line_offset}, column {m[2]})", message
                )
            self.error("", f"cannot parse: {message}")
            return None

    def fields(self, table: Mapping[str, Any], path: str, allowed: Sequence[str],
               optional: Sequence[str] = ()) -> None:
        """Report missing fields and unknown ones (with a spelling hint)."""
        for name in allowed:
            if name not in table:
                self.error(path, f"missing field {name!r}")
        known = [*allowed, *optional]
        for name in table:
            if name not in known:
                hint = difflib.get_close_matches(name, known, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.error(path, f"unknown field {name!r}{suggestion}")

    def string(self, table: Mapping[str, Any], key: str, path: str) -> str | None:
        """A non-blank string, stripped."""
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, str) or not value.strip():
            self.error(_join(path, key), f"must be a non-empty string (got {_describe(value)})")
            return None
        return value.strip()

    def boolean(self, table: Mapping[str, Any], key: str, path: str, *,
                default: bool | None = None) -> bool | None:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, bool):
            self.error(_join(path, key), f"must be true or false (got {_describe(value)})")
            return None
        return value

    def integer(self, table: Mapping[str, Any], key: str, path: str, *, minimum: int,
                default: int | None = None) -> int | None:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.error(
                _join(path, key), f"must be an integer >= {minimum} (got {_describe(value)})"
            )
            return None
        return value

    def choice(self, table: Mapping[str, Any], key: str, path: str, choices: Sequence[str],
               *, default: str) -> str | None:
        if key not in table:
            return default
        value = table[key]
        if value not in choices:
            self.error(_join(path, key),
                       f"must be one of {', '.join(repr(c) for c in choices)} "
                       f"(got {_describe(value)})")
            return None
        return value

    def any_integer(self, table: Mapping[str, Any], key: str, path: str) -> int | None:
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, int) or isinstance(value, bool):
            self.error(_join(path, key), f"must be an integer (got {_describe(value)})")
            return None
        return value

    def slug(self, table: Mapping[str, Any], key: str, path: str) -> str | None:
        if key not in table:
            return None
        value = table[key]
        if not _is_slug(value):
            self.error(_join(path, key), f"must be a slug: {_SLUG_RULE} (got {_describe(value)})")
            return None
        return value

    def slug_list(self, table: Mapping[str, Any], key: str, path: str) -> list[str] | None:
        """A list of distinct slugs."""
        if key not in table:
            return None
        value = table[key]
        where = _join(path, key)
        if not isinstance(value, list):
            self.error(where, f"must be an array of strings (got {_describe(value)})")
            return None
        result: list[str] = []
        ok = True
        for item in value:
            if not _is_slug(item):
                self.error(where, f"{_describe(item)} is not a slug: {_SLUG_RULE}")
                ok = False
            elif item in result:
                self.error(where, f"{item!r} is listed twice")
                ok = False
            else:
                result.append(item)
        return result if ok else None

    def tables(self, table: Mapping[str, Any], key: str) -> list[dict[str, Any]] | None:
        """An array of tables (``[[key]]`` sections)."""
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.error(key, f"must be an array of tables, written as [[{key}]] sections")
            return None
        return value


def _mfa_value(file: _File, table: Mapping[str, Any], path: str) -> bool | str | None:
    """``mfa``: true, false or "passkey"."""
    if "mfa" not in table:
        return None
    value = table["mfa"]
    if isinstance(value, bool) or value == MFA_PASSKEY:
        return value
    file.error(_join(path, "mfa"),
               f'must be true, false or "{MFA_PASSKEY}" (got {_describe(value)})')
    return None


def _is_slug(value: object) -> bool:
    return isinstance(value, str) and len(value) <= _SLUG_MAX and bool(_SLUG_RE.fullmatch(value))


# ---- NDAs


def _load_ndas(root: Path, errors: list[str]) -> tuple[dict[str, Nda], set[str] | None]:
    """Parse ndas/*.md. Returns the valid NDAs and every well-named key (valid or not),
    so that a level naming a broken NDA is not also reported as naming an unknown one;
    the keys are None when the directory itself is missing (reported once, here)."""
    directory = root / NDA_DIR
    if not directory.is_dir():
        errors.append(f"{_label(root, NDA_DIR)}: directory not found (expected at {directory})")
        return {}, None
    ndas: dict[str, Nda] = {}
    keys: set[str] = set()
    paths = sorted(
        path
        for path in directory.iterdir()
        if path.suffix == NDA_SUFFIX and not path.name.startswith(".") and path.is_file()
    )
    for path in paths:
        file = _File(_label(root, f"{NDA_DIR}/{path.name}"), errors)
        key = path.stem
        if not _is_slug(key):
            file.error(
                "file name",
                f"the NDA key {key!r} (file name without {NDA_SUFFIX}) must be "
                f"a slug: {_SLUG_RULE}",
            )
            continue
        keys.add(key)
        nda = _parse_nda(file, key, path)
        if nda is not None:
            ndas[key] = nda
    return ndas, keys


def _parse_nda(file: _File, key: str, path: Path) -> Nda | None:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        file.error("", f"cannot read: {exc.strerror or exc}")
        return None
    lines = raw.splitlines(keepends=True)
    delimiter = FRONT_MATTER_DELIMITER.encode()
    if not lines or lines[0].removeprefix(_UTF8_BOM).rstrip() != delimiter:
        file.error(
            "front matter",
            f"missing: the file must start with a '{FRONT_MATTER_DELIMITER}' line, then the "
            f"TOML fields {', '.join(_NDA_FIELDS)}, then a closing '{FRONT_MATTER_DELIMITER}' line",
        )
        return None
    close = next((i for i in range(1, len(lines)) if lines[i].rstrip() == delimiter), None)
    if close is None:
        file.error("front matter", f"not closed: no second '{FRONT_MATTER_DELIMITER}' line")
        return None

    front = _File(f"{file.label}: front matter", file.errors)
    data = front.parse_toml(b"".join(lines[1:close]), line_offset=1)
    body = b"".join(lines[close + 1 :])
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        file.error("body", f"not valid UTF-8 (byte {exc.start} of the text)")
        text = None
    if text is not None and not text.strip():
        file.error("body", "the NDA text is empty")
        text = None
    if data is None:
        return None

    front.fields(data, "", _NDA_FIELDS)
    title = front.string(data, "title", "")
    version = front.integer(data, "version", "", minimum=1)
    binding = front.boolean(data, "binding", "")
    summary = front.string(data, "summary", "")
    if text is None or title is None or version is None or binding is None or summary is None:
        return None
    return Nda(
        key=key,
        title=title,
        version=version,
        binding=binding,
        summary=summary,
        text=text,
        text_sha256=hashlib.sha256(body).hexdigest(),
        path=path,
    )


# ---- levels


def _parse_levels(
    file: _File, doc: dict[str, Any], nda_keys: set[str] | None
) -> tuple[tuple[Level, ...] | None, int | None, int | None]:
    file.fields(doc, "", _LEVELS_TOP_FIELDS, optional=_LEVELS_TOP_OPTIONAL)
    global_max = file.integer(doc, "max_attachment_mb", "", minimum=1)
    quota = file.integer(doc, "user_quota_mb", "", minimum=1)
    if global_max is not None and quota is not None and quota < global_max:
        file.error(
            "user_quota_mb",
            f"must be >= max_attachment_mb ({global_max}), or no file of the maximum size "
            f"could ever be uploaded (got {quota})",
        )
    tables = file.tables(doc, "levels")
    if tables is None:
        return None, global_max, quota
    if len(tables) < 2:
        file.error("levels", f"at least 2 levels are required (got {len(tables)})")

    levels: list[Level | None] = []
    first_index: dict[str, int] = {}
    labels: dict[str, int] = {}
    for index, table in enumerate(tables):
        path = f"levels[{index}]"
        file.fields(table, path, _LEVEL_FIELDS, optional=_LEVEL_OPTIONAL_FIELDS)
        key = file.slug(table, "key", path)
        if key is not None:
            if key in first_index:
                file.error(
                    f"{path}.key", f"duplicate level key {key!r} (also levels[{first_index[key]}])"
                )
                key = None
            else:
                first_index[key] = index
        label = file.string(table, "label", path)
        if label is not None:
            if label.casefold() in labels:
                file.error(
                    f"{path}.label",
                    f"duplicate label {label!r} (also levels[{labels[label.casefold()]}])",
                )
            labels.setdefault(label.casefold(), index)
        colour = file.string(table, "colour", path)
        if colour is not None and not _COLOUR_RE.fullmatch(colour):
            file.error(f"{path}.colour", f"must be a colour written #rrggbb (got {colour!r})")
            colour = None
        elif colour is not None and contrast_on_white(colour) < MIN_CONTRAST:
            file.error(f"{path}.colour",
                       f"{colour} has a contrast of {contrast_on_white(colour):.2f}:1 on white; "
                       f"badges and markings need at least {MIN_CONTRAST}:1 (WCAG AA), "
                       "choose a darker colour")
        description = file.string(table, "description", path)
        ndas = file.slug_list(table, "ndas", path)
        if ndas is not None and nda_keys is not None:
            unknown = [nda for nda in ndas if nda not in nda_keys]
            for nda in unknown:
                known = ", ".join(sorted(nda_keys)) or "none"
                file.error(
                    f"{path}.ndas",
                    f"unknown NDA {nda!r}: there is no {NDA_DIR}/{nda}{NDA_SUFFIX} "
                    f"(known NDAs: {known})",
                )
            if unknown:
                ndas = None
        mfa = _mfa_value(file, table, path)
        requires_compartment = file.boolean(table, "requires_compartment", path)
        attachments = file.boolean(table, "attachments", path)
        max_mb = file.integer(table, "max_attachment_mb", path, minimum=0)
        if max_mb is not None and attachments is not None:
            if attachments and max_mb < 1:
                file.error(
                    f"{path}.max_attachment_mb", "must be >= 1 when attachments = true (got 0)"
                )
                max_mb = None
            elif not attachments and max_mb != 0:
                file.error(
                    f"{path}.max_attachment_mb",
                    f"must be 0 when attachments = false (got {max_mb})",
                )
                max_mb = None
        if max_mb is not None and global_max is not None and max_mb > global_max:
            file.error(
                f"{path}.max_attachment_mb",
                f"must not exceed the global max_attachment_mb ({global_max}) (got {max_mb})",
            )
            max_mb = None

        downloads = file.choice(table, "downloads", path, DOWNLOAD_MODES, default="original")
        watermark = file.boolean(table, "watermark", path, default=False)
        renew_days = file.integer(table, "renew_days", path, minimum=0, default=0)
        revet_days = file.integer(table, "revet_days", path, minimum=0, default=0)
        api_tokens = file.boolean(table, "api_tokens", path, default=True)
        if key == PUBLIC_LEVEL:
            for name, value, plain in (("downloads", downloads, "original"),
                                       ("watermark", watermark, False),
                                       ("renew_days", renew_days, 0),
                                       ("revet_days", revet_days, 0)):
                if value is not None and value != plain:
                    file.error(f"{path}.{name}",
                               f"must be {_describe(plain)} for the {PUBLIC_LEVEL!r} level: "
                               f"public content is not marked, renewed or re-vetted "
                               f"(got {_describe(value)})")
                    downloads = None if name == "downloads" else downloads
                    watermark = None if name == "watermark" else watermark

        values = (key, label, colour, description, ndas, mfa, requires_compartment, attachments,
                  downloads, watermark, renew_days, revet_days, api_tokens)
        if any(value is None for value in values) or max_mb is None:
            levels.append(None)
            continue
        assert key is not None and label is not None and colour is not None
        assert description is not None and ndas is not None and mfa is not None
        assert requires_compartment is not None and attachments is not None
        assert downloads is not None and watermark is not None
        assert renew_days is not None and revet_days is not None
        levels.append(
            Level(
                key=key,
                label=label,
                colour=colour.lower(),
                description=description,
                ndas=tuple(ndas),
                mfa=mfa,
                requires_compartment=requires_compartment,
                attachments=attachments,
                max_attachment_mb=max_mb,
                rank=index,
                downloads=downloads,
                watermark=watermark,
                renew_days=renew_days,
                revet_days=revet_days,
                api_tokens=bool(api_tokens),
            )
        )

    if PUBLIC_LEVEL not in first_index:
        file.error(
            "levels",
            f"no level with key {PUBLIC_LEVEL!r}; the app relies on a {PUBLIC_LEVEL!r} "
            "level, which must be the first (lowest) [[levels]] table",
        )
    elif first_index[PUBLIC_LEVEL] != 0:
        file.error(
            f"levels[{first_index[PUBLIC_LEVEL]}].key",
            f"{PUBLIC_LEVEL!r} must be the first (lowest) [[levels]] table; the app relies "
            f"on it (found at levels[{first_index[PUBLIC_LEVEL]}])",
        )

    for index in range(1, len(levels)):
        below, level = levels[index - 1], levels[index]
        if below is None or level is None:
            continue
        dropped = [nda for nda in below.ndas if nda not in level.ndas]
        if dropped:
            file.error(
                f"levels[{index}].ndas",
                f"must include every NDA of the level below ({below.key!r}); missing "
                f"{', '.join(repr(nda) for nda in dropped)} (NDAs are cumulative)",
            )
        if below.mfa and not level.mfa:
            file.error(
                f"levels[{index}].mfa",
                f"must be true: the level below ({below.key!r}) already requires MFA",
            )
        elif below.needs_passkey and not level.needs_passkey:
            file.error(
                f"levels[{index}].mfa",
                f'must be "{MFA_PASSKEY}": the level below ({below.key!r}) already '
                "requires a passkey",
            )
        # Traceability and expiry only get stricter going up, like NDAs and MFA: a
        # reader never keeps a higher level while losing a lower one.
        if DOWNLOAD_MODES.index(level.downloads) < DOWNLOAD_MODES.index(below.downloads):
            file.error(
                f"levels[{index}].downloads",
                f"must be at least as strict as the level below ({below.key!r}: "
                f"{below.downloads!r}); from least to most strict: "
                f"{', '.join(DOWNLOAD_MODES)} (got {level.downloads!r})",
            )
        if below.watermark and not level.watermark:
            file.error(
                f"levels[{index}].watermark",
                f"must be true: the level below ({below.key!r}) already shows a watermark",
            )
        for name in ("renew_days", "revet_days"):
            mine, theirs = getattr(level, name), getattr(below, name)
            if theirs and (not mine or mine > theirs):
                file.error(
                    f"levels[{index}].{name}",
                    f"must be between 1 and {theirs}: the level below ({below.key!r}) "
                    f"already lapses after {theirs} days (got {mine})",
                )

    if any(level is None for level in levels):
        return None, global_max, quota
    return tuple(level for level in levels if level is not None), global_max, quota


# ---- review


def _parse_review(file: _File, doc: dict[str, Any]) -> ReviewPolicy | None:
    file.fields(doc, "", _REVIEW_FIELDS)
    quorum = file.integer(doc, "quorum", "", minimum=1)
    distinct_orgs = file.boolean(doc, "distinct_orgs", "")
    exclude_author_org = file.boolean(doc, "exclude_author_org", "")
    anonymous_reviewers = file.boolean(doc, "anonymous_reviewers", "")
    reject_is_final = file.boolean(doc, "reject_is_final", "")
    risks = file.slug_list(doc, "risks", "")
    if risks is not None and not risks:
        file.error("risks", "must list at least one risk, lowest first")
        risks = None
    blocking_risk = file.string(doc, "blocking_risk", "")
    if blocking_risk is not None and risks is not None and blocking_risk not in risks:
        file.error(
            "blocking_risk",
            f"must be one of risks ({', '.join(risks)}) (got {blocking_risk!r})",
        )
        blocking_risk = None

    rubric: list[RubricItem] | None = None
    tables = file.tables(doc, "rubric")
    if tables is not None:
        rubric = []
        if not tables:
            file.error("rubric", "at least one [[rubric]] question is required")
            rubric = None
        seen: dict[str, int] = {}
        for index, table in enumerate(tables):
            item = _parse_rubric_item(file, table, index, seen)
            if item is None or rubric is None:
                rubric = None
            else:
                rubric.append(item)

    if (
        quorum is None
        or distinct_orgs is None
        or exclude_author_org is None
        or anonymous_reviewers is None
        or reject_is_final is None
        or risks is None
        or blocking_risk is None
        or rubric is None
    ):
        return None
    return ReviewPolicy(
        quorum=quorum,
        distinct_orgs=distinct_orgs,
        exclude_author_org=exclude_author_org,
        anonymous_reviewers=anonymous_reviewers,
        risks=tuple(risks),
        blocking_risk=blocking_risk,
        reject_is_final=reject_is_final,
        rubric=tuple(rubric),
    )


def _parse_rubric_item(
    file: _File, table: dict[str, Any], index: int, seen: dict[str, int]
) -> RubricItem | None:
    path = f"rubric[{index}]"
    file.fields(table, path, _RUBRIC_FIELDS)
    key = file.slug(table, "key", path)
    if key is not None:
        if key in seen:
            file.error(f"{path}.key", f"duplicate rubric key {key!r} (also rubric[{seen[key]}])")
            key = None
        else:
            seen[key] = index
    question = file.string(table, "question", path)
    low = file.any_integer(table, "min", path)
    high = file.any_integer(table, "max", path)
    if low is not None and high is not None and low >= high:
        file.error(f"{path}.max", f"must be greater than min ({low}) (got {high})")
        high = None
    help_text = file.string(table, "help", path)
    if key is None or question is None or low is None or high is None or help_text is None:
        return None
    return RubricItem(key=key, question=question, min=low, max=high, help=help_text)
