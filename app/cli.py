"""The ``enclave`` command line (also ``flask --app wsgi enclave ...``).

Refusals print one line on stderr and exit 1 (bad input) or 2 (bad configuration).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
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
    _encrypt_content()
    from app import audit

    older = audit.ensure_keyed_head()
    if older:
        click.echo(f"audit log: {older} entries from before the keyed chain, linked from "
                   "the first keyed entry; run `enclave audit checkpoint` and keep the file")
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


@org_group.command("sso")
@click.argument("slug")
@click.option("--issuer", required=True, help="The provider's issuer URL (https).")
@click.option("--client-id", required=True)
@click.option("--client-secret-stdin", is_flag=True,
              help="Read the client secret from standard input (never an argument).")
@click.option("--no-passwords", is_flag=True,
              help="Members sign in only through the provider.")
@click.option("--group-clearance", "group_clearances", multiple=True, metavar="GROUP=LEVEL",
              help="Clearance follows this provider group (repeatable).")
@click.option("--allow-group", "allow_groups", multiple=True, metavar="GROUP",
              help="Admit members of this group without an invitation (repeatable).")
@click.option("--remove", is_flag=True, help="Turn single sign-on off for SLUG.")
@service_command
def org_sso(slug: str, issuer: str, client_id: str, client_secret_stdin: bool,
            no_passwords: bool, group_clearances: tuple[str, ...],
            allow_groups: tuple[str, ...], remove: bool) -> None:
    """Set SLUG's OpenID provider (single sign-on)."""
    from app.orgs import service
    from app.sso import service as sso

    org = service.get_org(slug)
    if remove:
        sso.remove(None, org)
        click.echo(f"{org.slug}: single sign-on removed; members sign in with passwords")
        return
    secret = sys.stdin.read().strip() if client_secret_stdin else None
    if client_secret_stdin and not secret:
        fail("no client secret on standard input")
    mapping = {}
    for item in group_clearances:
        group, sep, level = item.rpartition("=")
        if not sep or not group:
            fail(f"--group-clearance takes GROUP=LEVEL (got {item!r})")
        mapping[group] = level
    config = sso.configure(None, org, issuer=issuer, client_id=client_id,
                           client_secret_value=secret, passwords_allowed=not no_passwords,
                           clearances=mapping if group_clearances else None,
                           allow_groups=list(allow_groups) if allow_groups else None)
    click.echo(f"{org.slug}: single sign-on through {config.issuer} "
               f"(passwords {'allowed' if config.passwords_allowed else 'off'}); "
               f"register the redirect URI {sso.redirect_uri()} and the back-channel "
               f"logout URI {sso.backchannel_uri()}")


@org_group.command("scim-token")
@click.argument("slug")
@service_command
def org_scim_token(slug: str) -> None:
    """Print a new SCIM bearer token for SLUG, alone on the last line (shown once; the
    organization's earlier token stops working)."""
    from app.orgs import service
    from app.scim.service import new_token

    org = service.get_org(slug)
    plaintext = new_token(org)
    click.echo(f"SCIM token for {org.slug} (base URL <site>/scim/v2/{org.slug}); "
               "earlier tokens are revoked; it is shown once:")
    click.echo(plaintext)
@org_group.command("renew")
@click.argument("slug")
@service_command
def org_renew(slug: str) -> None:
    """Record that an admin re-vetted SLUG: its trust runs for another revet_days."""
    from app.orgs import service

    org = service.get_org(slug)
    service.renew_trust(None, org)
    lapse = service.trust_lapse(org)
    until = (f"; next re-vetting due {lapse.at:%Y-%m-%d %H:%M} UTC ({lapse.label})"
             if lapse else "; no level asks for re-vetting")
    click.echo(f"{org.slug} re-vetted{until}")


@org_group.command("list")
@service_command
def org_list() -> None:
    from app.orgs import service

    for org in service.list_orgs():
        click.echo(f"{org.slug}\t{org.status}\t{org.ceiling}\t{','.join(org.domain_names)}"
                   f"\t{org.name}")


# ------------------------------------------------------------------ expiry

expiry_group = AppGroup("expiry", help="Grants that lapse: clearance end dates, NDA "
                                       "renewal, organizations' re-vetting.")
enclave.add_command(expiry_group)


@expiry_group.command("list")
@click.option("--days", type=click.IntRange(0, 3650), default=None,
              help="How far ahead to look (default: ENCLAVE_EXPIRY_WARNING_DAYS).")
@service_command
def expiry_list(days: int | None) -> None:
    """What lapses within DAYS: one line each (time, kind, who, what)."""
    from app.expiry import service

    for lapse in service.upcoming(days):
        click.echo(f"{lapse.lapses_at:%Y-%m-%d %H:%M} UTC\t{lapse.kind}\t{lapse.subject}"
                   f"\t{lapse.what}")


@expiry_group.command("warn")
@click.option("--dry-run", is_flag=True, help="Say what would be sent; send nothing.")
@service_command
def expiry_warn(dry_run: bool) -> None:
    """E-mail a warning for each grant lapsing within ENCLAVE_EXPIRY_WARNING_DAYS, once.
    Run it daily (cron or a systemd timer)."""
    from app.expiry import service

    sent = service.send_warnings(dry_run=dry_run)
    verb = "would warn" if dry_run else "warned"
    for lapse in sent:
        click.echo(f"{verb}: {lapse.what} lapses {lapse.lapses_at:%Y-%m-%d %H:%M} UTC "
                   f"({len(lapse.recipients)} recipient(s))")
    click.echo(f"{len(sent)} warning(s) {'to send' if dry_run else 'sent'}")


# ------------------------------------------------------------------ tracing


@enclave.command("trace")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--code", default=None, help="A copy code read off the file by a person "
                                           "(e.g. from a photo of a screen).")
@service_command
def trace_cmd(file: str | None, code: str | None) -> None:
    """Which recorded copy FILE (a leaked file) came from: exit 0 when one copy is
    identified, 3 when it cannot tell."""
    from pathlib import Path

    from app.traceability import service

    if bool(file) == bool(code):
        fail("give a FILE or --code (one of them)", 2)
    if file:
        path = Path(file)
        if not path.is_file():
            fail(f"no such file: {file}", 2)
        result = service.trace_file(path)
        service.audit_trace(None, result, f"cli {path.name[:80]}")
    else:
        result = service.trace_code(code or "")
        service.audit_trace(None, result, "cli code")
    for found in result.found:
        copy = found.copy
        owner = (f"copy {copy.code} for {service.describe_reader(copy.user)}, "
                 f"{copy.created_at:%Y-%m-%d %H:%M:%S} UTC from {copy.ip or 'unknown address'}"
                 f" (attachment {copy.attachment_id}, finding #{copy.finding_id}, "
                 f"{copy.kind})" if copy else "no such copy recorded")
        click.echo(f"{found.how}: {found.value} -> {owner}")
    click.echo(result.verdict())
    if result.identified is None:
        sys.exit(3)


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
    from app.links import external_url
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
    click.echo(f"invited {new.invitation.email}; the link works once, until "
               f"{new.invitation.expires_at:%Y-%m-%d %H:%M} UTC:")
    click.echo(external_url("auth.accept_invitation", token=new.token))


@user_group.command("clearance")
@click.argument("email")
@click.argument("level")
@click.option("--until", "until_text", default=None, metavar="YYYY-MM-DD",
              help="Last day the grant holds (UTC); without it the grant has no end date.")
@service_command
def user_clearance(email: str, level: str, until_text: str | None) -> None:
    """Grant LEVEL to EMAIL, replacing the previous grant (and its end date)."""
    from app.auth import service

    user = _get_user(email)
    until = service.parse_until(until_text)
    service.set_clearance(None, user, level, until=until)
    ends = f" until {until.isoformat()} (lapses {service.grant_end(until):%Y-%m-%d %H:%M} UTC)" \
        if until else " (no end date)"
    click.echo(f"{user.email} clearance is {user.clearance}{ends}")


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


@user_group.command("openpgp-key")
@click.argument("email")
@click.argument("file", type=click.File("r"))
@service_command
def user_openpgp_key(email: str, file: Any) -> None:
    """Store EMAIL's OpenPGP public key from FILE ("-": standard input; an empty file
    removes it)."""
    from app.notifications import openpgp

    user = _get_user(email)
    info = openpgp.set_key("cli", user, file.read())
    if info is None:
        click.echo(f"{user.email}: OpenPGP key removed")
    else:
        expires = f"expires {info.expires_at:%Y-%m-%d}" if info.expires_at else "no expiry"
        click.echo(f"{user.email}: OpenPGP key {info.fingerprint} ({expires})")


# ------------------------------------------------------------------ tokens, audit

token_group = AppGroup("token", help="API tokens.")
enclave.add_command(token_group)


@token_group.command("create")
@click.argument("email")
@click.option("--name", default="cli", show_default=True)
@click.option("--scope", "scopes", multiple=True,
              type=click.Choice(["read", "write", "review", "admin"]),
              help="What it may do (repeat; default: read). Never beyond the user's role.")
@click.option("--expires-days", "days", type=int, default=None,
              help="Lifetime in days (default and maximum from the policy).")
@service_command
def token_create(email: str, name: str, scopes: tuple[str, ...], days: int | None) -> None:
    """Print a new API token, alone on the last line (shown once, stored hashed)."""
    from app.auth import tokens

    user = _get_user(email)
    token, plaintext = tokens.create_token(user, name, actor="cli", proof="operator",
                                            scopes=list(scopes) or ["read"], days=days)
    click.echo(f"token {token.prefix}... for {user.email} ({token.name}; {token.scopes}; "
               f"expires {token.expires_at:%Y-%m-%d %H:%M} UTC); it is shown once:")
    click.echo(plaintext)


audit_group = AppGroup("audit", help="The hash-chained audit log.")
enclave.add_command(audit_group)


@audit_group.command("verify")
@click.option("--checkpoints", "checkpoint_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file of signed checkpoints (as `audit checkpoint` writes them) to "
                   "check against the log; may be given more than once.")
@service_command
def audit_verify(checkpoint_files: tuple[Path, ...]) -> None:
    """Check the keyed hash chain, then every checkpoint given."""
    from app import audit_checkpoints
    from app.audit import verify_chain

    result = verify_chain()
    if not result.ok:
        fail(f"audit chain broken at entry #{result.broken_seq}: {result.reason} "
             f"({result.checked} entries verified before it)")
    older = (f" ({result.legacy} from before the chain was keyed, vouched for by the "
             "first keyed entry)") if result.legacy else ""
    click.echo(f"audit chain ok: {result.checked} entries{older}")
    if not checkpoint_files:
        return
    try:
        given = [cp for path in checkpoint_files for cp in audit_checkpoints.load(path)]
    except audit_checkpoints.CheckpointError as exc:
        fail(str(exc))
    checked = audit_checkpoints.verify_checkpoints(given)
    if not checked.ok:
        fail(f"audit checkpoint refused: {checked.reason}")
    click.echo(f"{checked.checked} checkpoint(s) ok, the newest at entry "
               f"#{checked.newest_seq}")


@audit_group.command("checkpoint")
@click.option("--file", "path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Append to this file (default: ENCLAVE_AUDIT_CHECKPOINT_FILE).")
@service_command
def audit_checkpoint(path: Path | None) -> None:
    """Sign the audit chain's head with the keyring's Ed25519 key; append it to the
    checkpoint file and the log (keep a copy elsewhere)."""
    import json

    from app import audit_checkpoints
    from app.db import db

    cp, written = audit_checkpoints.checkpoint_now(db(), path)
    click.echo(f"checkpoint of entry #{cp['seq']} appended to {written}")
    click.echo(json.dumps(cp, sort_keys=True))


# ------------------------------------------------------------------ keys, storage

keys_group = AppGroup("keys", help="Key-encryption keys of the attachments.")
enclave.add_command(keys_group)


@keys_group.command("rotate")
@click.option("--resume", is_flag=True,
              help="Add no new key versions; only rewrap data keys not yet under the "
                   "active ones (finishes an interrupted rotation).")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--max-batches", default=None, type=click.IntRange(1),
              help="Stop after this many batches (continue later with --resume).")
@service_command
def keys_rotate(resume: bool, batch_size: int, max_batches: int | None) -> None:
    """Add a new KEK version per level and rewrap every data key under it (blobs are
    not touched). Safe to run again after a crash."""
    import time

    from app.attachments.service import rotate_keys

    started = time.monotonic()
    report = rotate_keys(add_versions=not resume, batch_size=batch_size,
                         max_batches=max_batches)
    if report.new_versions:
        click.echo("new active keys: " + ", ".join(
            f"kek {level} v{version}" for level, version in sorted(report.new_versions.items())))
    click.echo(f"attachments: {report.live} live, {report.rewrapped} rewrapped, "
               f"{report.already_current} already current, {report.changed_meanwhile} "
               f"changed meanwhile, {len(report.failed)} failed, {report.remaining} remaining "
               f"({report.batches} batches, {time.monotonic() - started:.1f}s)")
    if report.failed:
        fail(f"{len(report.failed)} wrapped key(s) did not open (audit-logged), e.g. "
             f"attachment {report.failed[0]}")
    if report.remaining:
        click.echo("run `enclave keys rotate --resume` to rewrap the rest")
        return
    from app.content import service as content

    if report.new_versions:
        content.start_rotation()
    if content.rotation_pending():
        click.echo("re-encrypting stored text and the search index under the new keys")
        left = None if max_batches is None else max(1, max_batches - report.batches)
        job = content.run(content.ROTATE, batch_size=batch_size, max_batches=left,
                          progress=_echo_progress)
        click.echo(f"content: {job.changed} values re-encrypted in {job.rows} rows"
                   + (f"; not finished: {', '.join(job.remaining)}" if job.remaining
                      else ""))
        if job.remaining:
            click.echo("run `enclave keys rotate --resume` to re-encrypt the rest")
            return
    click.echo("every attachment key and stored text is under the active keys; old "
               "versions can be retired (`enclave keys retire LEVEL VERSION`)")


def _read_passphrase(stdin: bool) -> bytes:
    if stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        value = click.prompt("Passphrase", hide_input=True, confirmation_prompt=True)
    if len(value) < 16:
        fail("a keyring passphrase has at least 16 characters")
    return value.encode("utf-8")


@keys_group.command("seal")
@click.option("--passphrase-stdin", is_flag=True, help="Read the passphrase from stdin.")
@service_command
def keys_seal(passphrase_stdin: bool) -> None:
    """Seal the keyring file with a passphrase (Argon2id + AES-256-GCM); the app then
    needs ENCLAVE_KEYRING_PASSPHRASE_FILE, ENCLAVE_KEYRING_COMMAND or
    ENCLAVE_KEYRING_PASSPHRASE to start. Also changes the passphrase of a sealed one."""
    from app import state
    from app.crypto.keyring import Keyring, KeyringError, configure_unsealer, keyring_lock

    passphrase = _read_passphrase(passphrase_stdin)
    path = state.settings().keyring_path
    try:
        with keyring_lock(path):
            ring = Keyring.load(path)
            ring.seal_with(passphrase)
            ring.save(path)
    except KeyringError as exc:
        fail(str(exc))
    configure_unsealer(lambda: passphrase)
    click.echo(f"sealed {path}; keep the passphrase apart from it (a secrets manager, the "
               "TPM through ENCLAVE_KEYRING_COMMAND, or a credential file)")


@keys_group.command("unseal")
@service_command
def keys_unseal() -> None:
    """Store the keyring file unsealed again (development only)."""
    from app import state
    from app.crypto.keyring import Keyring, KeyringError, keyring_lock

    if state.settings().production:
        fail("production keeps its keyring sealed")
    path = state.settings().keyring_path
    try:
        with keyring_lock(path):
            ring = Keyring.load(path)
            ring.seal_with(None)
            ring.save(path)
    except KeyringError as exc:
        fail(str(exc))
    click.echo(f"unsealed {path}: whoever reads the file has every key")


@keys_group.command("retire")
@click.argument("level")
@click.argument("version", type=click.IntRange(1))
@service_command
def keys_retire(level: str, version: int) -> None:
    """Remove an old key version from the keyring once nothing uses it."""
    from sqlalchemy import func, select

    from app import audit, state
    from app.attachments.models import Attachment
    from app.attachments.service import _install_keyring
    from app.content import service as content
    from app.crypto.keyring import Keyring, KeyringError, keyring_lock
    from app.db import db

    if content.rotation_pending():
        fail("a content rotation is not finished; run `enclave keys rotate --resume` first")
    used = db.scalar(select(func.count()).select_from(Attachment).where(
        Attachment.kek_level == level, Attachment.kek_version == version,
        Attachment.wrapped_key.is_not(None))) or 0
    if used:
        fail(f"{used} attachment key(s) are still wrapped under kek {level} v{version}")
    path = state.settings().keyring_path
    try:
        with keyring_lock(path):
            ring = Keyring.load(path)
            ring.retire(level, version)
            ring.save(path)
    except KeyringError as exc:
        fail(str(exc))
    _install_keyring(ring)
    audit.record("key_retired", actor="cli", target_type="keyring", level=level,
                 version=version)
    db.commit()
    click.echo(f"retired kek {level} v{version}")


content_group = AppGroup("content", help="Stored text encrypted at rest.")
enclave.add_command(content_group)


def _echo_progress(table: str, rows: int, changed: int) -> None:
    click.echo(f"  {table}: {rows} rows, {changed} values")


def _encrypt_content(batch_size: int = 500, max_batches: int | None = None) -> bool:
    """Seal what a migration left as plaintext; True when nothing is left."""
    from app.content import service as content

    if not content.legacy_pending():
        return True
    click.echo("encrypting stored text (resumable: `enclave content encrypt`)")
    report = content.run(content.ENCRYPT, batch_size=batch_size, max_batches=max_batches,
                         progress=_echo_progress)
    click.echo(f"content: {report.changed} values encrypted in {report.rows} rows"
               + (f"; not finished: {', '.join(report.remaining)}" if report.remaining
                  else ""))
    return not report.remaining


@content_group.command("encrypt")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1))
@click.option("--max-batches", default=None, type=click.IntRange(1),
              help="Stop after this many batches (run again to continue).")
@service_command
def content_encrypt(batch_size: int, max_batches: int | None) -> None:
    """Encrypt the rows a migration left as plaintext and build their search index
    (resumable; `enclave init` runs it)."""
    if _encrypt_content(batch_size, max_batches):
        click.echo("content: everything is encrypted")


@enclave.command("backup")
@click.argument("args", nargs=-1, required=True, metavar="[verify] DIR")
@service_command
def backup_cmd(args: tuple[str, ...]) -> None:
    """Write an encrypted, consistent backup with a signed manifest into DIR (the site
    keeps running); ``enclave backup verify DIR`` checks one."""
    from app import backup

    if len(args) == 2 and args[0] == "verify":
        report = backup.verify(Path(args[1]))
        click.echo(f"backup {report.manifest['backup_id']} of "
                   f"{report.manifest['created_at']}: signature, {report.files} files and "
                   "the database dump verified")
        return
    if len(args) != 1 or args[0] == "verify":
        fail("usage: enclave backup DIR | enclave backup verify DIR", 2)
    report = backup.create(Path(args[0]), progress=click.echo)
    click.echo("backup: " + ", ".join(f"{v} {k}" for k, v in report.counts.items())
               + f" in {args[0]}")


@enclave.command("restore")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@service_command
def restore_cmd(directory: str) -> None:
    """Restore a backup into this empty instance (database and blobs), then check the
    audit chain."""
    from app import audit, backup

    manifest = backup.restore(Path(directory), progress=click.echo)
    result = audit.verify_chain()
    click.echo(f"restored {manifest['counts']}; audit chain: "
               + ("ok" if result.ok else f"BROKEN at #{result.broken_seq}: {result.reason}"))
    if not result.ok:
        fail("the restored audit chain does not verify")


storage_group = AppGroup("storage", help="The attachment blob store.")
enclave.add_command(storage_group)


@storage_group.command("gc")
@click.option("--min-age-hours", default=24.0, show_default=True, type=click.FloatRange(0),
              help="Leave blobs and temp files younger than this (uploads in progress).")
@click.option("--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@service_command
def storage_gc(min_age_hours: float, dry_run: bool) -> None:
    """Remove blobs no attachment references (interrupted uploads, shredded files) and
    stale temp files."""
    from app.attachments.service import gc_blobs

    report = gc_blobs(min_age_seconds=min_age_hours * 3600, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(report.deleted_blobs)} unreferenced blob(s) and "
               f"{len(report.deleted_temp)} temp file(s); kept {report.kept_referenced} "
               f"referenced, {report.skipped_recent} younger than {min_age_hours:g}h")
    for blob_id in report.deleted_blobs:
        click.echo(f"  blob {blob_id}")
    for name in report.deleted_temp:
        click.echo(f"  temp {name}")
    if report.errors:
        fail("; ".join(report.errors))


forms_group = AppGroup("forms", help="One-time form submission tokens.")
enclave.add_command(forms_group)


@forms_group.command("prune")
@click.option("--older-than-hours", default=24.0, show_default=True,
              type=click.FloatRange(min=1), help="Remove tokens older than this.")
@service_command
def forms_prune(older_than_hours: float) -> None:
    """Remove old one-time form tokens (a replay after that creates again)."""
    from datetime import timedelta

    from app.submissions.service import prune

    removed = prune(timedelta(hours=older_than_hours))
    click.echo(f"removed {removed} form submission token(s) older than {older_than_hours:g}h")


# ------------------------------------------------------------------ review, public export

review_group = AppGroup("review", help="Dual-use review: affiliations, queue, decisions.")
enclave.add_command(review_group)


@review_group.command("affiliate")
@click.argument("org_a")
@click.argument("org_b")
@click.option("--note", default="", help="Why they are affiliated (e.g. parent company).")
@service_command
def review_affiliate(org_a: str, org_b: str, note: str) -> None:
    """Declare two organizations affiliated: they never review each other's findings."""
    from app.review import flags

    row = flags.add_affiliation(None, org_a, org_b, note)
    click.echo(f"affiliated {row.org_a.slug} and {row.org_b.slug}")


@review_group.command("unaffiliate")
@click.argument("org_a")
@click.argument("org_b")
@service_command
def review_unaffiliate(org_a: str, org_b: str) -> None:
    from app.review import flags

    flags.remove_affiliation(None, flags.find_affiliation(org_a, org_b).id)
    click.echo(f"{org_a} and {org_b} are no longer affiliated")


@review_group.command("affiliations")
@service_command
def review_affiliations() -> None:
    from app.review import flags

    for row in flags.list_affiliations():
        click.echo(f"{row.org_a.slug}\t{row.org_b.slug}\t{row.note}")


@review_group.command("queue")
@click.argument("email")
@service_command
def review_queue(email: str) -> None:
    """What EMAIL may review, waiting longest first (the same rule as the web and API)."""
    from app.review import service

    page = service.queue(_get_user(email), {"per_page": "100"})
    for item in page.items:
        ident = item.request.id if item.request else item.flag.id  # type: ignore[union-attr]
        what = item.request.kind if item.request else "flag"
        pin = (f"\tround {item.request.round}\tpin {item.request.content_sha256}"
               if item.request else "")
        click.echo(f"{item.since:%Y-%m-%d %H:%M}\t{item.kind}\t{ident}\t{what}\t"
                   f"finding {item.finding.id}{pin}")
    click.echo(f"{page.total} item(s)")


@review_group.command("decide")
@click.argument("request_id", type=int)
@click.option("--as", "email", required=True, help="The reviewer's e-mail.")
@click.option("--decision", required=True, type=click.Choice(["approve", "changes", "reject"]))
@click.option("--risk", required=True)
@click.option("--score", "scores", multiple=True, metavar="KEY=N",
              help="One per rubric question of review.toml.")
@click.option("--comment", default="")
@click.option("--content-sha256", "pin_sha", required=True,
              help="The pin of the version you read (`review queue` shows it).")
@click.option("--round", "pin_round", required=True, type=int,
              help="The review round of the version you read.")
@service_command
def review_decide(request_id: int, email: str, decision: str, risk: str,
                  scores: tuple[str, ...], comment: str, pin_sha: str, pin_round: int) -> None:
    """Record a review as EMAIL (all conflict-of-interest rules apply), for the version
    named by --content-sha256 and --round (refused when the request changed since)."""
    from app.review import pins, service

    parsed: dict[str, object] = {}
    for item in scores:
        key, sep, value = item.partition("=")
        if not sep:
            raise ServiceError(f"--score takes KEY=N (got {item!r})")
        parsed[key.strip()] = value.strip()
    user = _get_user(email)
    req = service.request_for_review(user, request_id)
    service.add_review(user, req, seen=pins.parse(pin_sha, pin_round), decision=decision,
                       risk=risk, scores=parsed, comment=comment)
    click.echo(f"request {req.id}: review recorded; state {req.state}")


@review_group.command("release")
@click.argument("request_id", type=int)
@click.option("--as", "email", required=True, help="An administrator's e-mail.")
@click.option("--content-sha256", "pin_sha", required=True,
              help="The pin of the version you approve for release.")
@click.option("--round", "pin_round", required=True, type=int,
              help="The review round of that version.")
@service_command
def review_release(request_id: int, email: str, pin_sha: str, pin_round: int) -> None:
    """Release an approved publication request (or apply a declassification), for the
    version named by --content-sha256 and --round."""
    from app.review import pins, service

    user = _get_user(email)
    req = service.release(user, service.get_request(user, request_id),
                          seen=pins.parse(pin_sha, pin_round))
    click.echo(f"request {req.id}: {req.state}")


@enclave.command("export")
@click.argument("args", nargs=-1, required=True, metavar="[verify] OUT_DIR")
@click.option("--public-key", default=None,
              help="verify: the expected Ed25519 public key (base64, or a file holding it). "
                   "Default: public-key.txt in the folder itself.")
@click.option("--base-url", default=None,
              help="export: the URL the site will be served from (ids and links in the "
                   "feed). Default: ENCLAVE_BASE_URL/public.")
@service_command
def export_cmd(args: tuple[str, ...], public_key: str | None, base_url: str | None) -> None:
    """Write the released findings as a static site with a signed manifest to OUT_DIR;
    ``enclave export verify OUT_DIR`` checks the signature and every file's hash."""
    from app.publish import export

    if len(args) == 2 and args[0] == "verify":
        _export_verify(args[1], public_key)
        return
    if len(args) != 1 or args[0] == "verify":
        fail("usage: enclave export OUT_DIR | enclave export verify OUT_DIR "
             "[--public-key KEY] (to export into a folder named 'verify', write ./verify)", 2)
    if public_key:
        fail("--public-key is an option of 'enclave export verify OUT_DIR'", 2)
    report = export.export_site(args[0], base_url=base_url)
    click.echo(f"exported {report.items} released finding(s) to {report.out_dir}: "
               f"{len(report.written)} file(s) written, {len(report.unchanged)} unchanged, "
               f"{len(report.removed)} removed")
    for name in report.foreign:
        click.echo(f"warning: {name} is not part of the export (verify will report it)",
                   err=True)
    click.echo(f"manifest sha256 {report.manifest_sha256}")


def _export_verify(out_dir: str, public_key: str | None) -> None:
    from app.publish import export

    report = export.verify_export(out_dir, public_key)
    if report.key_source == "folder":
        key = (Path(out_dir) / export.PUBLIC_KEY).read_text("utf-8").strip()
        click.echo(f"warning: checked against the public key shipped in the folder ({key}); "
                   "compare it out of band with the key you expect, or pass --public-key",
                   err=True)
    for line in report.problems:
        click.echo(f"PROBLEM {line}")
    for name in report.mismatched:
        click.echo(f"MISMATCH {name}")
    for name in report.missing:
        click.echo(f"MISSING {name}")
    for name in report.extra:
        click.echo(f"EXTRA {name}")
    if not report.ok:
        fail(f"verification failed: signature {'ok' if report.signature_ok else 'INVALID'}, "
             f"{len(report.mismatched)} mismatched, {len(report.missing)} missing, "
             f"{len(report.extra)} extra file(s)")
    click.echo(f"ok: signature valid; {report.checked} file(s) match the manifest")


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
