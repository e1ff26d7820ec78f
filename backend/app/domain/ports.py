"""The job's outward ports: dispatch, artifact storage, rendering, callbacks, observation.

The other areas keep their ports beside their domain: the ledger (:mod:`app.domain.ledger`),
operations (:mod:`app.domain.operations`), keys (:mod:`app.domain.auth`), the dial
(:mod:`app.domain.traffic`), the console (:mod:`app.domain.console`), mail
(:mod:`app.domain.mail`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from uuid import UUID

from app.domain.jobs import Artifact, ReportJob
from app.domain.progress import Progress
from app.domain.queues import Backend, Queue


@dataclass(frozen=True, slots=True)
class WorkerCount:
    """How many live workers ``backend`` has on ``queue``."""

    backend: Backend
    queue: Queue
    workers: int


class JobDispatcher(Protocol):
    """Hands job ids to a backend. Implementations carry ids only, never payloads."""

    def choose(self, job: ReportJob) -> Backend:
        """The backend this job should go to. Raises Unavailable when there is none."""
        ...

    def dispatch(self, job: ReportJob) -> None:
        """Hand the (committed) job to ``job.backend``. Raises Unavailable on failure."""
        ...

    def cancel(self, job: ReportJob) -> None:
        """Best-effort backstop after the ledger says cancelled (revoke, stop command)."""
        ...

    def workers(self) -> Sequence[WorkerCount]:
        """Live workers per backend and queue, as far as each backend can tell."""
        ...


class ArtifactStore(Protocol):
    """Where finished reports live, spoken to in streams.

    Renderers write a local scratch file (``temp_path``); ``save`` hands it to the store,
    which publishes it whole or not at all. Nothing outside an adapter knows where the
    store keeps its bytes: readers get chunks (``read``), or a short-lived URL (``url_for``).
    """

    def temp_path(self, job_id: UUID, extension: str) -> Path:
        """A fresh local scratch file for a renderer (not a published place)."""
        ...

    def save(
        self,
        temp: Path,
        *,
        job_id: UUID,
        filename: str,
        content_type: str,
        attempt: int | None = None,
        checkpoint: Callable[[], None] | None = None,
    ) -> Artifact:
        """Publish ``temp`` atomically under the job; records its size and sha256.

        With ``attempt``, the key is the attempt's own (``<job>/<attempt>/<filename>``): two
        attempts of a job never publish to the same place, so one never replaces or deletes
        the other's file. ``checkpoint`` is called while a long upload goes on; whatever it
        raises aborts the upload and leaves nothing behind. Raises ``StorageUnavailable``
        when the store does not answer.
        """
        ...

    def discard(self, temp: Path) -> None:
        """Remove a scratch file; nothing happens if it is already gone."""
        ...

    def delete(self, artifact: Artifact) -> None:
        """Remove the stored report (and the job's folders it leaves empty, on a disk)."""
        ...

    def read(self, artifact: Artifact, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes ``start`` to ``end`` (inclusive; ``None``: the last) in chunks.

        The store is asked before the first chunk is returned, so a store that does not
        answer raises ``StorageUnavailable`` here, not in the middle of a response.
        """
        ...

    def url_for(self, artifact: Artifact, *, expires: int) -> str | None:
        """A URL that serves the report for ``expires`` seconds, or None if it has none."""
        ...

    def ping(self) -> None:
        """Raise unless the store answers (and its bucket or folder exists)."""
        ...


P_contra = TypeVar("P_contra", contravariant=True)


class Renderer(Protocol[P_contra]):
    """Writes one report type to a file, reporting progress at each page or chunk.

    Generic in its parameters: the registry pairs each report type with the renderer of
    that type's parameters (``PARAMS_MODELS``), so a renderer never checks what it got.
    """

    content_type: str
    extension: str

    def render(self, params: P_contra, target: Path, progress: Progress) -> None:
        """Write the report to ``target``, calling ``progress`` at each page or chunk.

        Raises:
            JobCancelled, JobInterrupted: from ``progress``; the renderer must stop.
        """
        ...


class CallbackSender(Protocol):
    """Delivers a finished job's callback: an HMAC-signed JSON POST."""

    def validate(self, url: str) -> None:
        """Raise InvalidInput unless callbacks may be sent to ``url``."""
        ...

    def send(self, url: str, body: bytes, *, delivery_id: str) -> None:
        """POST ``body``; raise CallbackFailed (retryable or not) unless it got a 2xx."""
        ...


class JobObserver(Protocol):
    """Receives job lifecycle events (logs today, metrics later)."""

    def job_event(self, event: str, job: ReportJob, **fields: Any) -> None:
        """Note that ``event`` (``enqueued``, ``started``, ...) happened to ``job``."""
        ...
