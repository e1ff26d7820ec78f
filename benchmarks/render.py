"""Benchmark the report renderers against the bare libraries doing the same volume.

Every measurement runs in a fresh Python subprocess, which reports its own wall time
(of the render only, imports excluded) and its peak RSS (``ru_maxrss``, imports
included), so memory is per size. Prints a Markdown table.

    .venv/bin/python benchmarks/render.py            # full sizes, a few minutes
    .venv/bin/python benchmarks/render.py --quick    # small sizes, seconds
    .venv/bin/python benchmarks/render.py --output benchmarks/results/render.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

FULL = [("pdf", 50), ("pdf", 500), ("excel", 10_000), ("excel", 100_000), ("excel", 1_000_000)]
FULL += [("analysis", 100_000)]
QUICK = [("pdf", 5), ("pdf", 20), ("excel", 1_000), ("excel", 5_000), ("analysis", 5_000)]
EXCEL_SHEETS = 3
EXCEL_COLUMNS = 9
PDF_ROWS_PER_PAGE = 45
BARE = {
    "pdf": "reportlab canvas, same pages, 45 rows x 8 cells + header/footer per page",
    "excel": "openpyxl write_only loop, same rows x 9 columns over 3 sheets",
    "analysis": "same claims summed in plain Python + reportlab canvas, 4 pages",
}


# --------------------------------------------------------------------------- children


def ours(kind: str) -> Callable[[int, Path], None]:
    from app.domain.jobs import AnalysisParams, ExcelParams, PdfParams
    from app.domain.progress import NullProgress
    from app.reports import AnalysisRenderer, ExcelRenderer, PdfRenderer

    def pdf(size: int, target: Path) -> None:
        PdfRenderer().render(PdfParams(pages=size), target, NullProgress())

    def excel(size: int, target: Path) -> None:
        params = ExcelParams(rows=size, sheets=EXCEL_SHEETS)
        ExcelRenderer().render(params, target, NullProgress())

    def analysis(size: int, target: Path) -> None:
        AnalysisRenderer().render(AnalysisParams(rows=size), target, NullProgress())

    return {"pdf": pdf, "excel": excel, "analysis": analysis}[kind]


def bare(kind: str) -> Callable[[int, Path], None]:
    from app.reports import data
    from openpyxl import Workbook
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen.canvas import Canvas

    def pdf(pages: int, target: Path) -> None:
        canvas = Canvas(str(target), pagesize=A4, invariant=1, pageCompression=1)
        width, height = A4
        for page in range(1, pages + 1):
            canvas.setFont("Helvetica-Bold", 11)
            canvas.drawString(34, height - 34, "MonAssurance")
            canvas.setFont("Helvetica", 8)
            canvas.drawRightString(width - 34, 28, f"Page {page} / {pages}")
            canvas.setFont("Helvetica", 7.5)
            for row in range(PDF_ROWS_PER_PAGE):
                y = height - 90 - row * 14
                n = page * PDF_ROWS_PER_PAGE + row
                cells = [f"SIN-2024-{n:07d}", "01/01/2024", "AU-00001234", "Marie Dupont"]
                cells += ["Collision", "Île-de-France", "1 234,56 €", "Réglé"]
                for col, cell in enumerate(cells):
                    canvas.drawString(34 + col * 65, y, cell)
            canvas.showPage()
        canvas.save()

    def excel(rows: int, target: Path) -> None:
        wb = Workbook(write_only=True)
        sheets = [wb.create_sheet(f"Sheet {i}") for i in range(EXCEL_SHEETS)]
        day = date(2024, 1, 1)
        for i in range(rows):
            sheets[i * EXCEL_SHEETS // rows].append(
                [
                    f"SIN-2024-{i:07d}",
                    day,
                    "AU-00001234",
                    "Marie Dupont",
                    "Auto",
                    "Collision",
                    "Île-de-France",
                    1234.56 + i % 100,
                    "Réglé",
                ]
            )
        wb.save(target)

    def analysis(rows: int, target: Path) -> None:
        total = sum(round(c.amount * 100) for c in data.claims(0, rows))
        assert total > 0
        pdf(4, target)

    return {"pdf": pdf, "excel": excel, "analysis": analysis}[kind]


def run_child(role: str, kind: str, size: int) -> None:
    """Measure one render in this process and print {"seconds", "rss_mb", "bytes"}."""
    job = ours(kind) if role == "ours" else bare(kind)  # imports happen here, untimed
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder, f"out.{'xlsx' if kind == 'excel' else 'pdf'}")
        started = time.perf_counter()
        job(size, target)
        seconds = time.perf_counter() - started
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"seconds": seconds, "rss_mb": rss_mb, "bytes": target.stat().st_size}))


# --------------------------------------------------------------------------- parent


Result = dict[str, float]


def measure(role: str, kind: str, size: int) -> Result:
    command = [sys.executable, __file__, "--child", role, kind, str(size)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: Result = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def unit(kind: str) -> str:
    return {"pdf": "pages", "excel": "rows", "analysis": "claims"}[kind]


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("reportlab", "openpyxl", "lxml", "rl_accel"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} absent")
    return ", ".join(found)


def targets(results: dict[tuple[str, int], tuple[Result, Result]]) -> list[str]:
    """The brief's targets, checked against the figures measured in this run."""
    lines = []

    def check(label: str, ok: bool, detail: str) -> None:
        lines.append(f"- {label}: {detail} — {'met' if ok else 'MISSED'}.")

    if ("pdf", 50) in results:
        seconds = results["pdf", 50][0]["seconds"]
        check("PDF 50 pages under 1 s", seconds < 1, f"{seconds:.2f} s")
    if ("excel", 100_000) in results:
        ours_result, bare_result = results["excel", 100_000]
        ratio = ours_result["seconds"] / bare_result["seconds"]
        check(
            "Excel 100,000 rows under 10 s",
            ours_result["seconds"] < 10,
            f"{ours_result['seconds']:.2f} s",
        )
        check("Excel 100,000 rows within 1.5x bare openpyxl", ratio <= 1.5, f"{ratio:.2f}x")
    excel = [
        ours_result["rss_mb"] for (kind, _), (ours_result, _) in results.items() if kind == "excel"
    ]
    if excel:
        detail = f"{min(excel):.0f}–{max(excel):.0f} MB across sizes"
        check(
            "Excel peak RSS under 100 MB and flat",
            max(excel) < 100 and max(excel) - min(excel) < 20,
            detail,
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--output", type=Path, help="also write the Markdown table here")
    parser.add_argument(
        "--child", nargs=3, metavar=("ROLE", "KIND", "SIZE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        role, kind, size = args.child
        run_child(role, kind, int(size))
        return

    cpus = len(os.sched_getaffinity(0))
    command = "python benchmarks/render.py" + " ".join(["", *sys.argv[1:]])
    lines = [
        f"Command: `{command}`",
        "",
        f"Python {platform.python_version()}, {cpus} CPU(s), {platform.machine()}; {versions()}.",
        "Each cell: one fresh subprocess; time = the render call, RSS = the process peak.",
        "",
        "| report | size | ours (s) | ours peak RSS (MB) | bare (s) | bare peak RSS (MB) "
        "| time ours/bare | output (KB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    print("\n".join(lines), flush=True)
    results: dict[tuple[str, int], tuple[Result, Result]] = {}
    for kind, size in QUICK if args.quick else FULL:
        ours_result = measure("ours", kind, size)
        bare_result = measure("bare", kind, size)
        row = (
            f"| {kind} | {size:,} {unit(kind)} | {ours_result['seconds']:.2f} "
            f"| {ours_result['rss_mb']:.0f} | {bare_result['seconds']:.2f} "
            f"| {bare_result['rss_mb']:.0f} "
            f"| {ours_result['seconds'] / bare_result['seconds']:.2f} "
            f"| {ours_result['bytes'] / 1024:,.0f} |"
        )
        print(row, flush=True)
        lines.append(row)
        results[kind, size] = (ours_result, bare_result)
    tail = ["", "Bare baselines:"] + [f"- {kind}: {what}." for kind, what in BARE.items()]
    tail += ["", "Targets:", *targets(results)]
    print("\n".join(tail))
    lines += tail
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
