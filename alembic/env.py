"""Alembic environment: the URL comes from Settings unless the caller set one."""

from __future__ import annotations

from app.core.config import get_settings
from app.db.models import Base
from app.db.session import make_engine

from alembic import context

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().ledger.database_url


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
