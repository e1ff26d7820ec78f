"""Engine and session factory for PostgreSQL (psycopg 3) and the embedded SQLite default."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Dialect, ExceptionContext, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from app.core.settings.runtime import LedgerSettings
from app.db.metrics import instrument
from app.domain.errors import LedgerUnavailable


def normalise_url(url: str) -> str:
    """``postgresql://`` (the seed's form) means psycopg 3 here."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


#: A pooled connection idle for longer is pinged before use (a restart may have closed it).
PING_AFTER_IDLE_SECONDS = 2.0


def make_engine(
    url: str, *, pool_size: int = 5, max_overflow: int = 10, metered: bool = True
) -> Engine:
    """An engine on ``url`` (SQLite file or PostgreSQL), pinged when idle.

    ``metered``: it feeds ``db_query_duration_seconds`` and, with a QueuePool, the
    ``db_connection_pool_*`` gauges (:mod:`app.db.metrics`). A one-shot CLI passes False:
    in the image, ``PROMETHEUS_MULTIPROC_DIR`` is the API's, whose figures it would join.
    """
    url = normalise_url(url)
    if url.startswith("sqlite"):
        connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": 30}
        engine = create_engine(url, connect_args=connect_args)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            connect_args={"connect_timeout": 5},
        )
    _ping_when_idle(engine)
    event.listen(engine, "handle_error", _unavailable)
    if metered:
        instrument(engine)
    return engine


def ledger_engine(ledger: LedgerSettings) -> Engine:
    """A process's engine on the ledger: DATABASE_URL, DB_POOL_SIZE, DB_MAX_OVERFLOW, metered."""
    return make_engine(
        ledger.database_url, pool_size=ledger.db_pool_size, max_overflow=ledger.db_max_overflow
    )


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's ``pool_pre_ping``, for connections idle since a while only.

    A ping is a round trip; a ledger write in autocommit is one too, so pinging on every
    checkout would double the cost of the hot path. A connection used within the last
    :data:`PING_AFTER_IDLE_SECONDS` is handed out as it is: should the database have
    restarted meanwhile, that one call fails with :class:`LedgerUnavailable` (which every
    caller retries or answers 503) and the pool replaces every connection of before.
    """

    @event.listens_for(engine, "connect")
    def _new(_dbapi: Any, record: ConnectionPoolEntry) -> None:
        # A new session needs no ping; an adopted one brings its idle time along.
        record.info.setdefault("idle_since", time.monotonic())

    @event.listens_for(engine, "checkin")
    def _stamp(_dbapi: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi)
        except Exception as exc:  # the driver's own error: the connection is gone
            raise DisconnectionError(str(exc)) from exc
        if not alive:
            raise DisconnectionError("the ledger connection did not answer its ping")


def adopt_connection(engine: Engine, driver: Any, idle_since: float) -> None:
    """Have the engine's pool open ``driver`` first: a connection the parent lends.

    For a forked child whose pool was just emptied: the first connection its pool opens
    is ``driver`` instead of a new session. It keeps the time it has been idle since, so
    the pool pings it first as it would any other.
    """
    lent = [driver]

    @event.listens_for(engine, "do_connect")
    def _adopt(_dialect: Any, record: ConnectionPoolEntry, _cargs: Any, _cparams: Any) -> Any:
        if not lent:
            return None
        record.info["idle_since"] = idle_since
        return lent.pop()


def _unavailable(context: ExceptionContext) -> None:
    """Turn a lost or refused connection into :class:`LedgerUnavailable`."""
    error = unavailable_error(
        context.dialect, context.original_exception, disconnect=context.is_disconnect
    )
    if error is not None:
        raise error from context.original_exception


def unavailable_error(
    dialect: Dialect, original: BaseException, *, disconnect: bool
) -> LedgerUnavailable | None:
    """:class:`LedgerUnavailable` when the driver's ``original`` error is transient, else None.

    A restart, an outage or a locked SQLite file: callers retry it, the API answers 503
    with its code. SQLite's OperationalError also means a bad query: only "locked" counts.
    """
    if dialect.name == "sqlite":
        transient = "locked" in str(original)
    else:
        dbapi = dialect.loaded_dbapi
        transient = disconnect or isinstance(
            original, (dbapi.OperationalError, dbapi.InterfaceError)
        )
    if not transient:
        return None
    return LedgerUnavailable("The job ledger (database) is not answering; try again shortly.")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    """ORM sessions on ``engine``; objects stay readable after commit (no expiry)."""
    return sessionmaker(engine, expire_on_commit=False)
