"""Benchmark the report renderers against the bare libraries doing the same volume.

Every measurement runs in a fresh Python subprocess, which reports its own wall time
(of the render only, imports excluded) and its peak RSS (``ru_maxrss``, imports
included), so memory is per size. Prints Markdown tables.

A second table puts our Excel writer beside the same workbook written by maintained
libraries (benchmarks/xlsx_peers.py: openpyxl write-only with lxml, XlsxWriter
constant_memory), ``--repeat`` rounds alternating ours, openpyxl, XlsxWriter, with the
median and the min–max of each. Those peers need the bench extra:
``.venv/bin/pip install -e '.[bench]'`` (lxml, XlsxWriter).

    .venv/bin/python benchmarks/render.py            # full sizes, about 20 minutes
    .venv/bin/python benchmarks/render.py --quick    # small sizes, seconds
    .venv/bin/python benchmarks/render.py --only excel --repeat 5
    .venv/bin/python benchmarks/render.py --rounds 5 --only pdf --only analysis
    .venv/bin/python benchmarks/render.py --output benchmarks/results/render.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

KINDS = ("pdf", "excel", "analysis")

FULL = [("pdf", 50), ("pdf", 500), ("excel", 10_000), ("excel", 100_000), ("excel", 1_000_000)]
FULL += [("analysis", 100_000)]
QUICK = [("pdf", 5), ("pdf", 20), ("excel", 1_000), ("excel", 5_000), ("analysis", 5_000)]
PEER_FULL = [100_000, 1_000_000]
PEER_QUICK = [1_000, 5_000]
PEERS = ("ours", "openpyxl-lxml", "xlsxwriter")
"""Excel writers of the second table, run in this order in every round."""
PEER_RULE = 1.5
"""Issue 12: a library within 1.5x of our writer's time replaces it."""
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
    from app.domain.params import AnalysisParams, ExcelParams, PdfParams
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


def peer(role: str) -> Callable[[int, Path], None]:
    import xlsx_peers  # benchmarks/, this script's folder
    from app.domain.params import ExcelParams

    write = xlsx_peers.WRITERS[role]
    if role == "openpyxl-lxml":
        import lxml  # noqa: F401 - openpyxl picks it up; fail here rather than measure without

    def excel(size: int, target: Path) -> None:
        write(ExcelParams(rows=size, sheets=EXCEL_SHEETS), target)

    return excel


def run_child(role: str, kind: str, size: int) -> None:
    """Measure one render in this process and print {"seconds", "rss_mb", "bytes"}."""
    # imports happen here, untimed
    job = {"ours": ours, "bare": bare}[role](kind) if role in ("ours", "bare") else peer(role)
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
    for name in ("reportlab", "openpyxl", "lxml", "rl_accel", "xlsxwriter"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} absent")
    return ", ".join(found)


def targets(results: dict[tuple[str, int], tuple[Result, Result, float]]) -> list[str]:
    """Issue 28's targets, checked against the figures measured in this run."""
    lines = []

    def check(label: str, ok: bool, detail: str) -> None:
        lines.append(f"- {label}: {detail} — {'met' if ok else 'MISSED'}.")

    for kind, size, label in (("pdf", 50, "PDF 50 pages"), ("analysis", 100_000, "Analysis")):
        if (kind, size) in results:
            ratio = results[kind, size][2]
            check(f"{label} within 1.3x the bare baseline", ratio <= 1.3, f"{ratio:.2f}x")
    if ("pdf", 500) in results:
        seconds = results["pdf", 500][0]["seconds"]
        check("PDF 500 pages under 2 s", seconds < 2, f"{seconds:.2f} s")
    if ("excel", 1_000_000) in results:
        seconds = results["excel", 1_000_000][0]["seconds"]
        check("Excel 1,000,000 rows under 10 s", seconds < 10, f"{seconds:.2f} s")
    excel = [ours["rss_mb"] for (kind, _), (ours, _, _) in results.items() if kind == "excel"]
    if excel:
        detail = f"{min(excel):.0f}–{max(excel):.0f} MB across sizes"
        check(
            "Excel peak RSS under 100 MB and flat",
            max(excel) < 100 and max(excel) - min(excel) < 20,
            detail,
        )
    return lines


def rounds_of(kind: str, size: int, rounds: int) -> tuple[Result, Result, float]:
    """``rounds`` alternating pairs (ours, then bare): the median of each side's figures
    and the median of the per-round time ratios."""
    pairs = [(measure("ours", kind, size), measure("bare", kind, size)) for _ in range(rounds)]

    def median(side: int) -> Result:
        return {k: statistics.median(p[side][k] for p in pairs) for k in pairs[0][side]}

    ratio = statistics.median(o["seconds"] / b["seconds"] for o, b in pairs)
    return median(0), median(1), ratio


def peers_missing() -> list[str]:
    from importlib.util import find_spec

    return [name for name in ("lxml", "xlsxwriter") if find_spec(name) is None]


def spread(values: list[float], fmt: str) -> str:
    """Median and min–max of ``values``."""
    median = statistics.median(values)
    return f"{median:{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"


def peer_table(sizes: list[int], repeat: int) -> tuple[list[str], list[str]]:
    """Rows of the Excel writers table and the verdict lines of issue 12's rule."""
    lines = [
        "",
        f"Excel writers, same workbook ({EXCEL_SHEETS} data sheets + a formula summary), "
        f"{repeat} rounds alternating {', '.join(PEERS)}; median (min–max):",
        "",
        "| writer | rows | time (s) | peak RSS (MB) | time / ours (per round) | output (KB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    print("\n".join(lines), flush=True)
    verdicts = []
    for size in sizes:
        runs: dict[str, list[Result]] = {role: [] for role in PEERS}
        for _ in range(repeat):
            for role in PEERS:
                runs[role].append(measure(role, "excel", size))
        base = [r["seconds"] for r in runs["ours"]]
        for role in PEERS:
            seconds = [r["seconds"] for r in runs[role]]
            ratios = [s / b for s, b in zip(seconds, base, strict=True)]
            row = (
                f"| {role} | {size:,} | {spread(seconds, '.2f')} "
                f"| {spread([r['rss_mb'] for r in runs[role]], '.0f')} "
                f"| {spread(ratios, '.2f')} "
                f"| {statistics.median(r['bytes'] for r in runs[role]) / 1024:,.0f} |"
            )
            print(row, flush=True)
            lines.append(row)
            if role != "ours":
                ratio = statistics.median(ratios)
                verdicts.append(
                    f"- {role} at {size:,} rows: {ratio:.2f}x our time — "
                    f"{'within' if ratio <= PEER_RULE else 'not within'} {PEER_RULE}x."
                )
    return lines, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--output", type=Path, help="also write the Markdown tables here")
    parser.add_argument(
        "--only", choices=KINDS, action="append", help="only this report type (repeatable)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of the Excel writers table (default 3)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternating ours/bare pairs per cell of the main table; medians (default 1)",
    )
    parser.add_argument(
        "--no-peers", action="store_true", help="skip the Excel writers table (no lxml needed)"
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("ROLE", "KIND", "SIZE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        role, kind, size = args.child
        run_child(role, kind, int(size))
        return
    kinds = args.only or KINDS
    with_peers = "excel" in kinds and not args.no_peers
    if with_peers and (missing := peers_missing()):
        parser.exit(
            2,
            f"The Excel writers table needs {' and '.join(missing)}: "
            ".venv/bin/pip install -e '.[bench]' (or pass --no-peers).\n",
        )

    cpus = len(os.sched_getaffinity(0))
    command = "python benchmarks/render.py" + " ".join(["", *sys.argv[1:]])
    lines = [
        f"Command: `{command}`",
        "",
        f"Python {platform.python_version()}, {cpus} CPU(s), {platform.machine()}; {versions()}.",
        "Each cell: one fresh subprocess per render; time = the render call, RSS = the "
        f"process peak; the median of {args.rounds} alternating ours/bare round(s), and "
        "ours/bare the median of the rounds' ratios.",
        "",
        "| report | size | ours (s) | ours peak RSS (MB) | bare (s) | bare peak RSS (MB) "
        "| time ours/bare | output (KB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    print("\n".join(lines), flush=True)
    results: dict[tuple[str, int], tuple[Result, Result, float]] = {}
    for kind, size in QUICK if args.quick else FULL:
        if kind not in kinds:
            continue
        ours_result, bare_result, ratio = results[kind, size] = rounds_of(kind, size, args.rounds)
        row = (
            f"| {kind} | {size:,} {unit(kind)} | {ours_result['seconds']:.2f} "
            f"| {ours_result['rss_mb']:.0f} | {bare_result['seconds']:.2f} "
            f"| {bare_result['rss_mb']:.0f} | {ratio:.2f} "
            f"| {ours_result['bytes'] / 1024:,.0f} |"
        )
        print(row, flush=True)
        lines.append(row)
    tail = ["", "Bare baselines:"]
    tail += [f"- {kind}: {what}." for kind, what in BARE.items() if kind in kinds]
    print("\n".join(tail), flush=True)
    lines += tail
    verdicts: list[str] = []
    if with_peers:
        peer_lines, verdicts = peer_table(PEER_QUICK if args.quick else PEER_FULL, args.repeat)
        lines += peer_lines
    tail = ["", "Targets:", *targets(results), *verdicts]
    print("\n".join(tail))
    lines += tail
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
