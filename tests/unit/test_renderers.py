"""Renderers, checked the way a reader would: open every output and look inside."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import get_type_hints

import openpyxl
import pytest
from app.domain.errors import RenderError
from app.domain.params import (
    PARAMS_MODELS,
    AnalysisParams,
    DummyParams,
    ExcelParams,
    PdfParams,
    ReportParams,
)
from app.domain.progress import JobCancelled, NullProgress
from app.domain.queues import ReportType
from app.reports import (
    AnalysisRenderer,
    DummyRenderer,
    ExcelRenderer,
    PdfRenderer,
    data,
    default_renderers,
)
from app.reports._pdfstyle import eur_cents, fr_number, percent
from app.reports.excel import CHUNK_ROWS, DATA_COLUMNS, EUR_FORMAT, plan_sheets
from app.reports.pdf import claims_count
from pypdf import PdfReader
from pypdf.generic import ContentStream

Renderer = DummyRenderer | PdfRenderer | ExcelRenderer | AnalysisRenderer


class RecordingProgress:
    """Records every checkpoint; optionally raises JobCancelled on the n-th call."""

    def __init__(self, *, attempt: int = 1, cancel_on: int | None = None) -> None:
        self._attempt = attempt
        self._cancel_on = cancel_on
        self.calls: list[tuple[float, str]] = []

    @property
    def attempt(self) -> int:
        return self._attempt

    def advance(self, fraction: float, stage: str) -> None:
        self.calls.append((fraction, stage))
        if len(self.calls) == self._cancel_on:
            raise JobCancelled

    @property
    def fractions(self) -> list[float]:
        return [f for f, _ in self.calls]


def render(
    renderer: Renderer,
    params: ReportParams,
    folder: Path,
    progress: RecordingProgress | NullProgress | None = None,
) -> Path:
    target = folder / f"report-{params.seed}-{time.perf_counter_ns()}.{renderer.extension}"
    renderer.render(params, target, progress or NullProgress())
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def text(reader: PdfReader, page: int) -> str:
    return reader.pages[page].extract_text().replace("\xa0", " ")


def plain(formatted: str) -> str:
    return formatted.replace("\xa0", " ")


# --------------------------------------------------------------------------- registry


def test_default_renderers_cover_every_report_type() -> None:
    renderers = default_renderers()
    assert set(renderers) == set(ReportType)
    assert {t: (r.content_type, r.extension) for t, r in renderers.items()} == {
        ReportType.DUMMY: ("application/json", "json"),
        ReportType.PDF: ("application/pdf", "pdf"),
        ReportType.EXCEL: (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        ),
        ReportType.ANALYSIS: ("application/pdf", "pdf"),
    }


def test_each_report_type_gets_the_renderer_of_its_own_parameters() -> None:
    # Renderers trust their parameters' type: the registry is what pairs them.
    for report_type, renderer in default_renderers().items():
        hints = get_type_hints(type(renderer).render)
        assert hints["params"] is PARAMS_MODELS[report_type], report_type


# --------------------------------------------------------------------------- data


def test_data_is_deterministic_lazy_and_consistent() -> None:
    first = list(data.claims(5, 3_000))
    assert first == list(data.claims(5, 3_000))
    assert first != list(data.claims(6, 3_000))
    assert len(first) == 3_000
    assert [c.loss_date for c in first] == sorted(c.loss_date for c in first)
    assert all(data.WINDOW_START <= c.loss_date <= data.WINDOW_END for c in first)
    assert {c.region for c in first} == set(data.REGIONS)
    assert {c.status for c in first} <= set(data.STATUSES)
    portfolio = data.Portfolio.for_claims(5, 3_000)
    for claim in first[::97]:
        policy = portfolio.policy(int(claim.policy_number.split("-")[1]))
        assert (policy.number, policy.holder, policy.product, policy.region) == (
            claim.policy_number,
            claim.holder,
            claim.product,
            claim.region,
        )
    started = time.perf_counter()
    head = list(itertools.islice(data.claims(5, 1_000_000), 10))  # lazy: no million rows
    assert len(head) == 10
    assert time.perf_counter() - started < 1.0
    assert isinstance(data.claims(5, 10), Iterator)
    assert sum(data.daily_counts(1_000_000)) == 1_000_000


# Digests taken from the generator as it stood before its hot loops were rewritten
# (commit 2465583): how the draws are made changed, not what they are.
CLAIMS_DIGEST = "08ed6b63aa2aa296275325f050fb59c5f252f1f38ab0e79689746c54ddda0b4a"
PREMIUMS_DIGEST = "229f7d90dd5b84240beebdf4a021da78c1aeef2410c48688175b99bb0d8f58ea"


def test_claims_are_the_draws_they_always_were() -> None:
    digest = hashlib.sha256()
    for seed, count in ((0, 20_000), (7, 1_234), (42, 1)):
        for claim in data.claims(seed, count):
            digest.update(repr(tuple(claim)).encode())
    assert digest.hexdigest() == CLAIMS_DIGEST


def test_earned_premiums_are_what_they_always_were() -> None:
    digest = hashlib.sha256()
    for seed, count in ((0, 100_000), (7, 1_234), (42, 100), (3, 49_999)):
        totals = data.Portfolio.for_claims(seed, count).earned_premium_cents()
        digest.update(repr(sorted(totals.items())).encode())
    assert digest.hexdigest() == PREMIUMS_DIGEST


@pytest.mark.parametrize(("seed", "claims_count"), [(0, 100), (11, 7_777), (2**40 + 3, 20_000)])
def test_earned_premiums_add_up_the_policies(seed: int, claims_count: int) -> None:
    portfolio = data.Portfolio.for_claims(seed, claims_count)
    expected = dict.fromkeys(data.REGIONS, 0)
    for policy in portfolio.policies():
        expected[policy.region] += round(policy.annual_premium * 100) * 2
    done: list[int] = []
    assert portfolio.earned_premium_cents(done.append, every=1_000) == expected
    assert done == list(range(1_000, portfolio.size + 1, 1_000))


# --------------------------------------------------------------------------- PDF


@pytest.mark.parametrize("pages", [1, 2, 3, 4, 50, 137])
def test_pdf_has_exactly_the_requested_pages(pages: int, tmp_path: Path) -> None:
    path = render(PdfRenderer(), PdfParams(pages=pages, seed=9), tmp_path)
    reader = PdfReader(path)
    assert len(reader.pages) == pages
    first, last = text(reader, 0), text(reader, -1)
    assert "Rapport de sinistralité" in first
    assert "MonAssurance" in first
    assert f"Page 1 / {pages}" in first
    assert f"Page {pages} / {pages}" in last
    assert "Totaux par statut" in last
    claims = list(data.claims(9, claims_count(pages)))
    total = sum(round(c.amount * 100) for c in claims)
    assert plain(f"Total\n{fr_number(len(claims))}\n{eur_cents(total)}\n") in last
    assert claims[-1].claim_id in last
    if pages > 2:
        middle = text(reader, pages // 2)
        assert "N° sinistre" in middle  # the header row is repeated on every page


# --------------------------------------------------------------------------- Excel


def test_excel_workbook_has_summary_formulas_and_all_rows(tmp_path: Path) -> None:
    params = ExcelParams(rows=5_000, sheets=4, seed=3)
    path = render(ExcelRenderer(), params, tmp_path)
    wb = openpyxl.load_workbook(path)
    plans = plan_sheets(params.rows, params.sheets)
    assert wb.sheetnames == ["Synthèse", *(p.title for p in plans)]
    claims = iter(data.claims(params.seed, params.rows))
    for plan in plans:
        ws = wb[plan.title]
        assert ws.max_row - 1 == plan.rows
        assert [c.value for c in ws[1]] == [title for title, _, _ in DATA_COLUMNS]
        assert ws.freeze_panes == "A2"
        assert ws.auto_filter.ref == f"A1:I{plan.rows + 1}"
        assert ws.column_dimensions["A"].width == DATA_COLUMNS[0][2]
        assert ws["H2"].number_format == EUR_FORMAT
        assert ws["B2"].is_date
        expected = list(itertools.islice(claims, plan.rows))
        values = list(ws.iter_rows(min_row=2, values_only=True))
        assert [v[0] for v in values] == [c.claim_id for c in expected]
        assert [v[7] for v in values] == [c.amount for c in expected]
        assert all(plan.first_day <= v[1].date() <= plan.last_day for v in values)
    assert sum(p.rows for p in plans) == params.rows

    summary = wb["Synthèse"]
    for row, plan in enumerate(plans, start=6):
        count, total = summary[f"C{row}"].value, summary[f"D{row}"].value
        assert count == f"=COUNTA('{plan.title}'!A2:A{plan.rows + 1})"
        assert total == f"=SUM('{plan.title}'!H2:H{plan.rows + 1})"
        # The range the formula sums covers exactly the sheet's data rows.
        first, last = map(int, re.findall(r"H(\d+)", total))
        amounts = [wb[plan.title][f"H{r}"].value for r in range(first, last + 1)]
        assert len(amounts) == plan.rows
    total_row = 6 + len(plans)
    assert summary[f"A{total_row}"].value == "Total"
    assert summary[f"C{total_row}"].value == f"=SUM(C6:C{total_row - 1})"
    assert all(str(summary.cell(total_row, col).value).startswith("=") for col in range(3, 8))


def test_excel_edge_case_more_sheets_than_rows(tmp_path: Path) -> None:
    path = render(ExcelRenderer(), ExcelParams(rows=1, sheets=12), tmp_path)
    wb = openpyxl.load_workbook(path)
    assert len(wb.sheetnames) == 13
    assert sum(ws.max_row - 1 for ws in wb.worksheets[1:]) == 1
    assert wb["Synthèse"]["C6"].value.startswith("=COUNTA(")


def test_excel_zip_entries_have_fixed_timestamps(tmp_path: Path) -> None:
    path = render(ExcelRenderer(), ExcelParams(rows=10, sheets=1), tmp_path)
    with zipfile.ZipFile(path) as archive:
        assert {i.date_time for i in archive.infolist()} == {(2026, 1, 1, 0, 0, 0)}
        assert b"2026-01-31T08:00:00Z" in archive.read("docProps/core.xml")


# --------------------------------------------------------------------------- analysis

TEAL, ORANGE = [0.180392, 0.458824, 0.713725], [0.772549, 0.352941, 0.066667]


def _operations(reader: PdfReader, page: int) -> list[tuple[list[object], bytes]]:
    ops = ContentStream(reader.pages[page].get_contents(), reader).operations
    return [
        ([round(float(x), 6) for x in args] if op in (b"rg", b"RG") else args, op)
        for args, op in ops
    ]


def test_analysis_has_charts_and_figures_matching_the_data(tmp_path: Path) -> None:
    params = AnalysisParams(rows=3_000, seed=11)
    reader = PdfReader(render(AnalysisRenderer(), params, tmp_path))
    assert len(reader.pages) == 4
    claims = list(data.claims(params.seed, params.rows))
    cents = sum(round(c.amount * 100) for c in claims)
    policies = data.Portfolio.for_claims(params.seed, params.rows).policies()
    premiums = sum(round(p.annual_premium * 100) * 2 for p in policies)
    summary = text(reader, 0)
    assert "Analyse de la sinistralité" in summary
    assert f"{plain(fr_number(len(claims)))} sinistres ont été déclarés" in summary
    assert f"charge totale de {plain(eur_cents(cents))}" in summary
    assert f"ratio S/P de {plain(percent(cents / premiums))}" in summary

    histogram = _operations(reader, 1)
    assert sum(1 for args, op in histogram if op == b"rg" and args == TEAL) == 10  # bars
    bars = _operations(reader, 2)
    assert sum(1 for args, op in bars if op == b"rg" and args in (TEAL, ORANGE)) == 13
    regions = text(reader, 2)
    assert all(regions.count(region) >= 2 for region in data.REGIONS)  # axis and table
    trend = _operations(reader, 3)
    assert {b"RG", b"l"} <= {op for _, op in trend}
    assert sum(1 for _, op in trend if op == b"l") >= 2 * 23  # two lines of 24 points
    assert "Page 4 / 4" in text(reader, 3)


# --------------------------------------------------------------------------- all types

SMALL_CASES = [
    pytest.param(DummyRenderer(), DummyParams(seed=5), DummyParams(seed=6), id="dummy"),
    pytest.param(PdfRenderer(), PdfParams(pages=3, seed=5), PdfParams(pages=3, seed=6), id="pdf"),
    pytest.param(
        ExcelRenderer(),
        ExcelParams(rows=700, sheets=2, seed=5),
        ExcelParams(rows=700, sheets=2, seed=6),
        id="excel",
    ),
    pytest.param(
        AnalysisRenderer(),
        AnalysisParams(rows=500, seed=5),
        AnalysisParams(rows=500, seed=6),
        id="analysis",
    ),
]


@pytest.mark.parametrize(("renderer", "params", "other"), SMALL_CASES)
def test_same_params_give_the_same_bytes(
    renderer: Renderer, params: ReportParams, other: ReportParams, tmp_path: Path
) -> None:
    first = render(renderer, params, tmp_path)
    second = render(renderer, params, tmp_path)
    third = render(renderer, other, tmp_path)
    assert first != second
    assert sha256(first) == sha256(second)
    assert sha256(first) != sha256(third)


@pytest.mark.parametrize(
    ("renderer", "params", "min_calls"),
    [
        pytest.param(DummyRenderer(), DummyParams(), 10, id="dummy"),
        pytest.param(PdfRenderer(), PdfParams(pages=20), 20, id="pdf"),
        pytest.param(
            ExcelRenderer(), ExcelParams(rows=9_000, sheets=3), 9_000 // CHUNK_ROWS, id="excel"
        ),
        pytest.param(AnalysisRenderer(), AnalysisParams(rows=20_000), 4 + 4, id="analysis"),
    ],
)
def test_progress_is_monotonic_frequent_and_ends_at_one(
    renderer: Renderer, params: ReportParams, min_calls: int, tmp_path: Path
) -> None:
    progress = RecordingProgress()
    render(renderer, params, tmp_path, progress)
    fractions = progress.fractions
    assert fractions == sorted(fractions)
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions[-1] == 1.0
    assert progress.calls[-1][1] == "done"
    assert len(fractions) >= min_calls
    if isinstance(params, PdfParams):
        pages = [stage for _, stage in progress.calls if stage.startswith("page ")]
        assert pages == [f"page {n}/{params.pages}" for n in range(1, params.pages + 1)]


@pytest.mark.parametrize(("renderer", "params", "_other"), SMALL_CASES)
def test_cancellation_at_a_checkpoint_stops_the_render(
    renderer: Renderer, params: ReportParams, _other: ReportParams, tmp_path: Path
) -> None:
    progress = RecordingProgress(cancel_on=3)
    with pytest.raises(JobCancelled):
        render(renderer, params, tmp_path, progress)
    assert len(progress.calls) == 3
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no temporary folder left


# --------------------------------------------------------------------------- dummy


def test_dummy_fails_on_the_first_attempts_then_succeeds(tmp_path: Path) -> None:
    params = DummyParams(seed=4, simulate_failures=2)
    target = tmp_path / "dummy.json"
    for attempt in (1, 2):
        with pytest.raises(RenderError) as failure:
            DummyRenderer().render(params, target, RecordingProgress(attempt=attempt))
        assert failure.value.code == "SIMULATED_FAILURE"
        assert failure.value.retryable
        assert str(attempt) in failure.value.message
        assert not target.exists()
    DummyRenderer().render(params, target, RecordingProgress(attempt=3))
    document = json.loads(target.read_text(encoding="utf-8"))
    assert document["report"] == "dummy"
    assert document["seed"] == 4
    assert document["summary"]["total"] == sum(document["summary"]["values"])


class CancelInSecondSheet(RecordingProgress):
    def advance(self, fraction: float, stage: str) -> None:
        super().advance(fraction, stage)
        if stage == "writing sheet 2/3":
            raise JobCancelled


def test_excel_cancelled_while_zipping_leaves_no_temporary_file(tmp_path: Path) -> None:
    before = set(Path(tempfile.gettempdir()).glob("openpyxl.*"))
    progress = CancelInSecondSheet()
    with pytest.raises(JobCancelled):
        render(ExcelRenderer(), ExcelParams(rows=9_000, sheets=3), tmp_path, progress)
    assert progress.calls[-1][1] == "writing sheet 2/3"
    assert set(Path(tempfile.gettempdir()).glob("openpyxl.*")) <= before
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


_OTHER_PROCESS = """
import sys
from pathlib import Path
from app.domain.params import AnalysisParams, ExcelParams, PdfParams
from app.domain.progress import NullProgress
from app.reports import AnalysisRenderer, ExcelRenderer, PdfRenderer
PdfRenderer().render(PdfParams(pages=2, seed=8), Path(sys.argv[1]), NullProgress())
ExcelRenderer().render(ExcelParams(rows=50, seed=8), Path(sys.argv[2]), NullProgress())
AnalysisRenderer().render(AnalysisParams(rows=100, seed=8), Path(sys.argv[3]), NullProgress())
"""


def test_bytes_do_not_depend_on_the_process(tmp_path: Path) -> None:
    """A retry on another worker (another hash seed, another clock) yields the same file."""
    theirs = [tmp_path / "a.pdf", tmp_path / "b.xlsx", tmp_path / "c.pdf"]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    command = [sys.executable, "-c", _OTHER_PROCESS, *map(str, theirs)]
    subprocess.run(command, env=env, check=True)
    mine = [
        render(PdfRenderer(), PdfParams(pages=2, seed=8), tmp_path),
        render(ExcelRenderer(), ExcelParams(rows=50, seed=8), tmp_path),
        render(AnalysisRenderer(), AnalysisParams(rows=100, seed=8), tmp_path),
    ]
    assert [sha256(p) for p in mine] == [sha256(p) for p in theirs]


@pytest.mark.parametrize(("renderer", "params", "_other"), SMALL_CASES)
def test_renderers_write_to_any_file_name(
    renderer: Renderer, params: ReportParams, _other: ReportParams, tmp_path: Path
) -> None:
    """The artifact store hands out ``<job>-<token>.<extension>.part`` temp paths."""
    target = tmp_path / f"job.{renderer.extension}.part"
    renderer.render(params, target, NullProgress())
    magic = {"pdf": b"%PDF-", "xlsx": b"PK\x03\x04", "json": b"{"}[renderer.extension]
    assert target.read_bytes().startswith(magic)
