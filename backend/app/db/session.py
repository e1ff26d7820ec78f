"""Engine and session factory for PostgreSQL (psycopg 3) and the embedded SQLite default."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.domain.errors import LedgerUnavailable


def normalise_url(url: str) -> str:
    """``postgresql://`` (the seed's form) means psycopg 3 here."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10) -> Engine:
    url = normalise_url(url)
    options: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        options["connect_args"] = {"check_same_thread": False, "timeout": 30}
        engine = create_engine(url, **options)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        options["connect_args"] = {"connect_timeout": 5}
        engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow, **options)
    event.listen(engine, "handle_error", _unavailable)
    return engine


def _unavailable(context: ExceptionContext) -> None:
    """A lost or refused connection (a restart, an outage, a locked SQLite file) becomes
    :class:`LedgerUnavailable`: callers retry it, the API answers 503 with its code."""
    if context.is_pre_ping:  # the pool handles those itself: it reconnects
        return
    error = context.sqlalchemy_exception
    if context.dialect.name == "sqlite":  # SQLite's OperationalError also means a bad query
        transient = "locked" in str(context.original_exception)
    else:
        transient = context.is_disconnect or isinstance(error, OperationalError | InterfaceError)
    if transient:
        raise LedgerUnavailable(
            "The job ledger (database) is not answering; try again shortly."
        ) from context.original_exception


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
