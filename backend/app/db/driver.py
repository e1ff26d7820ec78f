"""The ledger's hot statements on the driver's own cursor, past SQLAlchemy's execute.

A worker's claim and outcome are one statement each; run through ``Connection.execute``
they cost about as much CPU again as on the bare psycopg cursor (the execution context,
the result metadata read from ``cursor.description``, the connection's events). A
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
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import UpdateBase

from app.db.metrics import observer_of
from app.db.session import unavailable_error

Processor = Callable[[Any], Any]


class DriverStatement:
    """A Core statement compiled once for ``engine``'s dialect, run on the DBAPI cursor.

    ``returning``: the columns the statement returns, in order.
    """

    def __init__(
        self, stmt: UpdateBase, engine: Engine, returning: Sequence[ColumnElement[Any]]
    ) -> None:
        dialect = engine.dialect
        compiled = stmt.compile(dialect=dialect)
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


class DriverRunner:
    """Runs :class:`DriverStatement` s on ``engine``'s pool, one autocommit call each."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._observe = observer_of(engine)

    def first(self, statement: DriverStatement, params: dict[str, Any]) -> Any:
        """Run ``statement`` with ``params``; its first row (columns as attributes), or None."""
        values = {**statement.constants, **params}
        for name, process in statement.binds:
            if name in values:
                values[name] = process(values[name])
        row = self._run(statement.sql, values)
        if row is None:
            return None
        cells = list(row)
        for i, process in statement.results:
            cells[i] = process(cells[i])
        return statement.row(cells)

    def _run(self, sql: str, values: dict[str, Any]) -> Sequence[Any] | None:
        try:
            fairy = self._engine.raw_connection()
        except self._dialect.loaded_dbapi.Error as exc:
            refused = unavailable_error(self._dialect, exc, disconnect=False)
            if refused is not None:
                raise refused from exc
            raise
        driver: Any = fairy.driver_connection
        cursor = None
        try:
            driver.autocommit = True  # one statement: its own transaction, one round trip
            started = time.perf_counter()
            cursor = driver.cursor()
            cursor.execute(sql, values)
            row: Sequence[Any] | None = cursor.fetchone()
            if self._observe is not None:
                self._observe(sql, time.perf_counter() - started)
            cursor.close()
            driver.autocommit = False  # the pool's other users expect the default
            return row
        except self._dialect.loaded_dbapi.Error as exc:
            lost = driver.closed or self._dialect.is_disconnect(exc, driver, cursor)
            if lost:
                fairy.invalidate(exc)
                self._engine.dispose()  # the connections of before are likely gone too
            elif not driver.closed:
                driver.autocommit = False
            error = unavailable_error(self._dialect, exc, disconnect=lost)
            if error is not None:
                raise error from exc
            raise
        finally:
            fairy.close()
