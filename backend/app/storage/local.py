"""Artifacts on the local filesystem: temp file, then an atomic rename."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO
from uuid import UUID

from app.domain.jobs import Artifact
from app.storage.scratch import ScratchFiles, artifact_key

_CHUNK = 1 << 20
_PUBLISH_TRIES = 3


class LocalArtifactStore(ScratchFiles):
    """:class:`~app.domain.ports.ArtifactStore` in a directory.

    A report lives at ``<root>/<job id>/<attempt>/<filename>`` (keys written before attempts
    had their own folder, ``<job id>/<filename>``, still resolve: the key is in the row).
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        super().__init__(self.root / ".tmp")

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
        """Publish ``temp`` under the job by an atomic rename; records its size and sha256.

        The file is fsynced before the rename; ``checkpoint`` is not called (a rename is
        instant).
        """
        with temp.open("rb") as fh:
            digest = hashlib.file_digest(fh, "sha256")
            os.fsync(fh.fileno())
        size = temp.stat().st_size
        key = artifact_key(job_id, filename, attempt)
        final = self.root / key
        for tries_left in reversed(range(_PUBLISH_TRIES)):
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(temp, final)
                break
            except FileNotFoundError:
                # Another attempt's clean-up removed the job's folder, empty an instant ago.
                if tries_left == 0 or not temp.exists():
                    raise
        return Artifact(
            key=key,
            filename=final.name,
            content_type=content_type,
            size_bytes=size,
            sha256=digest.hexdigest(),
        )

    def delete(self, artifact: Artifact) -> None:
        """Remove the report, and the job's folders it leaves empty."""
        path = self.local_path(artifact)
        path.unlink(missing_ok=True)
        folder = path.parent
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()  # only while empty: another attempt's or the package's stay
            except OSError:
                return
            folder = folder.parent

    def read(self, artifact: Artifact, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes ``start`` to ``end`` (inclusive; ``None``: the last) in chunks.

        The file is opened before the first chunk, so a missing one raises
        ``FileNotFoundError`` here, not in the middle of a response.
        """
        fh = self.local_path(artifact).open("rb")  # opened now: a missing file raises here
        fh.seek(start)
        return _chunks(fh, None if end is None else end - start + 1)

    def url_for(self, artifact: Artifact, *, expires: int) -> str | None:
        """Always None: a disk has no URL of its own, so the API serves the bytes."""
        return None

    def ping(self) -> None:
        """Raise ``OSError`` unless the store's directory exists."""
        if not self.root.is_dir():
            raise OSError(f"artifact directory {self.root} is missing")

    def local_path(self, artifact: Artifact) -> Path:
        """Where the report is on this disk (this adapter and its tests only)."""
        path = (self.root / artifact.key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"artifact key escapes the store: {artifact.key!r}")
        return path


def _chunks(stream: BinaryIO, length: int | None) -> Iterator[bytes]:
    with stream:
        left = length
        while left is None or left > 0:
            chunk = stream.read(_CHUNK if left is None else min(_CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk
