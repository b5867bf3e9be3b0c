"""Start-up refuses bad configuration, policies and keyrings with one clear message."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from app.config import ConfigError, load_settings
from app.crypto.keyring import KeyringError
from app.policy import PolicyError

REPO = Path(__file__).resolve().parent.parent


def _base(tmp_path: Path, **extra):  # type: ignore[no-untyped-def]
    return {"instance_path": tmp_path, "keyring_path": tmp_path / "keyring.json",
            "database_url": f"sqlite:///{tmp_path / 'x.db'}", **extra}


def test_development_generates_secret_and_keyring_once(tmp_path):
    app = create_app(_base(tmp_path, env="development", secret_key=None))
    key = (tmp_path / "secret_key").read_text()
    assert len(key) >= 40 and app.secret_key == key
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "keyring.json").stat().st_mode & 0o777) == "0o600"
    again = create_app(_base(tmp_path, env="development", secret_key=None))
    assert again.secret_key == key


@pytest.mark.parametrize("overrides, needle", [
    ({"secret_key": None}, "ENCLAVE_SECRET_KEY"),
    ({"secret_key": "short"}, "ENCLAVE_SECRET_KEY"),
    ({"secret_key": "k" * 40}, "PostgreSQL"),
])
def test_production_refuses_weak_settings(tmp_path, overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_settings(_base(tmp_path, env="production", **overrides))


def test_production_does_not_create_a_keyring(tmp_path, monkeypatch):
    monkeypatch.setenv("ENCLAVE_KEYRING", str(tmp_path / "missing.json"))
    with pytest.raises(KeyringError, match="not found"):
        create_app(_base(tmp_path, env="production", secret_key="k" * 40,
                         database_url="postgresql+psycopg://u@127.0.0.1/db",
                         base_url="https://enclave.example.org", proxy_count=1,
                         redis_url="redis://127.0.0.1:1/0", keyring_path=tmp_path / "missing.json"))


def test_bad_policy_stops_start_up_naming_file_and_field(tmp_path):
    policy = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policy)
    levels = policy / "levels.toml"
    levels.write_text(levels.read_text().replace('mfa = true', 'mfa = "yes"', 1))
    with pytest.raises(PolicyError) as exc:
        create_app(_base(tmp_path, policy_dir=policy))
    assert "levels.toml" in str(exc.value) and "mfa" in str(exc.value)


def test_keyring_missing_a_key_is_named(tmp_path):
    import json

    create_app(_base(tmp_path))
    data = json.loads((tmp_path / "keyring.json").read_text())
    data["kek"]["restricted"]["1"] = "not base64!"
    (tmp_path / "keyring.json").write_text(json.dumps(data))
    with pytest.raises(KeyringError, match="kek restricted v1"):
        create_app(_base(tmp_path))


def test_console_script_prints_one_line_and_exits_2_on_bad_config(tmp_path):
    env = {**os.environ, "ENCLAVE_ENV": "production", "ENCLAVE_INSTANCE_PATH": str(tmp_path)}
    env.pop("ENCLAVE_SECRET_KEY", None)
    result = subprocess.run([sys.executable, "-m", "app.cli_main", "audit", "verify"],
                            env=env, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: production settings refused")


def _production(tmp_path: Path, **extra):  # type: ignore[no-untyped-def]
    keyring = tmp_path / "keyring.json"
    if not keyring.exists():
        keyring.write_text("{}")
        keyring.chmod(0o600)
    settings = {"env": "production", "secret_key": "k" * 40,
                "database_url": "postgresql+psycopg://u@127.0.0.1:1/db",
                "base_url": "https://enclave.example.org", "proxy_count": 1,
                "redis_url": "redis://127.0.0.1:1/0", **extra}
    return _base(tmp_path, **settings)


@pytest.mark.parametrize("missing, needle", [
    ("base_url", "ENCLAVE_BASE_URL"),
    ("proxy_count", "ENCLAVE_PROXY_COUNT"),
    ("redis_url", "ENCLAVE_REDIS_URL"),
])
def test_production_requires_base_url_proxy_count_and_redis(tmp_path, monkeypatch, missing,
                                                            needle):
    for name in ("BASE_URL", "PROXY_COUNT", "REDIS_URL"):
        monkeypatch.delenv(f"ENCLAVE_{name}", raising=False)
    overrides = _production(tmp_path)
    load_settings(overrides)  # complete: accepted
    del overrides[missing]
    with pytest.raises(ConfigError, match=needle):
        load_settings(overrides)
    # the environment counts as well as overrides
    monkeypatch.setenv(f"ENCLAVE_{missing.upper()}",
                       {"base_url": "https://lab.example",
                        "redis_url": "redis://127.0.0.1:1/0"}.get(missing, "0"))
    assert load_settings(overrides).production


@pytest.mark.parametrize("url", ["enclave.example.org", "ftp://enclave.example.org",
                                 "https://", "https://enclave.example.org/?next=x"])
def test_production_refuses_a_base_url_that_is_not_an_absolute_http_url(tmp_path, url):
    with pytest.raises(ConfigError, match="ENCLAVE_BASE_URL"):
        load_settings(_production(tmp_path, base_url=url))


def test_production_refuses_a_short_metrics_token(tmp_path):
    with pytest.raises(ConfigError, match="ENCLAVE_METRICS_TOKEN"):
        load_settings(_production(tmp_path, metrics_token="short"))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_production_refuses_a_keyring_readable_by_group_or_others(tmp_path, mode):
    keyring = tmp_path / "keyring.json"
    keyring.write_text("{}")
    keyring.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_settings(_production(tmp_path))
    keyring.chmod(0o600)
    load_settings(_production(tmp_path))


def test_development_creates_its_folder_0700_and_database_0600(tmp_path):
    instance = tmp_path / "fresh" / "instance"
    create_app(_base(instance, env="development", secret_key=None))
    assert oct(instance.stat().st_mode & 0o777) == "0o700"
    for name in ("secret_key", "keyring.json", "x.db"):
        assert oct((instance / name).stat().st_mode & 0o777) == "0o600", name
    # SQLite gives its journal files the database file's mode
    for extra in instance.glob("x.db-*"):
        assert extra.stat().st_mode & 0o077 == 0, extra.name
