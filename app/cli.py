"""The ``enclave`` command line (also ``flask --app wsgi enclave ...``).

Refusals print one line on stderr and exit 1 (bad input) or 2 (bad configuration).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn

import click
from flask import Flask, current_app
from flask.cli import AppGroup, ScriptInfo, with_appcontext

from app.errors import ServiceError

enclave = AppGroup("enclave", help="Enclave administration.")


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def service_command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run in the app context; a ServiceError becomes one line on stderr and exit 1."""

    @wraps(func)
    @with_appcontext
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from app.db import db

        try:
            return func(*args, **kwargs)
        except ServiceError as exc:
            db.rollback()
            fail(exc.message)

    return wrapper


@enclave.command("init")
@service_command
def init_cmd() -> None:
    """Create or upgrade the database to the newest migration (idempotent)."""
    from app.migrate import upgrade_to_head

    before, after = upgrade_to_head()
    policy = current_app.extensions["enclave.policy"]
    click.echo(f"database: {before or 'empty'} -> {after}")
    click.echo(f"policy: {len(policy.levels)} levels ({', '.join(policy.level_keys())}), "
               f"{len(policy.ndas)} NDAs, quorum {policy.review.quorum}")


@enclave.command("seed-demo")
@click.option("--if-empty", is_flag=True, help="Do nothing when organizations exist.")
@service_command
def seed_demo_cmd(if_empty: bool) -> None:
    """Demo organizations, users and content; prints the logins."""
    from app.seed import seed_demo

    saved = current_app.extensions["enclave.settings"].instance_path / "demo-logins.txt"
    logins = seed_demo(only_if_empty=if_empty)
    if logins is None:
        click.echo("demo: the database already has data; nothing seeded")
        if saved.exists():
            click.echo(saved.read_text(), nl=False)
        return
    text = "Demo logins (sign in at /login; two-factor secrets go into an authenticator app)\n"
    text += "\n".join(logins) + "\n"
    fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    click.echo(text, nl=False)


@enclave.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@with_appcontext
def run_cmd(host: str, port: int) -> None:
    """Serve with the development server (production: gunicorn wsgi:app)."""
    current_app.run(host=host, port=port, debug=False, use_reloader=False, threaded=True)


# ------------------------------------------------------------------ organizations

org_group = AppGroup("org", help="The whitelist of trusted organizations.")
enclave.add_command(org_group)


@org_group.command("add")
@click.argument("slug")
@click.option("--name", required=True)
@click.option("--domain", "domains", multiple=True, required=True)
@click.option("--ceiling", required=True)
@click.option("--trusted", is_flag=True)
@service_command
def org_add(slug: str, name: str, domains: tuple[str, ...], ceiling: str, trusted: bool) -> None:
    from app.orgs import service

    org = service.add_org(None, slug=slug, name=name, domains=domains, ceiling=ceiling,
                          trusted=trusted)
    click.echo(f"added {org.slug} ({org.status}, ceiling {org.ceiling})")


def _org_status(slug: str, status: str) -> None:
    from app.orgs import service

    org = service.get_org(slug)
    service.set_status(None, org, status)
    click.echo(f"{org.slug} is {org.status}")


@org_group.command("trust")
@click.argument("slug")
@service_command
def org_trust(slug: str) -> None:
    _org_status(slug, "trusted")


@org_group.command("suspend")
@click.argument("slug")
@service_command
def org_suspend(slug: str) -> None:
    _org_status(slug, "suspended")


@org_group.command("ceiling")
@click.argument("slug")
@click.argument("level")
@service_command
def org_ceiling(slug: str, level: str) -> None:
    from app.orgs import service

    org = service.get_org(slug)
    service.set_ceiling(None, org, level)
    click.echo(f"{org.slug} ceiling is {org.ceiling}")


@org_group.command("list")
@service_command
def org_list() -> None:
    from app.orgs import service

    for org in service.list_orgs():
        click.echo(f"{org.slug}\t{org.status}\t{org.ceiling}\t{','.join(org.domain_names)}"
                   f"\t{org.name}")


# ------------------------------------------------------------------ users

user_group = AppGroup("user", help="Accounts.")
enclave.add_command(user_group)


def _get_user(email: str) -> Any:
    from app.auth.service import get_user_by_email

    user = get_user_by_email(email)
    if user is None:
        raise ServiceError(f"no user {email}")
    return user


@user_group.command("add")
@click.argument("email")
@click.option("--org", "org_slug", required=True)
@click.option("--clearance", required=True)
@click.option("--role", default="member", show_default=True,
              type=click.Choice(["member", "reviewer", "org_admin", "admin"]))
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--name", "display_name", default=None, help="Full name.")
@click.option("--username", default=None)
@service_command
def user_add(email: str, org_slug: str, clearance: str, role: str, password_stdin: bool,
             display_name: str | None, username: str | None) -> None:
    """Add a user; without --password-stdin, print an invitation link instead."""
    from app.auth import service
    from app.orgs.service import get_org

    org = get_org(org_slug)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        user = service.create_user(email=email, org=org, clearance=clearance, role=role,
                                   password=password, username=username,
                                   display_name=display_name)
        click.echo(f"added {user.email} ({user.role}, clearance {user.clearance}) to {org.slug}")
        return
    new = service.invite(None, org, email, clearance, role)
    base = current_app.extensions["enclave.settings"].base_url.rstrip("/")
    click.echo(f"invited {new.invitation.email}; the link works once, until "
               f"{new.invitation.expires_at:%Y-%m-%d %H:%M} UTC:")
    click.echo(f"{base}/invite/{new.token}")


@user_group.command("clearance")
@click.argument("email")
@click.argument("level")
@service_command
def user_clearance(email: str, level: str) -> None:
    from app.auth import service

    user = _get_user(email)
    service.set_clearance(None, user, level)
    click.echo(f"{user.email} clearance is {user.clearance}")


@user_group.command("disable")
@click.argument("email")
@service_command
def user_disable(email: str) -> None:
    from app.auth import service

    user = _get_user(email)
    service.set_active(None, user, False)
    click.echo(f"{user.email} disabled; sessions and tokens ended")


@user_group.command("enable")
@click.argument("email")
@service_command
def user_enable(email: str) -> None:
    from app.auth import service

    user = _get_user(email)
    service.set_active(None, user, True)
    click.echo(f"{user.email} enabled")


# ------------------------------------------------------------------ tokens, audit

token_group = AppGroup("token", help="API tokens.")
enclave.add_command(token_group)


@token_group.command("create")
@click.argument("email")
@click.option("--name", default="cli", show_default=True)
@service_command
def token_create(email: str, name: str) -> None:
    """Print a new API token, alone on the last line (shown once, stored hashed)."""
    from app.auth import service

    user = _get_user(email)
    token, plaintext = service.create_token(user, name, actor="cli")
    click.echo(f"token {token.prefix}... for {user.email} ({token.name}); it is shown once:")
    click.echo(plaintext)


audit_group = AppGroup("audit", help="The hash-chained audit log.")
enclave.add_command(audit_group)


@audit_group.command("verify")
@service_command
def audit_verify() -> None:
    from app.audit import verify_chain

    result = verify_chain()
    if not result.ok:
        fail(f"audit chain broken at entry #{result.broken_seq}: {result.reason} "
             f"({result.checked} entries verified before it)")
    click.echo(f"audit chain ok: {result.checked} entries")


def register_cli(app: Flask) -> None:
    app.cli.add_command(enclave)


def main() -> None:
    """Console script: ``enclave ...``."""
    from app import create_app
    from app.config import ConfigError

    def _factory() -> Flask:
        from app.crypto.keyring import KeyringError
        from app.policy import PolicyError

        try:
            return create_app()
        except (ConfigError, PolicyError, KeyringError) as exc:
            fail(str(exc).replace("\n", "; "), 2)

    _ = ConfigError
    enclave.main(obj=ScriptInfo(create_app=_factory), prog_name="enclave")
