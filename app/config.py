"""Settings from ``ENCLAVE_*`` environment variables, with embedded defaults.

The defaults make ``make run`` work on a fresh machine (SQLite and files in the
instance folder, a development secret key and keyring generated on first run).
Production (``ENCLAVE_ENV=production``) refuses to start without real settings.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A setting is missing or unsafe; start-up stops with this message."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"ENCLAVE_{name}")
    return value if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"ENCLAVE_{name} must be an integer, got {raw!r}") from None


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"ENCLAVE_{name} must be true or false, got {raw!r}")


def _networks(raw: str) -> list[Any]:
    networks = []
    for part in raw.split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"ENCLAVE_METRICS_ALLOW: {part.strip()!r} is not a network") \
                    from None
    return networks


@dataclass
class Settings:
    env: str
    instance_path: Path
    database_url: str
    secret_key: str
    keyring_path: Path
    policy_dir: Path
    redis_url: str | None
    smtp_url: str | None
    base_url: str
    max_form_bytes: int
    session_idle_minutes: int
    session_absolute_hours: int
    invitation_hours: int
    min_password_length: int
    login_limit: str
    api_limit: str
    password_reset_minutes: int
    reset_limit: str
    search_limit: str
    secure_cookies: bool
    proxy_count: int
    max_body_chars: int = 100_000
    #: warning e-mails go this many days before a grant, NDA signature or trust lapses
    expiry_warning_days: int = 14
    metrics_allow: list[Any] = field(default_factory=list)
    #: in production /metrics answers only ``Authorization: Bearer <this>``
    metrics_token: str | None = None
    #: uploads one user may stream at once (the nginx front does not buffer them)
    uploads_per_user: int = 2
    json_logs: bool = False
    #: sign the audit chain's head every this many entries (0: only on demand)
    audit_checkpoint_every: int = 1000
    #: where signed audit checkpoints are appended (default: the instance folder)
    audit_checkpoint_file: Path | None = None
    #: failed sign-ins per account from addresses it never signed in from (all of them)
    login_account_limit: str = "20 per hour;50 per day"
    generated: list[str] = field(default_factory=list)
    #: the settings given explicitly (environment or overrides), not defaulted
    explicit: frozenset[str] = frozenset()

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(overrides: dict[str, object] | None = None) -> Settings:
    """Read the environment; apply ``overrides`` (used by tests); validate."""
    env = (_env("ENV", "development") or "development").lower()
    if env not in {"development", "production", "test"}:
        raise ConfigError(f"ENCLAVE_ENV must be development, test or production, got {env!r}")
    instance_path = Path(_env("INSTANCE_PATH", str(REPO_ROOT / "instance"))).resolve()
    values: dict[str, object] = {
        "env": env,
        "instance_path": instance_path,
        "database_url": _env("DATABASE_URL", f"sqlite:///{instance_path / 'enclave.db'}"),
        "secret_key": _env("SECRET_KEY"),
        "keyring_path": Path(_env("KEYRING", str(instance_path / "keyring.json"))),
        "policy_dir": Path(_env("POLICY_DIR", str(REPO_ROOT / "policies"))).resolve(),
        "redis_url": _env("REDIS_URL"),
        "smtp_url": _env("SMTP_URL"),
        "base_url": _env("BASE_URL", "http://127.0.0.1:5000"),
        "max_form_bytes": _env_int("MAX_FORM_BYTES", 2 * 1024 * 1024),
        "session_idle_minutes": _env_int("SESSION_IDLE_MINUTES", 120),
        "session_absolute_hours": _env_int("SESSION_ABSOLUTE_HOURS", 24),
        "invitation_hours": _env_int("INVITATION_HOURS", 72),
        "min_password_length": _env_int("MIN_PASSWORD_LENGTH", 12),
        "login_limit": _env("LOGIN_LIMIT", "10 per minute;50 per hour"),
        "login_account_limit": _env("LOGIN_ACCOUNT_LIMIT", "20 per hour;50 per day"),
        "api_limit": _env("API_LIMIT", "600 per minute"),
        "password_reset_minutes": _env_int("PASSWORD_RESET_MINUTES", 60),
        # per client address and per e-mail address: a reset request sends e-mail
        "reset_limit": _env("RESET_LIMIT", "5 per hour"),
        # per signed-in user (API: per token's user), else per address
        "search_limit": _env("SEARCH_LIMIT", "30 per minute"),
        "secure_cookies": _env_bool("SECURE_COOKIES", env == "production"),
        "proxy_count": _env_int("PROXY_COUNT", 0),
        "max_body_chars": _env_int("MAX_BODY_CHARS", 100_000),
        "expiry_warning_days": _env_int("EXPIRY_WARNING_DAYS", 14),
        "metrics_allow": _networks(_env("METRICS_ALLOW", "127.0.0.1/32,::1/128") or ""),
        "json_logs": _env_bool("LOG_JSON", env == "production"),
        "metrics_token": _env("METRICS_TOKEN"),
        "uploads_per_user": _env_int("UPLOADS_PER_USER", 2),
        "audit_checkpoint_every": _env_int("AUDIT_CHECKPOINT_EVERY", 1000),
        "audit_checkpoint_file": (Path(checkpoints) if (checkpoints := _env(
            "AUDIT_CHECKPOINT_FILE")) else None),  # default: in the instance folder
    }
    explicit = {name for name in ("BASE_URL", "PROXY_COUNT") if _env(name) is not None}
    if overrides:
        values.update(overrides)
        explicit |= {name.upper() for name in overrides}
    values["explicit"] = frozenset(explicit)
    settings = Settings(**values)  # type: ignore[arg-type]
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    if settings.production:
        problems = []
        if not settings.secret_key or len(settings.secret_key) < 32:
            problems.append("ENCLAVE_SECRET_KEY must be set to at least 32 random characters")
        if settings.is_sqlite:
            problems.append("ENCLAVE_DATABASE_URL must point to PostgreSQL, not SQLite")
        if not _env("KEYRING") and not settings.keyring_path.exists():
            problems.append(
                "ENCLAVE_KEYRING must name an existing keyring file")
        if "BASE_URL" not in settings.explicit or not _absolute_http(settings.base_url):
            problems.append("ENCLAVE_BASE_URL must be set to the site's public URL "
                            "(https://host[/prefix]): every absolute link is built from it")
        if "PROXY_COUNT" not in settings.explicit:
            problems.append("ENCLAVE_PROXY_COUNT must be set: the number of trusted proxies "
                            "in front (1 behind one nginx; 0 only if clients connect directly)")
        if not settings.redis_url:
            problems.append("ENCLAVE_REDIS_URL must be set: without Redis each worker keeps "
                            "its own rate-limit counters (a limit of 10 becomes 10 per worker "
                            "and process)")
        if settings.metrics_token is not None and len(settings.metrics_token) < 32:
            problems.append("ENCLAVE_METRICS_TOKEN must be at least 32 random characters")
        if settings.keyring_path.exists() and settings.keyring_path.stat().st_mode & 0o077:
            problems.append(f"the keyring file {settings.keyring_path} is readable or "
                            "writable by group or others: chmod 600 it")
        if problems:
            raise ConfigError("production settings refused: " + "; ".join(problems))
    if settings.audit_checkpoint_every < 0:
        raise ConfigError("ENCLAVE_AUDIT_CHECKPOINT_EVERY must be 0 (off) or more")
    if settings.audit_checkpoint_file is None:
        settings.audit_checkpoint_file = settings.instance_path / "audit-checkpoints.jsonl"
    if not 1 <= settings.uploads_per_user <= 100:
        raise ConfigError("ENCLAVE_UPLOADS_PER_USER must be between 1 and 100")
    if settings.proxy_count < 0:
        raise ConfigError("ENCLAVE_PROXY_COUNT must be 0 or more")
    if settings.password_reset_minutes < 1:
        raise ConfigError("ENCLAVE_PASSWORD_RESET_MINUTES must be at least 1")
    if not 1 <= settings.expiry_warning_days <= 365:
        raise ConfigError("ENCLAVE_EXPIRY_WARNING_DAYS must be between 1 and 365")
    if settings.min_password_length < 8:
        raise ConfigError("ENCLAVE_MIN_PASSWORD_LENGTH must be at least 8")


def _absolute_http(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme in {"http", "https"} and bool(parts.hostname) \
        and not parts.query and not parts.fragment


def keyring_unsealer() -> Any:
    """Where a sealed keyring's passphrase comes from, by preference: an operator command
    (``ENCLAVE_KEYRING_COMMAND``, e.g. a secrets manager's CLI or ``systemd-creds``
    unsealing from the TPM; its standard output is the passphrase), a file
    (``ENCLAVE_KEYRING_PASSPHRASE_FILE``, e.g. a systemd credential), or the environment
    (``ENCLAVE_KEYRING_PASSPHRASE``). None when nothing is configured."""
    import shlex
    import subprocess

    command = _env("KEYRING_COMMAND")
    path = _env("KEYRING_PASSPHRASE_FILE")
    if command:
        argv = shlex.split(command)

        def run_command() -> bytes:
            from app.crypto.keyring import KeyringError

            try:
                done = subprocess.run(argv, capture_output=True, timeout=60, check=False)  # noqa: S603
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise KeyringError(f"ENCLAVE_KEYRING_COMMAND did not run: "
                                   f"{type(exc).__name__}") from None
            if done.returncode != 0:  # its output is never shown: it may be the secret
                raise KeyringError(f"ENCLAVE_KEYRING_COMMAND failed (exit {done.returncode})")
            return done.stdout.rstrip(b"\r\n")

        return run_command
    if path:
        def read_file() -> bytes:
            from app.crypto.keyring import KeyringError

            try:
                return Path(path).read_bytes().rstrip(b"\r\n")
            except OSError as exc:
                raise KeyringError(f"ENCLAVE_KEYRING_PASSPHRASE_FILE: {exc.strerror}") \
                    from None

        return read_file
    passphrase = os.environ.get("ENCLAVE_KEYRING_PASSPHRASE")
    if passphrase:
        return lambda: passphrase.encode("utf-8")
    return None


def prepare_instance(settings: Settings) -> None:
    """Create the instance folder (0700) and, outside production, the SQLite database
    file (0600) before anything writes there, so that neither the secret key, the
    keyring nor the database is ever readable by other local users."""
    path = settings.instance_path
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        path.chmod(0o700)  # mkdir's mode is filtered by the umask
    if settings.production or not settings.is_sqlite:
        return
    from sqlalchemy.engine import make_url

    name = make_url(settings.database_url).database
    if name and name != ":memory:" and not name.startswith("file:"):
        db_file = Path(name)
        with contextlib.suppress(FileExistsError):
            db_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(db_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def ensure_dev_secret(settings: Settings) -> None:
    """Outside production, create (once) and reuse a secret key in the instance folder."""
    if settings.secret_key:
        return
    if settings.production:  # pragma: no cover - _validate already refused
        raise ConfigError("ENCLAVE_SECRET_KEY is required in production")
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    path = settings.instance_path / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
        log.warning(
            "generated a development secret key in %s; production must set ENCLAVE_SECRET_KEY",
            path,
        )
        settings.generated.append("secret_key")
    settings.secret_key = path.read_text().strip()
