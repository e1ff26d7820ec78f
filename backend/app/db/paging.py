"""Keyset paging of the ledger's tables: newest first, on (created_at, id)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Row, Select, Table, and_, or_

from app.db.job_rows import JOBS, to_job
from app.domain.ledger import Cursor, JobPage


def keyset_page(engine: Engine, jobs: Select[Any], *, limit: int, after: Cursor | None) -> JobPage:
    """One page of ``jobs`` (a filtered ``select`` of the ledger's rows), newest first."""
    rows, more = keyset_rows(engine, jobs, JOBS, limit=limit, after=after)
    items = [to_job(r) for r in rows]
    return JobPage(items, Cursor(items[-1].created_at, items[-1].id) if more and items else None)


def keyset_rows(
    engine: Engine, stmt: Select[Any], table: Table, *, limit: int, after: Cursor | None
) -> tuple[list[Row[Any]], bool]:
    """One page of ``stmt``'s rows of ``table``, newest first, and whether more follow.

    Keyset paging on (created_at, id): a page costs the same wherever it is, and a row
    added meanwhile neither shifts nor repeats the others.
    """
    stmt = stmt.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit + 1)
    if after is not None:
        stmt = stmt.where(
            or_(
                table.c.created_at < after.created_at,
                and_(table.c.created_at == after.created_at, table.c.id < after.id),
            )
        )
    with engine.connect() as conn:
        rows = list(conn.execute(stmt).all())
    return rows[:limit], len(rows) > limit
