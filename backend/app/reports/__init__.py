"""Report renderers: one per report type, each writing a file from validated params.

This package depends only on ``app.domain`` (params, progress, errors): renderers know
nothing of jobs, queues, HTTP or databases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.domain.queues import ReportType
from app.reports.analysis import AnalysisRenderer
from app.reports.dummy import DummyRenderer
from app.reports.excel import ExcelRenderer
from app.reports.pdf import PdfRenderer

if TYPE_CHECKING:
    from app.domain.ports import Renderer

__all__ = [
    "MEDIA_TYPES",
    "AnalysisRenderer",
    "DummyRenderer",
    "ExcelRenderer",
    "PdfRenderer",
    "default_renderers",
]


MEDIA_TYPES = tuple(
    dict.fromkeys(
        r.content_type for r in (PdfRenderer, ExcelRenderer, AnalysisRenderer, DummyRenderer)
    )
)
"""Every media type a report file may have (the download's documented answers)."""


def default_renderers() -> dict[ReportType, Renderer[Any]]:
    """One renderer instance per report type."""
    return {
        ReportType.DUMMY: DummyRenderer(),
        ReportType.PDF: PdfRenderer(),
        ReportType.EXCEL: ExcelRenderer(),
        ReportType.ANALYSIS: AnalysisRenderer(),
    }
