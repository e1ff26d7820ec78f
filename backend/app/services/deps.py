"""What every service receives: the adapters, passed in by the composition root or a test."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.domain.jobs import ReportType, RetryPolicy, utcnow
from app.domain.ports import (
    ArtifactStore,
    CallbackSender,
    JobDispatcher,
    JobObserver,
    JobRepository,
    Renderer,
)


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class JobPolicy:
    max_attempts: int = 3
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    progress_interval: float = 1.0
    heartbeat_timeout: float = 30.0
    callback_attempts: int = 5
    lost_worker_checks: int = 5
    defer_max_seconds: float = 60.0
    defer_budget_seconds: float = 600.0
    max_recipients: int = 20


@dataclass(frozen=True, slots=True)
class Deps:
    """The service layer's view of the world: ports only."""

    repo: JobRepository
    dispatcher: JobDispatcher
    store: ArtifactStore
    renderers: Mapping[ReportType, Renderer[Any]]
    observer: JobObserver
    policy: JobPolicy = field(default_factory=JobPolicy)
    clock: Callable[[], datetime] = utcnow
    worker_id: str = "local"
    stopping: Callable[[], bool] = _never
    callbacks: CallbackSender | None = None
