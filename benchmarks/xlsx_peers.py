"""The Excel claims register written by maintained libraries, for benchmarks/render.py.

Two peers of :class:`app.reports.excel.ExcelRenderer`, each producing the same
workbook (same sheets, cells, number formats, fonts and fills, formulas, column widths,
header row height, frozen header row, autofilter, print titles, document properties)
from the same claims, the way each library documents streaming:

- :func:`openpyxl_write_only`: ``Workbook(write_only=True)`` with lxml installed, so
  openpyxl serialises cells through ``lxml.etree.xmlfile`` (``openpyxl.LXML`` is True).
  Workbook, summary sheet and headers are built by the renderer's own helpers (they are
  plain openpyxl calls); only the data rows differ: appended cell by cell, styled cells
  as ``WriteOnlyCell`` as openpyxl's docs show, instead of our serialiser and splice.
- :func:`xlsxwriter_constant_memory`: XlsxWriter with ``{"constant_memory": True}``,
  which flushes each row to a per-sheet temporary file as the next one starts.

Both zip with their library's defaults (zlib level 6; ours uses level 1).
``python benchmarks/xlsx_peers.py --check`` renders a small workbook with all three
writers and compares them cell for cell (values, formulas, number formats, fonts,
fills, alignment, sheet settings); ``--write NAME --rows N`` renders one workbook, for
timing a whole process from outside.

Needs the bench extra: ``.venv/bin/pip install -e '.[bench]'`` (lxml, XlsxWriter).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.domain.params import ExcelParams
from app.domain.progress import NullProgress
from app.reports import ExcelRenderer, data
from app.reports.excel import (
    COUNT_FORMAT,
    DATA_COLUMNS,
    DATE_FORMAT,
    EUR_FORMAT,
    FIXED_TIMESTAMP,
    _data_sheet,
    _header,
    _set_properties,
    _write_summary,
    plan_sheets,
)

Writer = Callable[[ExcelParams, Path], None]


def openpyxl_write_only(params: ExcelParams, target: Path) -> None:
    """openpyxl write-only mode (lxml when importable), cell by cell."""
    import openpyxl
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    if not openpyxl.LXML:
        raise SystemExit("lxml is not installed: pip install -e '.[bench]'")
    plans = plan_sheets(params.rows, params.sheets)
    wb = Workbook(write_only=True)
    _set_properties(wb, params)
    summary = wb.create_sheet("Synthèse")
    _write_summary(summary, plans, params)
    claims = data.claims(params.seed, params.rows)
    for plan in plans:
        ws = _data_sheet(wb, plan)
        ws.append(_header(ws))
        for claim in itertools.islice(claims, plan.rows):
            loss_date = WriteOnlyCell(ws, claim.loss_date)
            loss_date.number_format = DATE_FORMAT
            amount = WriteOnlyCell(ws, claim.amount)
            amount.number_format = EUR_FORMAT
            ws.append(
                [
                    claim.claim_id,
                    loss_date,
                    claim.policy_number,
                    claim.holder,
                    claim.product,
                    claim.guarantee,
                    claim.region,
                    amount,
                    claim.status,
                ]
            )
    wb.save(target)


def xlsxwriter_constant_memory(params: ExcelParams, target: Path) -> None:
    """XlsxWriter in constant_memory mode, cell by cell with typed write calls."""
    import xlsxwriter

    plans = plan_sheets(params.rows, params.sheets)
    with tempfile.TemporaryDirectory(prefix="xlsxwriter-", dir=target.parent) as tmp:
        wb = xlsxwriter.Workbook(str(target), {"constant_memory": True, "tmpdir": tmp})
        wb.set_properties(
            {
                "title": "Registre des sinistres",
                "subject": f"{params.rows} sinistres, graine {params.seed}",
                "author": "MonAssurance",
                "created": FIXED_TIMESTAMP,
            }
        )
        header = {
            "bold": True,
            "font_color": "#FFFFFF",
            "bg_color": "#1F3864",
            "pattern": 1,
            "align": "center",
            "valign": "vcenter",
            "text_wrap": True,
        }
        fmt = _Formats(wb, header)
        _xw_summary(wb.add_worksheet("Synthèse"), plans, params, fmt)
        claims = data.claims(params.seed, params.rows)
        for plan in plans:
            ws = wb.add_worksheet(plan.title)
            for col, (_, _, width) in enumerate(DATA_COLUMNS):
                ws.set_column(col, col, width)
            ws.freeze_panes(1, 0)
            ws.autofilter(0, 0, plan.rows, len(DATA_COLUMNS) - 1)
            ws.repeat_rows(0)
            ws.set_row(0, 30)
            for col, (title, _, _) in enumerate(DATA_COLUMNS):
                ws.write_string(0, col, title, fmt.header)
            write_string, write_number = ws.write_string, ws.write_number
            write_datetime, date_fmt, eur_fmt = ws.write_datetime, fmt.date, fmt.eur
            for row, claim in enumerate(itertools.islice(claims, plan.rows), start=1):
                write_string(row, 0, claim.claim_id)
                write_datetime(row, 1, claim.loss_date, date_fmt)
                write_string(row, 2, claim.policy_number)
                write_string(row, 3, claim.holder)
                write_string(row, 4, claim.product)
                write_string(row, 5, claim.guarantee)
                write_string(row, 6, claim.region)
                write_number(row, 7, claim.amount, eur_fmt)
                write_string(row, 8, claim.status)
        wb.close()


class _Formats:
    def __init__(self, wb: Any, header: dict[str, Any]) -> None:
        self.header = wb.add_format(header)
        self.date = wb.add_format({"num_format": DATE_FORMAT})
        self.eur = wb.add_format({"num_format": EUR_FORMAT})
        self.count = wb.add_format({"num_format": COUNT_FORMAT})
        self.title = wb.add_format({"bold": True, "font_size": 14})
        self.bold = wb.add_format({"bold": True})
        self.bold_eur = wb.add_format({"bold": True, "num_format": EUR_FORMAT})
        self.bold_count = wb.add_format({"bold": True, "num_format": COUNT_FORMAT})


def _xw_summary(ws: Any, plans: list[Any], params: ExcelParams, fmt: _Formats) -> None:
    """The summary sheet of ``app.reports.excel._write_summary``, in XlsxWriter calls."""
    for col, width in enumerate((34, 20, 14, 18, 15, 16, 16)):
        ws.set_column(col, col, width)
    ws.write_string(0, 0, "MonAssurance — Registre des sinistres", fmt.title)
    ws.write_string(
        1,
        0,
        f"Sinistres survenus du {data.WINDOW_START:%d/%m/%Y} au {data.WINDOW_END:%d/%m/%Y}, "
        f"situation au {data.AS_OF:%d/%m/%Y}.",
    )
    ws.write_string(
        2, 0, f"Paramètres : {params.rows} lignes, {params.sheets} feuilles, graine {params.seed}."
    )
    headers = ("Feuille", "Période", "Sinistres", "Charge totale", "Coût moyen")
    headers += ("Sinistre max", "Dossiers réglés")
    for col, title in enumerate(headers):
        ws.write_string(4, col, title, fmt.header)
    first = 6
    for row, plan in enumerate(plans, start=first):
        r = row - 1
        ws.write_string(r, 0, plan.title)
        ws.write_string(r, 1, f"{plan.first_day:%m/%Y} – {plan.last_day:%m/%Y}")
        ws.write_formula(r, 2, f"=COUNTA({plan.ref('A')})", fmt.count)
        ws.write_formula(r, 3, f"=SUM({plan.ref('H')})", fmt.eur)
        ws.write_formula(r, 4, f"=IF(C{row}=0,0,D{row}/C{row})", fmt.eur)
        ws.write_formula(r, 5, f"=MAX({plan.ref('H')})", fmt.eur)
        ws.write_formula(r, 6, f'=COUNTIF({plan.ref("I")},"Réglé")', fmt.count)
    last = first + len(plans) - 1
    r, row = last, last + 1
    ws.write_string(r, 0, "Total", fmt.bold)
    ws.write_string(r, 1, "", fmt.bold)
    ws.write_formula(r, 2, f"=SUM(C{first}:C{last})", fmt.bold_count)
    ws.write_formula(r, 3, f"=SUM(D{first}:D{last})", fmt.bold_eur)
    ws.write_formula(r, 4, f"=IF(C{row}=0,0,D{row}/C{row})", fmt.bold_eur)
    ws.write_formula(r, 5, f"=MAX(F{first}:F{last})", fmt.bold_eur)
    ws.write_formula(r, 6, f"=SUM(G{first}:G{last})", fmt.bold_count)
    ws.write_string(last + 2, 0, "Lignes générées (contrôle)")
    ws.write_number(last + 2, 2, params.rows)


def ours(params: ExcelParams, target: Path) -> None:
    """The current renderer (openpyxl skeleton + our row serialiser), without progress."""
    ExcelRenderer().render(params, target, NullProgress())


WRITERS: dict[str, Writer] = {
    "ours": ours,
    "openpyxl-lxml": openpyxl_write_only,
    "xlsxwriter": xlsxwriter_constant_memory,
}


# --------------------------------------------------------------------------- sameness


def _cells(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every cell of every sheet: (coordinate, value, number format, bold, size, fill)."""
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True)
    out = {}
    for ws in wb.worksheets:
        rows = []
        for row in ws.iter_rows():
            for c in row:
                if c.value is None or c.value == "":
                    continue  # XlsxWriter writes the bold empty "Total" period as blank
                fill = _rgb(c.fill.fgColor) if c.fill.fill_type else None
                color = _rgb(c.font.color) if c.font.color is not None else None
                font = (bool(c.font.b), float(c.font.sz or 11), color)
                align = (c.alignment.horizontal, c.alignment.vertical, c.alignment.wrap_text)
                rows.append((c.coordinate, c.value, c.number_format, font, fill, align))
        out[ws.title] = rows
    wb.close()
    return out


def _rgb(color: Any) -> str | None:
    """An explicit RGB colour without its alpha; None for theme or indexed colours."""
    return color.rgb[-6:] if color.type == "rgb" else None


def _settings(path: Path) -> dict[str, tuple[Any, ...]]:
    """Per sheet: widths (rounded), header height, freeze panes, filter, print titles."""
    import openpyxl

    wb = openpyxl.load_workbook(path)
    out = {}
    for ws in wb.worksheets:
        # XlsxWriter stores a width w as w + 5/7 (its padding) and merges equal neighbours
        # into one <col min max>; openpyxl stores each w as is.
        widths = tuple(
            int(dim.width)
            for dim in ws.column_dimensions.values()
            for _ in range(dim.min, dim.max + 1)
        )
        height = ws.row_dimensions[1].height if ws.title != "Synthèse" else None
        out[ws.title] = (
            widths,
            height,
            ws.freeze_panes,
            ws.auto_filter.ref,
            str(ws.print_title_rows or ""),
        )
    props = wb.properties
    out["(properties)"] = (props.creator, props.title, props.subject, props.created)
    out["(calc)"] = (bool(wb.calculation.fullCalcOnLoad),)
    return out


def check(rows: int = 2_000, sheets: int = 3, seed: int = 4) -> None:
    """Render with every writer and compare each peer's workbook with ours."""
    params = ExcelParams(rows=rows, sheets=sheets, seed=seed)
    with tempfile.TemporaryDirectory() as folder:
        paths = {name: Path(folder, f"{name}.xlsx") for name in WRITERS}
        for name, write in WRITERS.items():
            write(params, paths[name])
        reference_cells, reference_settings = _cells(paths["ours"]), _settings(paths["ours"])
        count = sum(len(v) for v in reference_cells.values())
        failed = False
        for name in ("openpyxl-lxml", "xlsxwriter"):
            cells, settings = _cells(paths[name]), _settings(paths[name])
            diffs = [
                (sheet, a, b)
                for sheet in reference_cells
                for a, b in itertools.zip_longest(reference_cells[sheet], cells.get(sheet, []))
                if a != b
            ]
            diffs += [
                (key, a, settings.get(key))
                for key, a in reference_settings.items()
                if settings.get(key) != a
            ]
            failed |= bool(diffs)
            verdict = "same" if not diffs else f"{len(diffs)} differences, first: {diffs[:3]}"
            print(f"{name}: {count:,} cells and sheet settings compared with ours: {verdict}")
        if failed:
            sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the three workbooks")
    parser.add_argument("--write", choices=WRITERS, help="render one workbook with this writer")
    parser.add_argument("--rows", type=int, default=2_000)
    parser.add_argument("--sheets", type=int, default=3)
    parser.add_argument("--out", type=Path, help="where --write puts the workbook")
    args = parser.parse_args()
    if args.write:
        with tempfile.TemporaryDirectory() as folder:
            target = args.out or Path(folder, "out.xlsx")
            WRITERS[args.write](ExcelParams(rows=args.rows, sheets=args.sheets), target)
    else:
        check(rows=args.rows, sheets=args.sheets)
