"""The least an enqueue API can do: the HTTP peer of ``benchmarks/pipeline.py``.

``POST /enqueue`` inserts one row (id, status, created_at) through a pooled SQLAlchemy
Core engine (the platform's pool sizes, no pre-ping), publishes one Celery task by name to
a queue, and answers 201 with the id. No validation, key, rate limit, middleware or second
write. Served as ``manage.py serve`` serves the platform: uvicorn, one worker, no log
config, root logger at ``LOG_LEVEL``.

    MINIMAL_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/db \\
    MINIMAL_BROKER_URL=redis://127.0.0.1:6379/10 MINIMAL_QUEUE=minimal \\
    HOST=127.0.0.1 PORT=8001 .venv/bin/python benchmarks/minimal_app.py
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import uvicorn
from celery import Celery
from fastapi import FastAPI
from sqlalchemy import Column, DateTime, MetaData, String, Table, Uuid, create_engine, insert

TASK = "minimal.run"

metadata = MetaData()
jobs = Table(
    "minimal_jobs",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def create_app() -> FastAPI:
    engine = create_engine(os.environ["MINIMAL_DATABASE_URL"], pool_size=5, max_overflow=10)
    broker = Celery("minimal", broker=os.environ["MINIMAL_BROKER_URL"], set_as_current=False)
    broker.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True)
    queue = os.environ.get("MINIMAL_QUEUE", "minimal")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        metadata.create_all(engine)
        yield
        engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/enqueue", status_code=201)
    def enqueue() -> dict[str, str]:
        job_id = uuid.uuid4()
        with engine.begin() as conn:
            conn.execute(
                insert(jobs).values(id=job_id, status="queued", created_at=datetime.now(UTC))
            )
        broker.send_task(TASK, args=(str(job_id),), queue=queue)
        return {"id": str(job_id), "status": "queued"}

    @app.get("/health/live")
    def live() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING").upper())
    uvicorn.run(
        create_app(),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8001")),
        workers=1,
        log_config=None,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
