"""House style of MonAssurance PDF reports: page frame, header/footer, styles, formats.

Documents are built in reportlab's invariant mode (fixed dates and ids), so the same
story always yields the same bytes. The footer prints "Page X / N" in a single pass:
every report knows its page count before it lays anything out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.platypus import BaseDocTemplate, Flowable, Frame, PageTemplate, Table, TableStyle

from app.domain.errors import RenderError
from app.domain.progress import Progress

COMPANY = "MonAssurance"
NAVY = colors.HexColor("#1F3864")
TEAL = colors.HexColor("#2E75B6")
ORANGE = colors.HexColor("#C55A11")
LIGHT = colors.HexColor("#EEF2F8")
GRID = colors.HexColor("#B4C0D3")
MUTED = colors.HexColor("#5A6473")

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN_X = 1.2 * cm
MARGIN_TOP = 2.3 * cm
MARGIN_BOTTOM = 1.8 * cm
FRAME_WIDTH = PAGE_WIDTH - 2 * MARGIN_X
FRAME_HEIGHT = PAGE_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

NBSP = "\u00a0"

rl_config.useA85 = 0  # binary streams: ASCII85 inflates them by 25% and costs ~10% of the time

TITLE = ParagraphStyle("title", fontName="Helvetica-Bold", fontSize=26, leading=32, textColor=NAVY)
SUBTITLE = ParagraphStyle(
    "subtitle", fontName="Helvetica", fontSize=13, leading=17, textColor=MUTED
)
H1 = ParagraphStyle(
    "h1", fontName="Helvetica-Bold", fontSize=13, leading=16, textColor=NAVY, spaceAfter=6
)
BODY = ParagraphStyle(
    "body", fontName="Helvetica", fontSize=9, leading=12.5, alignment=TA_LEFT, spaceAfter=4
)
SMALL = ParagraphStyle("small", fontName="Helvetica", fontSize=7.5, leading=9.5, textColor=MUTED)


def fr_number(value: float, decimals: int = 0) -> str:
    """French digit grouping: ``1234567.891`` -> ``1 234 567,89`` (non-breaking spaces)."""
    text = f"{value:,.{decimals}f}"
    return text.replace(",", NBSP).replace(".", ",")


def eur(value: float) -> str:
    """An amount in euros with cents: ``1 234,50 €``."""
    return f"{fr_number(value, 2)}{NBSP}€"


def eur_cents(cents: int) -> str:
    """An exact amount given in cents, without float rounding."""
    sign, cents = ("-", -cents) if cents < 0 else ("", cents)
    return f"{sign}{fr_number(cents // 100)},{cents % 100:02d}{NBSP}€"


def percent(value: float, decimals: int = 1) -> str:
    return f"{fr_number(value * 100, decimals)}{NBSP}%"


def grid_table(
    rows: Sequence[Sequence[Any]],
    widths: Sequence[float],
    *,
    numeric_from: int,
    row_height: float = 14,
    font_size: float = 7.5,
    total_row: bool = False,
) -> Table:
    """A house-style table: navy header, zebra rows, columns from ``numeric_from`` right-aligned.

    Fixed widths and heights keep layout cheap and the page geometry exact.
    """
    heights = [row_height + 4] + [row_height] * (len(rows) - 1)
    table = Table(rows, colWidths=widths, rowHeights=heights, repeatRows=1)
    commands: list[tuple[Any, ...]] = [
        ("FONT", (0, 0), (-1, -1), "Helvetica", font_size),
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", font_size),
        ("TEXTCOLOR", (0, 0), (-1, 0), colors.white),
        ("BACKGROUND", (0, 0), (-1, 0), NAVY),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, LIGHT]),
        ("LINEBELOW", (0, 0), (-1, -1), 0.25, GRID),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("ALIGN", (numeric_from, 0), (-1, -1), "RIGHT"),
        ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ("TOPPADDING", (0, 0), (-1, -1), 1),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
    ]
    if total_row:
        commands += [
            ("FONT", (0, -1), (-1, -1), "Helvetica-Bold", font_size),
            ("BACKGROUND", (0, -1), (-1, -1), colors.HexColor("#D6DEEB")),
            ("LINEABOVE", (0, -1), (-1, -1), 0.75, NAVY),
        ]
    table.setStyle(TableStyle(commands))
    return table


class Deferred(Flowable):  # type: ignore[misc]  # reportlab is untyped
    """A flowable built when layout reaches it and dropped once drawn.

    A long story of deferred tables holds only the page being laid out, so memory does
    not grow with the page count. ``build`` is called exactly once.
    """

    def __init__(self, build: Callable[[], Any]) -> None:
        super().__init__()
        self._build: Callable[[], Any] | None = build
        self._flowable: Any = None

    def _target(self) -> Any:
        if self._flowable is None:
            if self._build is None:
                raise RuntimeError("A deferred flowable was laid out again after being drawn.")
            self._flowable, self._build = self._build(), None
        return self._flowable

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        width, height = self._target().wrap(available_width, available_height)
        self.width, self.height = width, height
        return width, height

    def drawOn(self, canvas: Any, x: float, y: float, _sW: float = 0) -> None:  # noqa: N802, N803
        self._target().drawOn(canvas, x, y, _sW)
        self._flowable = None


class ReportDocument(BaseDocTemplate):  # type: ignore[misc]  # reportlab is untyped
    """A4 portrait document with the house header/footer and a progress hook per page.

    Args:
        target: the PDF file to write.
        title: the report title, in the header and the PDF metadata.
        footer_note: left part of the footer (e.g. the seed).
        total_pages: N of "Page X / N"; :meth:`finish` checks the layout produced exactly N.
        progress: advanced after every page, from ``start`` to 0.99.
    """

    def __init__(
        self,
        target: Path,
        *,
        title: str,
        subject: str,
        footer_note: str,
        total_pages: int,
        progress: Progress,
        start: float,
    ) -> None:
        super().__init__(
            str(target),
            pagesize=A4,
            leftMargin=MARGIN_X,
            rightMargin=MARGIN_X,
            topMargin=MARGIN_TOP,
            bottomMargin=MARGIN_BOTTOM,
            title=title,
            author=COMPANY,
            subject=subject,
            creator=f"{COMPANY} report-jobs",
            invariant=1,
            pageCompression=1,
        )
        self._report_title = title
        self._footer_note = footer_note
        self.total_pages = total_pages
        self._progress = progress
        self._start = start
        frame = Frame(
            MARGIN_X,
            MARGIN_BOTTOM,
            FRAME_WIDTH,
            FRAME_HEIGHT,
            leftPadding=0,
            rightPadding=0,
            topPadding=0,
            bottomPadding=0,
            id="body",
        )
        self.addPageTemplates(
            PageTemplate("page", [frame], onPage=self._decorate, onPageEnd=self._page_done)
        )

    def _decorate(self, canvas: Any, doc: Any) -> None:
        page = canvas.getPageNumber()
        top = PAGE_HEIGHT - 1.2 * cm
        canvas.saveState()
        canvas.setFillColor(NAVY)
        canvas.rect(0, PAGE_HEIGHT - 0.35 * cm, PAGE_WIDTH, 0.35 * cm, stroke=0, fill=1)
        canvas.setFont("Helvetica-Bold", 11)
        canvas.drawString(MARGIN_X, top, COMPANY)
        canvas.setFont("Helvetica", 9)
        canvas.setFillColor(MUTED)
        canvas.drawRightString(PAGE_WIDTH - MARGIN_X, top, self._report_title)
        canvas.setStrokeColor(NAVY)
        canvas.setLineWidth(0.8)
        canvas.line(MARGIN_X, top - 6, PAGE_WIDTH - MARGIN_X, top - 6)
        bottom = 1.0 * cm
        canvas.setStrokeColor(GRID)
        canvas.setLineWidth(0.5)
        canvas.line(MARGIN_X, bottom + 10, PAGE_WIDTH - MARGIN_X, bottom + 10)
        canvas.setFont("Helvetica", 7.5)
        canvas.drawString(
            MARGIN_X, bottom, f"{COMPANY} — document confidentiel — {self._footer_note}"
        )
        canvas.setFillColor(NAVY)
        canvas.setFont("Helvetica-Bold", 8)
        canvas.drawRightString(PAGE_WIDTH - MARGIN_X, bottom, f"Page {page} / {self.total_pages}")
        canvas.restoreState()

    def _page_done(self, canvas: Any, doc: Any) -> None:
        page = canvas.getPageNumber()
        fraction = self._start + (0.99 - self._start) * min(page / self.total_pages, 1.0)
        self._progress.advance(fraction, f"page {page}/{self.total_pages}")

    def render(self, story: list[Any]) -> None:
        """Lay out ``story`` and write the file; the page count must be ``total_pages``."""
        self.build(story)
        if self.page != self.total_pages:
            raise RenderError(
                f"Layout produced {self.page} pages instead of {self.total_pages}.",
                code="PAGE_COUNT_MISMATCH",
                retryable=False,
            )
