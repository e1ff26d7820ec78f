"""Excel claims register: a live-formula summary sheet and N streamed data sheets.

The workbook is an openpyxl write-only workbook; data rows are serialised by
:mod:`app.reports._xlsx` (see there why) as the package is zipped, straight into each
sheet's entry, so memory stays flat from 10 rows to 1,000,000. Bytes are deterministic:
fixed document properties, fixed zip timestamps.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.writer.excel import ExcelWriter

from app.domain.params import ExcelParams
from app.domain.progress import Progress
from app.reports import data
from app.reports._catalog import HOLDERS, PRODUCTS
from app.reports._xlsx import Body, Column, Kind, RowSerializer, StableZipFile, is_xml_safe

CHUNK_ROWS = 2_000
"""Rows written between two progress checkpoints."""
FIXED_TIMESTAMP = datetime(2026, 1, 31, 8, 0, 0)
EUR_FORMAT = '#,##0.00 "€"'
DATE_FORMAT = "dd/mm/yyyy"
COUNT_FORMAT = "#,##0"
_ROWS_SHARE = 0.99  # of the progress bar; the rest is the package around the rows

# (header, kind, width) of the data columns, in Claim field order.
DATA_COLUMNS: tuple[tuple[str, Kind, float], ...] = (
    ("N° sinistre", "text", 18),
    ("Date de survenance", "date", 13),
    ("N° contrat", "text", 14),
    ("Assuré", "text", 22),
    ("Produit", "text", 12),
    ("Garantie", "text", 22),
    ("Région", "text", 27),
    ("Montant (€)", "number", 15),
    ("Statut", "text", 10),
)
_HEADER_FONT = Font(bold=True, color="FFFFFF")
_HEADER_FILL = PatternFill("solid", fgColor="1F3864")
_HEADER_ALIGN = Alignment(horizontal="center", vertical="center", wrap_text=True)


@dataclass(frozen=True, slots=True)
class SheetPlan:
    """One data sheet: a run of whole months and the number of claims in them."""

    title: str
    first_day: date
    last_day: date
    rows: int

    @property
    def last_row(self) -> int:
        """Last row of the data range (at least 2, so an empty sheet has a valid range)."""
        return max(self.rows, 1) + 1

    def ref(self, column: str) -> str:
        """The range of ``column``'s data cells on this sheet, e.g. ``'Title'!C2:C99``."""
        return f"'{self.title}'!{column}2:{column}{self.last_row}"


def plan_sheets(rows: int, sheets: int) -> list[SheetPlan]:
    """Split the 24 months of the window into ``sheets`` runs; rows sum to ``rows``."""
    counts = data.daily_counts(rows)
    months = [(2024 + m // 12, m % 12 + 1) for m in range(24)]
    size, extra = divmod(len(months), sheets)
    plans, start = [], 0
    for i in range(sheets):
        group = months[start : start + size + (1 if i < extra else 0)]
        start += len(group)
        first = date(*group[0], 1)
        year, month = group[-1]
        last = date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)
        offset = (first - data.WINDOW_START).days
        n = sum(counts[offset : (last - data.WINDOW_START).days + 1])
        plans.append(SheetPlan(f"Sinistres {first:%Y-%m} à {last:%Y-%m}", first, last, n))
    return plans


class ExcelRenderer:
    """Renders :class:`ExcelParams` into an ``.xlsx`` claims register."""

    content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    extension = "xlsx"

    def render(self, params: ExcelParams, target: Path, progress: Progress) -> None:
        """Write the workbook to ``target``, the rows generated as their sheets are zipped."""
        plans = plan_sheets(params.rows, params.sheets)
        progress.advance(0.0, "generating claims")
        wb = Workbook(write_only=True)
        _set_properties(wb, params)
        summary = wb.create_sheet("Synthèse")
        sheets = [_data_sheet(wb, plan) for plan in plans]  # nothing written yet
        serializer = RowSerializer(_columns(sheets[0]))
        bodies = _bodies(plans, params, serializer, progress)
        try:
            _write_summary(summary, plans, params)
            for ws in sheets:
                ws.append(_header(ws))
            skeletons = {ws._writer.out: body for ws, body in zip(sheets, bodies, strict=True)}
            with StableZipFile(target, bodies=skeletons) as archive:
                ExcelWriter(wb, archive).save()
        finally:
            _release(wb)
        progress.advance(1.0, "done")


def _bodies(
    plans: list[SheetPlan], params: ExcelParams, serializer: RowSerializer, progress: Progress
) -> list[Body]:
    """One :data:`Body` per data sheet, all drawing from one stream of claims, in order."""
    claims = data.claims(params.seed, params.rows)
    done = 0

    def body(index: int, first: int) -> Body:
        plan = plans[index]
        stage = f"writing sheet {index + 1}/{len(plans)}"

        def write(out: Callable[[bytes], None]) -> None:
            nonlocal done
            if done != first:
                raise RuntimeError("openpyxl archived the data sheets out of order")
            for chunk in _chunks(itertools.islice(claims, plan.rows)):
                out(serializer.rows(chunk).encode())
                done += len(chunk)
                progress.advance(_ROWS_SHARE * done / params.rows, stage)

        return write

    return [body(i, sum(p.rows for p in plans[:i])) for i in range(len(plans))]


def _release(wb: Any) -> None:
    """Close sheets an abort left open and delete openpyxl's temporary files."""
    for ws in wb.worksheets:
        writer = ws._writer
        if writer is None:
            continue
        if not ws.closed:
            ws.close()
        Path(writer.out).unlink(missing_ok=True)


def _chunks(claims: Iterator[data.Claim]) -> Iterator[list[data.Claim]]:
    """Up to CHUNK_ROWS claims at a time until ``claims`` is exhausted."""
    while chunk := list(itertools.islice(claims, CHUNK_ROWS)):
        yield chunk


def _set_properties(wb: Any, params: ExcelParams) -> None:
    props = wb.properties
    props.creator = props.lastModifiedBy = "MonAssurance"
    props.title = "Registre des sinistres"
    props.subject = f"{params.rows} sinistres, graine {params.seed}"
    props.created = props.modified = FIXED_TIMESTAMP
    wb.calculation.fullCalcOnLoad = True


def _styled(ws: Any, value: object, **style: Any) -> Any:
    cell = WriteOnlyCell(ws, value)
    for name, setting in style.items():
        setattr(cell, name, setting)
    return cell


def _data_sheet(wb: Any, plan: SheetPlan) -> Any:
    """A write-only sheet with widths, frozen header row and filter, still empty."""
    ws = wb.create_sheet(plan.title)
    for letter, (_, _, width) in zip("ABCDEFGHI", DATA_COLUMNS, strict=True):
        ws.column_dimensions[letter].width = width
    ws.row_dimensions[1].height = 30
    ws.freeze_panes = "A2"
    ws.auto_filter.ref = f"A1:I{plan.rows + 1}"
    ws.print_title_rows = "1:1"
    return ws


def _header(ws: Any) -> list[Any]:
    return [
        _styled(ws, title, font=_HEADER_FONT, fill=_HEADER_FILL, alignment=_HEADER_ALIGN)
        for title, _, _ in DATA_COLUMNS
    ]


def _columns(ws: Any) -> list[Column]:
    """The data columns with the openpyxl style ids of their number formats."""
    style_ids: dict[Kind, int] = {
        "date": _styled(ws, None, number_format=DATE_FORMAT).style_id,
        "number": _styled(ws, None, number_format=EUR_FORMAT).style_id,
        "text": 0,
    }
    return [Column(kind, style_ids[kind], verbatim=_VERBATIM) for _, kind, _ in DATA_COLUMNS]


def _catalog_is_xml_safe() -> bool:
    """Whether every text a claim holds is XML-safe, so rows need no escaping.

    The texts are the catalog's strings and identifiers made of a product code and digits.
    """
    texts = [*HOLDERS, *data.REGIONS, *data.STATUSES]
    for product in PRODUCTS:
        texts += [product.code, product.label, *(g[0] for g in product.guarantees)]
    return all(map(is_xml_safe, texts))


_VERBATIM = _catalog_is_xml_safe()


def _write_summary(ws: Any, plans: list[SheetPlan], params: ExcelParams) -> None:
    """Title, parameters, then one row of live formulas per data sheet and a total row."""
    for letter, width in zip("ABCDEFG", (34, 20, 14, 18, 15, 16, 16), strict=True):
        ws.column_dimensions[letter].width = width
    ws.append([_styled(ws, "MonAssurance — Registre des sinistres", font=Font(bold=True, size=14))])
    ws.append(
        [
            f"Sinistres survenus du {data.WINDOW_START:%d/%m/%Y} au {data.WINDOW_END:%d/%m/%Y}, "
            f"situation au {data.AS_OF:%d/%m/%Y}."
        ]
    )
    ws.append(
        [f"Paramètres : {params.rows} lignes, {params.sheets} feuilles, graine {params.seed}."]
    )
    ws.append([])
    headers = (
        "Feuille",
        "Période",
        "Sinistres",
        "Charge totale",
        "Coût moyen",
        "Sinistre max",
        "Dossiers réglés",
    )
    ws.append(
        [
            _styled(ws, h, font=_HEADER_FONT, fill=_HEADER_FILL, alignment=_HEADER_ALIGN)
            for h in headers
        ]
    )
    first = 6
    for row, plan in enumerate(plans, start=first):
        ws.append(
            _summary_row(
                ws,
                row,
                plan.title,
                f"{plan.first_day:%m/%Y} – {plan.last_day:%m/%Y}",
                f"=COUNTA({plan.ref('A')})",
                f"=SUM({plan.ref('H')})",
                f"=MAX({plan.ref('H')})",
                f'=COUNTIF({plan.ref("I")},"Réglé")',
            )
        )
    last = first + len(plans) - 1
    bold = Font(bold=True)
    ws.append(
        [
            _styled(ws, cell.value, font=bold, number_format=cell.number_format)
            for cell in _summary_row(
                ws,
                last + 1,
                "Total",
                "",
                f"=SUM(C{first}:C{last})",
                f"=SUM(D{first}:D{last})",
                f"=MAX(F{first}:F{last})",
                f"=SUM(G{first}:G{last})",
            )
        ]
    )
    ws.append([])
    ws.append(["Lignes générées (contrôle)", None, params.rows])


def _summary_row(ws: Any, row: int, *values: str) -> list[Any]:
    title, period, count, total, largest, settled = values
    return [
        _styled(ws, title),
        _styled(ws, period),
        _styled(ws, count, number_format=COUNT_FORMAT),
        _styled(ws, total, number_format=EUR_FORMAT),
        _styled(ws, f"=IF(C{row}=0,0,D{row}/C{row})", number_format=EUR_FORMAT),
        _styled(ws, largest, number_format=EUR_FORMAT),
        _styled(ws, settled, number_format=COUNT_FORMAT),
    ]
