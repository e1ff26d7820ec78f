"""Job functions for the lent-connection tests, run by a real RQ work horse."""

from __future__ import annotations

import os
from pathlib import Path

from app.domain.queues import Backend
from app.workers import worker_container
from sqlalchemy import text


def sleep_in_ledger(seconds: float, pid_file: str) -> None:
    """Hold the ledger connection in a statement (the horse is killed in it)."""
    Path(pid_file).write_text(str(os.getpid()))
    with worker_container(Backend.RQ).engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
