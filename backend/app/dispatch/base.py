"""What the router needs from each backend adapter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.domain.jobs import Backend, Queue, ReportJob
from app.domain.ports import WorkerCount


class BackendAdapter(Protocol):
    backend: Backend

    def available(self, queue: Queue) -> bool:
        """Fast (cached) answer: can this backend run a job of ``queue`` now?"""
        ...

    def dispatch(self, job: ReportJob) -> None: ...

    def cancel(self, job: ReportJob) -> None: ...

    def workers(self) -> Sequence[WorkerCount]: ...
