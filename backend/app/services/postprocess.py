"""Documents queue: package a completed report with its metadata, and record the package.

The package is a zip holding the report file and ``metadata.json`` (what was asked, what
was produced, its sha256). Zip entries carry a fixed timestamp, so the same job always
gives the same bytes. Packaging is idempotent: a job already packaged is skipped.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import UUID

from app.domain.jobs import ReportJob
from app.domain.states import JobStatus
from app.services.delivery import Outcome
from app.services.deps import Deps

log = logging.getLogger(__name__)

_FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def postprocess_report(*, deps: Deps, job_id: UUID) -> Outcome:
    """Package the job's report with its metadata; skip jobs not completed or done already.

    The outcome is ``packaged``, ``skipped`` (not completed, or packaged already) or
    ``failed``: a failure to package is logged, never raised or retried, since the report
    itself is complete and the callback that follows must still go out.

    Raises:
        LedgerUnavailable: the ledger did not answer (the delivery is deferred).
    """
    job = deps.repo.get(job_id)
    if job is None or job.status is not JobStatus.COMPLETED or job.artifact is None:
        return Outcome("skipped", job)
    if job.document is not None:
        return Outcome("skipped", job)
    temp = deps.store.temp_path(job.id, "zip")
    try:
        write_package(temp, deps.store.read(job.artifact), metadata(job))
        document = deps.store.save(
            temp,
            job_id=job.id,
            filename=f"{job.report_type.value}-{job.id}.zip",
            content_type="application/zip",
        )
    except Exception as exc:
        deps.store.discard(temp)
        log.exception("report_job.postprocess.error", extra={"job_id": str(job.id)})
        deps.observer.job_event("postprocess_failed", job, error=type(exc).__name__)
        return Outcome("failed", job)
    deps.repo.record_document(job.id, document, now=deps.clock())
    packaged = deps.repo.get(job.id) or job
    deps.observer.job_event("packaged", packaged, document_sha256=document.sha256)
    return Outcome("packaged", packaged)


def metadata(job: ReportJob) -> dict[str, Any]:
    """What the package says about its report: stable for a given job."""
    assert job.artifact is not None
    return {
        "job_id": str(job.id),
        "report_type": job.report_type.value,
        "params": job.params,
        "attempts": job.attempts,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "report": job.artifact.as_dict(),
    }


def write_package(target: Path, report: Iterable[bytes], meta: dict[str, Any]) -> None:
    """A deterministic zip: the report (read from the store in chunks), then its metadata."""
    with zipfile.ZipFile(target, "w") as archive:
        with archive.open(_entry(meta["report"]["filename"]), "w") as dst:
            for chunk in report:
                dst.write(chunk)
        archive.writestr(_entry("metadata.json"), json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info
