"""The Excel renderer's fast path: same data, same cells, real level-1 deflate, safe rows."""

from __future__ import annotations

import hashlib
import threading
import zipfile
import zlib
from datetime import date
from pathlib import Path

import openpyxl
import pytest
from app.domain.params import ExcelParams
from app.domain.progress import JobCancelled, NullProgress
from app.reports import ExcelRenderer
from app.reports._xlsx import Column, RowSerializer, StableZipFile, _Deflater

# Taken from the renderer as it stood before the fast path (commit 2465583): the rewrite
# changed how rows are made, not what they hold.
CELLS_DIGEST = "0662b48d33cda65a2d14ec10a3e6a98d1f2e2802ad4ebd3f1715cff39ed46a73"


def test_every_cell_is_what_it_was(tmp_path: Path) -> None:
    target = tmp_path / "register.xlsx"
    ExcelRenderer().render(ExcelParams(rows=3_000, sheets=3, seed=2), target, NullProgress())
    digest = hashlib.sha256()
    for ws in openpyxl.load_workbook(target).worksheets:
        for row in ws.iter_rows():
            for cell in row:
                digest.update(repr((cell.coordinate, cell.value, cell.number_format)).encode())
    assert digest.hexdigest() == CELLS_DIGEST


def test_sheets_are_deflated_at_level_one(tmp_path: Path) -> None:
    target = tmp_path / "register.xlsx"
    ExcelRenderer().render(ExcelParams(rows=20_000, sheets=1), target, NullProgress())
    with zipfile.ZipFile(target) as archive:
        info = archive.getinfo("xl/worksheets/sheet2.xml")
        xml = archive.read(info)
    fast, default = len(zlib.compress(xml, 1)), len(zlib.compress(xml, 6))
    assert default < 0.9 * fast  # the two levels are told apart at this size
    assert abs(info.compress_size - fast) < 0.02 * fast


def test_rows_carry_no_references_and_dates_follow_each_row() -> None:
    columns = [Column("text", verbatim=True), Column("date", 3), Column("number", 4)]
    rows = [("a", date(2024, 1, 1), 1.5), ("b", date(2024, 1, 1), 2.0), ("c", date(2024, 1, 2), 3)]
    xml = RowSerializer(columns).rows(rows)
    cell = '<c t="inlineStr"><is><t>{}</t></is></c><c s="3"><v>{}</v></c><c s="4"><v>{}</v></c>'
    expected = [cell.format("a", 45292, 1.5), cell.format("b", 45292, 2.0)]
    expected.append(cell.format("c", 45293, 3))
    assert xml == "".join(f"<row>{c}</row>" for c in expected)


def test_text_not_known_safe_is_escaped_and_loses_forbidden_characters() -> None:
    xml = RowSerializer([Column("text"), Column("text", verbatim=True)]).rows(
        [("R&D <x>\x01", "ok"), ("plain", "ok")]
    )
    assert xml.count("<t>R&amp;D &lt;x&gt;</t>") == 1
    assert "<t>plain</t>" in xml


def test_a_serializer_takes_at_most_one_date_column() -> None:
    with pytest.raises(ValueError, match="one date column"):
        RowSerializer([Column("date"), Column("date")])


class _BrokenEntry:
    """A zip entry whose disk is full from the second write on."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes > 1:
            raise OSError(28, "No space left on device")
        return len(data)


def _fill(entry: _BrokenEntry) -> None:
    with _Deflater(entry) as deflater:  # type: ignore[arg-type]
        for _ in range(64):
            deflater.write(b"x" * (1 << 20))


def test_a_failure_of_the_deflating_thread_reaches_the_caller() -> None:
    entry = _BrokenEntry()
    with pytest.raises(OSError, match="No space"):
        _fill(entry)
    assert entry.writes == 2  # nothing written after the failure


def test_a_cancelled_body_stops_the_thread_and_closes_the_archive(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.xml"
    sheet.write_bytes(b"<worksheet><sheetData></sheetData></worksheet>")

    def body(write: object) -> None:
        raise JobCancelled

    with (
        pytest.raises(JobCancelled),
        StableZipFile(tmp_path / "x.zip", bodies={str(sheet): body}) as zf,
    ):
        zf.write(sheet, "sheet.xml")
    with zipfile.ZipFile(tmp_path / "x.zip") as archive:
        assert archive.read("sheet.xml") == b"<worksheet><sheetData>"  # what got in, closed
    assert not [t for t in threading.enumerate() if t.name == "xlsx-deflate"]
