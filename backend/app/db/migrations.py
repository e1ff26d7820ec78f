"""Schema version checks and upgrades through Alembic (the only source of the schema)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from alembic import command
from app.db.session import normalise_url

ROOT = Path(__file__).resolve().parents[3]


def alembic_config(url: str) -> Config:
    """Alembic's configuration for the database at ``url`` (scripts under ``alembic/``)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Migrate the database at ``url`` to the newest revision (``head``)."""
    command.upgrade(alembic_config(url), "head")


def head_revision(url: str) -> str | None:
    """The newest revision of the migration scripts: what :func:`upgrade` reaches."""
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None before its first migration."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
