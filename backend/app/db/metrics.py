"""Database metrics of an engine: statement time by operation, the pool's size and room.

``db_query_duration_seconds{operation}`` times the dialect's own execute (the
``do_execute`` family of dialect events, which run the statement and say so): the
``before_cursor_execute``/``after_cursor_execute`` pair would do it as well, but any
connection-level listener makes SQLAlchemy join the engine's event dispatch on every new
``Connection``, about 20 µs a ledger operation. A statement that fails is not observed.

The pool gauges are set by the pool's own checkout and checkin events, in the process that
uses the pool: a scrape-time read could only see the pool of the process that serves the
scrape, and every uvicorn worker, Celery child and RQ work horse has its own.
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from app.core.metrics import DB_QUERY_DURATION, pool_gauges

_MAIN_VERB = re.compile(r"\b(select|insert|update|delete)\b", re.IGNORECASE)
#: Statements are few (compiled once, cached by SQLAlchemy); literal SQL past this many
#: is classified every time rather than remembered.
_REMEMBERED = 2048
_by_statement: dict[str, Any] = {}  # statement -> its operation's histogram child
_by_operation: dict[str, Any] = {}  # operation -> histogram child


def operation_of(statement: str) -> str:
    """``select``, ``insert``, ``update``, ``delete`` or ``other``, from the leading verb.

    A ``WITH`` statement is what its first data verb after the common table expressions
    says (``WITH … INSERT`` is an insert), else a select.
    """
    words = statement.lstrip(" \t\r\n(").split(None, 1)
    verb = words[0].lower() if words else ""
    if verb in ("select", "insert", "update", "delete"):
        return verb
    if verb == "with":
        verbs = [m.lower() for m in _MAIN_VERB.findall(statement)]
        return next((v for v in verbs if v != "select"), "select")
    return "other"


def _histogram(statement: str) -> Any:
    child = _by_statement.get(statement)
    if child is None:
        operation = operation_of(statement)
        child = _by_operation.get(operation)
        if child is None:
            child = _by_operation[operation] = DB_QUERY_DURATION.labels(operation)
        if len(_by_statement) < _REMEMBERED:
            _by_statement[statement] = child
    return child


#: The engines :func:`instrument` times; those of them whose pool is not published.
_metered: weakref.WeakSet[Engine] = weakref.WeakSet()
_silenced: weakref.WeakSet[Engine] = weakref.WeakSet()


def observe(statement: str, seconds: float) -> None:
    """Count one statement of ``seconds`` in ``db_query_duration_seconds``."""
    _histogram(statement).observe(seconds)


def observer_of(engine: Engine) -> Callable[[str, float], None] | None:
    """:func:`observe` when ``engine`` is metered, else None: for statements run past it."""
    return observe if engine in _metered else None


def silence_pool(engine: Engine) -> None:
    """From now on this process publishes no pool gauges of ``engine``.

    For an RQ work horse: it lives for one job, on a connection its worker lends it, and
    its gauges would only churn files (two per horse, created and removed) and read 0
    available whenever a job runs; the worker's own stand for it.
    """
    _silenced.add(engine)


def instrument(engine: Engine) -> None:
    """Time ``engine``'s statements; publish its pool's size and room when it is a QueuePool."""
    dialect = engine.dialect
    _metered.add(engine)

    def execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        started = time.perf_counter()
        dialect.do_execute(cursor, statement, parameters, context)
        _histogram(statement).observe(time.perf_counter() - started)
        return True  # executed: SQLAlchemy does not run it again

    def execute_many(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        started = time.perf_counter()
        dialect.do_executemany(cursor, statement, parameters, context)
        _histogram(statement).observe(time.perf_counter() - started)
        return True

    def execute_no_params(cursor: Any, statement: str, context: Any) -> bool:
        started = time.perf_counter()
        dialect.do_execute_no_params(cursor, statement, context)
        _histogram(statement).observe(time.perf_counter() - started)
        return True

    event.listen(engine, "do_execute", execute)
    event.listen(engine, "do_executemany", execute_many)
    event.listen(engine, "do_execute_no_params", execute_no_params)
    if isinstance(engine.pool, QueuePool):
        _watch_pool(engine)


def _watch_pool(engine: Engine) -> None:
    """Publish the pool gauges now and at each checkout and checkin.

    ``db_connection_pool_size`` = pool size + max overflow; ``…_available`` = size minus
    the connections checked out: idle ones plus those the pool may still open. An idle
    pool that has opened nothing yet reads full, not exhausted. A pool the engine made
    since (a forked child's, after ``dispose``) publishes its size at its first use.
    """
    size_gauge, available_gauge = pool_gauges()
    sized: Any = None  # the pool whose size was published last

    def publish(returning: int = 0) -> None:
        nonlocal sized
        pool = engine.pool
        if not isinstance(pool, QueuePool) or engine in _silenced:
            return
        # No public accessor for max_overflow; -1 (unbounded) adds nothing.
        capacity = pool.size() + max(getattr(pool, "_max_overflow", 0), 0)
        if pool is not sized:
            size_gauge.set(capacity)
            sized = pool
        # min(): a connection of a pool replaced since (a fork) may come back late
        available_gauge.set(min(capacity, capacity - pool.checkedout() + returning))

    def checked_out(_dbapi: Any, _record: ConnectionPoolEntry, _proxy: Any) -> None:
        publish()

    def checked_in(_dbapi: Any, _record: ConnectionPoolEntry) -> None:
        publish(returning=1)  # the event comes before the pool takes the connection back

    event.listen(engine, "checkout", checked_out)
    event.listen(engine, "checkin", checked_in)
    publish()
