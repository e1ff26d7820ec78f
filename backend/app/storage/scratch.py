"""What every artifact store shares: the scratch files renderers write, and the key rule."""

from __future__ import annotations

import secrets
from pathlib import Path
from uuid import UUID


def artifact_key(job_id: UUID, filename: str, attempt: int | None) -> str:
    """``<job id>/<attempt>/<filename>``: a late attempt never overwrites the winner's file.

    With ``attempt`` None: ``<job id>/<filename>``, the documents queue's package.
    """
    name = Path(filename).name
    return f"{job_id}/{name}" if attempt is None else f"{job_id}/{attempt}/{name}"


class ScratchFiles:
    """Local temporary files (reportlab and openpyxl want a path) before the store takes them."""

    def __init__(self, folder: Path) -> None:
        self._tmp = folder
        self._tmp.mkdir(parents=True, exist_ok=True)

    def temp_path(self, job_id: UUID, extension: str) -> Path:
        """A fresh local scratch file for a renderer, unique per call (not a published place)."""
        return self._tmp / f"{job_id}-{secrets.token_hex(4)}.{extension}.part"

    def discard(self, temp: Path) -> None:
        """Remove a scratch file; nothing happens if it is already gone."""
        temp.unlink(missing_ok=True)
