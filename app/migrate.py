"""Alembic, driven from the app (``enclave init``) and from tests."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from flask import current_app
from sqlalchemy import Engine

from app.config import REPO_ROOT


def alembic_config(engine: Engine | None = None) -> Config:
    engine = engine or current_app.extensions["enclave.engine"]
    cfg = Config()
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False)
                        .replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


def current_revision(engine: Engine | None = None) -> str | None:
    engine = engine or current_app.extensions["enclave.engine"]
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_to_head(engine: Engine | None = None) -> tuple[str | None, str | None]:
    before = current_revision(engine)
    command.upgrade(alembic_config(engine), "head")
    return before, current_revision(engine)
