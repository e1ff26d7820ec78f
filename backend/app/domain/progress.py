"""The tiny protocol renderers use to report progress and honour cancellation."""

from __future__ import annotations

from typing import Protocol


class JobCancelled(Exception):
    """Raised at a checkpoint when the job was cancelled: the renderer must stop."""


class JobInterrupted(Exception):
    """Raised at a checkpoint when the process is shutting down: the job will run again."""


class Progress(Protocol):
    """What a renderer sees of the job it renders."""

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, ..."""
        ...

    def advance(self, fraction: float, stage: str) -> None:
        """Checkpoint: ``fraction`` of the work (0..1) is done, now in ``stage``.

        Call it once per page or chunk. It may sleep (to honour ``processing_time``),
        persists progress at a bounded rate, and raises :class:`JobCancelled` or
        :class:`JobInterrupted` when the renderer must stop.
        """
        ...


class NullProgress:
    """Progress that records nothing and never stops: for benchmarks and direct calls."""

    attempt = 1

    def advance(self, fraction: float, stage: str) -> None:
        """Record nothing and never raise."""
