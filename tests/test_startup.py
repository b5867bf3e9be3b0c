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
                         keyring_path=tmp_path / "missing.json"))


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
