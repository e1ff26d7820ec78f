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
from reportlab.lib.rl_accel import fp_str
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.platypus import BaseDocTemplate, Flowable, Frame, PageTemplate

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
    rows: Sequence[Sequence[str]],
    widths: Sequence[float],
    *,
    numeric_from: int,
    row_height: float = 14,
    font_size: float = 7.5,
    total_row: bool = False,
) -> GridTable:
    """A house-style table: navy header, zebra rows, columns from ``numeric_from`` right-aligned.

    Fixed widths and heights keep layout cheap and the page geometry exact.
    """
    return GridTable(
        rows,
        widths,
        numeric_from=numeric_from,
        row_height=row_height,
        font_size=font_size,
        total_row=total_row,
    )


_PADDING = 3  # left and right padding of a cell's text
_TOTAL_FILL = colors.HexColor("#D6DEEB")


class GridTable(Flowable):  # type: ignore[misc]  # reportlab is untyped
    """A one-line-per-cell grid drawn straight on the canvas, never split.

    It draws what a Platypus ``Table`` styled as the house grid drew (header band, zebra
    rows, a rule below every row, an optional bold total row with a rule above it, text
    vertically centred, numeric columns right-aligned), at the same coordinates, without
    the per-cell style objects and one text object per cell that cost most of a detail
    page: all the cells go into one PDF text object, the zebra bands into one path and
    the rules into another. White zebra bands are not painted (the page is white).
    """

    def __init__(
        self,
        rows: Sequence[Sequence[str]],
        widths: Sequence[float],
        *,
        numeric_from: int,
        row_height: float,
        font_size: float,
        total_row: bool,
    ) -> None:
        super().__init__()
        self.hAlign = "CENTER"  # as Platypus tables
        self._rows = rows
        self._widths = tuple(widths)
        self._numeric_from = numeric_from
        self._row_height = row_height
        self._font_size = font_size
        self._total_row = total_row and len(rows) > 1
        self.width = sum(self._widths)
        self.height = row_height + 4 + row_height * (len(rows) - 1)

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        return self.width, self.height

    def split(self, available_width: float, available_height: float) -> list[Any]:
        return []  # page breaks are explicit: a table that does not fit moves on whole

    def draw(self) -> None:
        canvas = self.canv
        rows, width = self._rows, self.width
        header_height, row_height = self._row_height + 4, self._row_height
        top = self.height
        last = len(rows) - 1
        # bottom edge of every row, top to bottom
        bottoms = [top - header_height - row_height * i for i in range(len(rows))]
        canvas.saveState()
        canvas.setFillColor(NAVY)
        canvas.rect(0, bottoms[0], width, header_height, stroke=0, fill=1)
        bands = canvas.beginPath()
        for i in range(2, len(rows), 2):
            bands.rect(0, bottoms[i], width, row_height)
        canvas.setFillColor(LIGHT)
        canvas.drawPath(bands, stroke=0, fill=1)
        if self._total_row:
            canvas.setFillColor(_TOTAL_FILL)
            canvas.rect(0, bottoms[last], width, row_height, stroke=0, fill=1)
        self._draw_text(bottoms)
        rules = canvas.beginPath()
        for y in bottoms:
            rules.moveTo(0, y)
            rules.lineTo(width, y)
        canvas.setLineCap(1)
        canvas.setLineJoin(1)
        canvas.setStrokeColor(GRID)
        canvas.setLineWidth(0.25)
        canvas.drawPath(rules, stroke=1, fill=0)
        if self._total_row:
            canvas.setStrokeColor(NAVY)
            canvas.setLineWidth(0.75)
            y = bottoms[last] + row_height
            canvas.line(0, y, width, y)
        canvas.restoreState()

    def _draw_text(self, bottoms: list[float]) -> None:
        """Every cell in one text object; baseline as Platypus centres one line of text.

        The operators are appended directly, as ``setTextOrigin`` and ``textOut`` would
        write them; a cell's text is encoded once per table and font (dates, products,
        regions, statuses repeat down a page).
        """
        canvas, rows, size = self.canv, self._rows, self._font_size
        lefts = [sum(self._widths[:i]) + _PADDING for i in range(len(self._widths))]
        rights = [left - 2 * _PADDING + w for left, w in zip(lefts, self._widths, strict=True)]
        left_xs = [fp_str(x) for x in lefts]
        numeric_from = self._numeric_from
        text = canvas.beginText()
        code = text._code  # the text object's operators
        encode = text._formatText
        regular, bold = "Helvetica", "Helvetica-Bold"
        encoded: dict[str, dict[str, str]] = {regular: {}, bold: {}}
        last = len(rows) - 1
        current = ""
        for i, (row, bottom) in enumerate(zip(rows, bottoms, strict=True)):
            font = bold if i == 0 or (self._total_row and i == last) else regular
            if font != current:
                text.setFont(font, size)
                current = font
                known = encoded[font]
            if i <= 1:
                text.setFillColor(colors.white if i == 0 else colors.black)
            height = self._row_height + 4 if i == 0 else self._row_height
            # Platypus: bottom + (1 padding + height - 1 padding + 1.2 size leading) / 2 - size
            y = fp_str(bottom + height / 2 - 0.4 * size)
            for j, cell in enumerate(row):
                x = (
                    left_xs[j]
                    if j < numeric_from
                    else fp_str(rights[j] - stringWidth(cell, font, size))
                )
                shown = known.get(cell)
                if shown is None:
                    # T* ends the line as drawString did: text extractors (pypdf) still
                    # give one cell per line
                    shown = known[cell] = encode(cell) + " T*"
                code.append(f"1 0 0 1 {x} {y} Tm {shown}")
        canvas.drawText(text)


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
