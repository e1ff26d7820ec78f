"""The composition root: the only place that picks adapters from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from app.core.config import Settings, get_settings
from app.core.observers import FanOut, LoggingObserver
from app.db.repository import SqlJobRepository
from app.db.schema import current_revision, head_revision
from app.db.session import make_engine, make_sessions
from app.dispatch.base import BackendAdapter
from app.dispatch.inline_dispatcher import InlineDispatcher, inline_worker_alive, inline_worker_id
from app.dispatch.router import Router
from app.domain.errors import AppError
from app.domain.jobs import Backend, RetryPolicy
from app.reports import default_renderers
from app.services.deps import Deps, JobPolicy
from app.services.recovery import RecoveryReport, recover_unfinished
from app.services.run_report import run_report
from app.storage.local import LocalArtifactStore


class SchemaNotReady(AppError):
    code = "SCHEMA_NOT_READY"


@dataclass
class Container:
    """Everything a process built from the settings; ``close()`` releases it."""

    settings: Settings
    engine: Engine
    deps: Deps
    inline: InlineDispatcher | None

    def check_schema(self) -> None:
        """Refuse to run against a database whose schema is not at the migrations' head."""
        current = current_revision(self.engine)
        head = head_revision(self.settings.database_url)
        if current != head:
            raise SchemaNotReady(
                f"The database schema is at {current or 'nothing'}, not {head}: "
                "run `python manage.py migrate` (or `make migrate`) first."
            )

    def recover(self) -> RecoveryReport | None:
        """Re-run or fail the inline jobs a previous process of this host left unfinished."""
        if self.inline is None:
            return None
        return recover_unfinished(
            deps=self.deps, backend=Backend.INLINE, worker_alive=inline_worker_alive
        )

    def close(self) -> None:
        if self.inline is not None:
            self.inline.shutdown()
        self.engine.dispose()


def build(settings: Settings | None = None) -> Container:
    settings = settings or get_settings()
    engine = make_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    adapters: list[BackendAdapter] = []
    inline: InlineDispatcher | None = None
    if settings.dispatch_backend in ("auto", "inline"):
        inline = InlineDispatcher(settings.inline_workers)
        adapters.append(inline)
    forced = None if settings.dispatch_backend == "auto" else Backend(settings.dispatch_backend)
    deps = Deps(
        repo=SqlJobRepository(make_sessions(engine)),
        dispatcher=Router(adapters, forced=forced),
        store=LocalArtifactStore(settings.artifacts),
        renderers=default_renderers(),
        observer=FanOut([LoggingObserver()]),
        policy=JobPolicy(
            max_attempts=settings.max_attempts,
            retry=RetryPolicy(settings.retry_backoff_base, settings.retry_backoff_max),
            progress_interval=settings.progress_interval,
        ),
        worker_id=inline_worker_id(),
        stopping=inline.stopping if inline else (lambda: False),
    )
    if inline is not None:
        inline.bind(lambda job_id: run_report(deps=deps, job_id=job_id))
    return Container(settings=settings, engine=engine, deps=deps, inline=inline)
