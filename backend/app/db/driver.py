"""The ledger's hot statements on the driver's own cursor, past SQLAlchemy's execute.

A job's insert, claim and outcome are one statement each; run through
``Connection.execute`` each paid more CPU around the statement than for it (the execution
context, the result metadata read from ``cursor.description``, the connection's events;
figures in docs/benchmarks.md). A
:class:`DriverStatement` is compiled once, by SQLAlchemy, for the engine's dialect; each
call then only binds values, runs the SQL on a pooled connection's own cursor and reads
the row by position, with the same type processing SQLAlchemy would apply (times in
UTC). The pool, its checkout events (the idle ping, the pool gauges) and the statement
metric are the engine's own; a lost or refused connection raises
:class:`~app.domain.errors.LedgerUnavailable` as it does through SQLAlchemy, and replaces
the pool's connections as SQLAlchemy does.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import UpdateBase

from app.db.metrics import observer_of
from app.db.session import unavailable_error

Processor = Callable[[Any], Any]


class DriverStatement:
    """A Core statement compiled once for ``engine``'s dialect, run on the DBAPI cursor.

    ``returning``: the columns the statement returns, in order (none: it returns no row).
    ``columns``: those an INSERT names (SQLAlchemy's ``column_keys``; default: all).
    """

    def __init__(
        self,
        stmt: UpdateBase,
        engine: Engine,
        returning: Sequence[ColumnElement[Any]] = (),
        columns: Sequence[str] | None = None,
    ) -> None:
        dialect = engine.dialect
        compiled = stmt.compile(dialect=dialect, column_keys=columns)
        self.sql = compiled.string
        #: Values the statement itself carries (the target status...), bound at every call.
        self.constants = dict(compiled.params)
        self.binds: list[tuple[str, Processor]] = []
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self.binds.append((name, process))
        names = [c.name for c in returning]
        row_type: Any = collections.namedtuple("LedgerRow", names)  # type: ignore[misc]
        #: A row from its cells: a named tuple, read by attribute like SQLAlchemy's rows.
        self.row: Callable[[Iterable[Any]], Any] = row_type._make
        self.results: list[tuple[int, Processor]] = []
        for i, column in enumerate(returning):
            process = column.type.dialect_impl(dialect).result_processor(dialect, None)
            if process is not None:
                self.results.append((i, process))

    def bound(self, params: dict[str, Any]) -> dict[str, Any]:
        """Every value the SQL names: the statement's own, then ``params``, processed."""
        values = {**self.constants, **params}
        for name, process in self.binds:
            if name in values:
                values[name] = process(values[name])
        return values


class DriverRunner:
    """Runs :class:`DriverStatement` s on ``engine``'s pool, one autocommit call each.

    An error that is not the ledger's absence is raised as SQLAlchemy would raise it (an
    ``IntegrityError``...), so callers catch one family of exceptions on either path.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._observe = observer_of(engine)

    def first(self, statement: DriverStatement, params: dict[str, Any]) -> Any:
        """Run ``statement``; its first row (columns as attributes), or None."""
        row = self._run(statement.sql, statement.bound(params), lambda cursor: cursor.fetchone())
        if row is None:
            return None
        cells = list(row)
        for i, process in statement.results:
            cells[i] = process(cells[i])
        return statement.row(cells)

    def count(self, statement: DriverStatement, params: dict[str, Any]) -> int:
        """Run ``statement``; the number of rows it wrote."""
        rowcount: int = self._run(
            statement.sql, statement.bound(params), lambda cursor: cursor.rowcount
        )
        return rowcount

    def _run(self, sql: str, values: dict[str, Any], read: Callable[[Any], Any]) -> Any:
        dbapi = self._dialect.loaded_dbapi
        try:
            fairy = self._engine.raw_connection()
        except dbapi.Error as exc:
            raise self._error(sql, values, exc, lost=False) from exc
        driver: Any = fairy.driver_connection
        cursor = None
        try:
            driver.autocommit = True  # one statement: its own transaction, one round trip
            started = time.perf_counter()
            cursor = driver.cursor()
            cursor.execute(sql, values)
            result = read(cursor)
            if self._observe is not None:
                self._observe(sql, time.perf_counter() - started)
            cursor.close()
            driver.autocommit = False  # the pool's other users expect the default
            return result
        except dbapi.Error as exc:
            lost = driver.closed or self._dialect.is_disconnect(exc, driver, cursor)
            if lost:
                fairy.invalidate(exc)
                self._engine.dispose()  # the connections of before are likely gone too
            else:
                driver.autocommit = False
            raise self._error(sql, values, exc, lost=lost) from exc
        finally:
            fairy.close()

    def _error(
        self, sql: str, values: dict[str, Any], exc: Exception, *, lost: bool
    ) -> BaseException:
        """:class:`LedgerUnavailable` when transient, else SQLAlchemy's wrapper of ``exc``."""
        absent = unavailable_error(self._dialect, exc, disconnect=lost)
        if absent is not None:
            return absent
        return DBAPIError.instance(
            sql, values, exc, self._dialect.loaded_dbapi.Error, dialect=self._dialect
        )
