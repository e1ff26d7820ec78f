"""Streaming helpers of the Excel renderer: a fast row serialiser and a stable zip.

The renderer lets openpyxl build the whole package (workbook, styles, summary sheet,
sheet views, column widths, filters, each data sheet's header row) and writes the data
rows itself: when openpyxl archives a data sheet, :class:`StableZipFile` splices the
rows into it as they are made, while a second thread deflates them.

Why not a library (issue 12): the same workbook written by the maintained streaming
writers (openpyxl write-only with lxml, XlsxWriter constant_memory; benchmarks/
xlsx_peers.py, checked cell for cell against ours) goes through a Python call and an
object per cell, several times our cost of a row; the figures are in
``benchmarks/results/render.md`` (``python benchmarks/render.py``). Re-measure when
either library changes its cell writer.

This leans on two openpyxl 3.1 internals, both covered by the unit tests:
``ExcelWriter(workbook, archive).save()`` (what ``Workbook.save`` does, with our own
zip file) and ``worksheet._writer.out``, the temporary file of a write-only sheet.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from _typeshed import SizedBuffer

FIXED_ZIP_TIME = (2026, 1, 1, 0, 0, 0)
COMPRESS_LEVEL = 1
"""zlib level of every entry: 1 deflates 3x faster than the default 6, 30 % larger."""
_CHUNK = 1 << 20
_HANDOFF = 4 << 20
"""Bytes handed to the deflating thread at once: few hand-offs, few GIL round trips."""
_EXCEL_EPOCH = date(1899, 12, 30).toordinal()
_DATE_MARK = "\0"
# XML-escape text; drop the control characters XML 1.0 forbids.
_XML_TEXT = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;"} | dict.fromkeys(
    (*range(9), 11, 12, *range(14, 32))
)

Kind = Literal["text", "date", "number"]
Body = Callable[[Callable[[bytes], None]], None]
"""Writes a sheet's ``<row>`` elements, as UTF-8, through the function it is given."""


@dataclass(frozen=True, slots=True)
class Column:
    """A data column: the kind of its values and its openpyxl style id.

    ``verbatim`` text is known to be XML-safe (see :func:`is_xml_safe`): not escaped.
    """

    kind: Kind
    style_id: int = 0
    verbatim: bool = False


def is_xml_safe(text: str) -> bool:
    """Whether ``text`` can stand in an element as it is, and Excel keeps it as it is."""
    return text.isprintable() and not any(c in text for c in "&<>") and text == text.strip()


def _escape(value: object) -> str:
    return str(value).translate(_XML_TEXT)


class RowSerializer:
    """Turns rows of values into ``<row>`` elements, the way openpyxl would write them.

    Text is written as inline strings (as openpyxl's write-only mode does), dates
    (``datetime.date``, at most one column) as Excel serial numbers, numbers with
    ``repr``. Rows and cells carry no ``r`` attribute: each follows the previous one, as
    SpreadsheetML allows. Values must not be None, and text must not start or end with
    whitespace (Excel would trim it). Rows sorted by date are the fast case: the date
    is baked into the row template once per run of equal dates.
    """

    def __init__(self, columns: Sequence[Column]) -> None:
        cells = []
        for col in columns:
            style = f' s="{col.style_id}"' if col.style_id else ""
            if col.kind == "text":
                cells.append(f'<c{style} t="inlineStr"><is><t>%s</t></is></c>')
            elif col.kind == "date":
                cells.append(f"<c{style}><v>{_DATE_MARK}</v></c>")
            else:
                cells.append(f"<c{style}><v>%r</v></c>")
        self._template = "<row>" + "".join(cells) + "</row>"
        dates = [i for i, col in enumerate(columns) if col.kind == "date"]
        if len(dates) > 1:
            raise ValueError("RowSerializer takes at most one date column")
        self._date = dates[0] if dates else None
        self._escaped = [
            i for i, col in enumerate(columns) if col.kind == "text" and not col.verbatim
        ]

    def rows(self, rows: Iterable[tuple[Any, ...]]) -> str:
        """The XML of ``rows``, one ``<row>`` element each, in order."""
        parts: list[str] = []
        append, at = parts.append, self._date
        template, last = self._template, None
        for row in rows:
            if self._escaped:
                row = self._escape_row(row)
            if at is not None:
                if row[at] != last:
                    last = row[at]
                    serial = str(last.toordinal() - _EXCEL_EPOCH)
                    template = self._template.replace(_DATE_MARK, serial)
                row = row[:at] + row[at + 1 :]
            append(template % row)
        return "".join(parts)

    def _escape_row(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        cells = list(row)
        for i in self._escaped:
            cells[i] = _escape(cells[i])
        return tuple(cells)


class StableZipFile(zipfile.ZipFile):
    """A ZipFile whose bytes depend on its content only (fixed timestamps, modes, level).

    openpyxl archives a write-only sheet with ``write(temp_file, arcname)``; when
    ``bodies`` maps that temp file to a :data:`Body`, the rows it writes are spliced in
    before ``</sheetData>``, deflated by a second thread while the body makes the next
    rows (zlib releases the GIL: on two cores the deflating costs no time).
    """

    def __init__(self, file: str | os.PathLike[str], *, bodies: dict[str, Body]) -> None:
        super().__init__(
            file, "w", zipfile.ZIP_DEFLATED, allowZip64=True, compresslevel=COMPRESS_LEVEL
        )
        self._bodies = bodies

    def _stable_info(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info._compresslevel = COMPRESS_LEVEL  # type: ignore[attr-defined]  # open() reads it
        info.external_attr = 0o644 << 16
        return info

    def writestr(
        self,
        zinfo_or_arcname: str | zipfile.ZipInfo,
        data: SizedBuffer | str,
        compress_type: int | None = None,
        compresslevel: int | None = None,
    ) -> None:
        name = (
            zinfo_or_arcname.filename
            if isinstance(zinfo_or_arcname, zipfile.ZipInfo)
            else zinfo_or_arcname
        )
        super().writestr(self._stable_info(name), data, compress_type, compresslevel)

    def write(
        self,
        filename: str | os.PathLike[str],
        arcname: str | os.PathLike[str] | None = None,
        compress_type: int | None = None,
        compresslevel: int | None = None,
    ) -> None:
        info = self._stable_info(os.fspath(arcname if arcname is not None else filename))
        body = self._bodies.get(os.fspath(filename))
        if body is None:
            info.file_size = os.path.getsize(filename)
            with open(filename, "rb") as source, self.open(info, "w") as out:
                shutil.copyfileobj(source, out, _CHUNK)
            return
        head, tail = _split_sheet(Path(filename).read_bytes())  # a header row: small
        with self.open(info, "w") as out:
            out.write(head)
            with _Deflater(out) as deflater:
                body(deflater.write)
            out.write(tail)


class _Deflater:
    """Writes to a zip entry from a second thread, in hand-offs of about :data:`_HANDOFF`.

    A failure of the thread (a full disk) is raised in the caller at its next write or
    at the end; a failure of the caller stops the thread before the entry is closed.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._pending: list[bytes] = []
        self._size = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="xlsx-deflate", daemon=True)

    def __enter__(self) -> _Deflater:
        self._thread.start()
        return self

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._size += len(data)
        if self._size >= _HANDOFF:
            self._hand_off()

    def _hand_off(self) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(b"".join(self._pending))
        self._pending.clear()
        self._size = 0

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if kind is None and self._pending:
                self._hand_off()
        finally:
            self._queue.put(None)
            self._thread.join()
        if kind is None and self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(data)
                except BaseException as error:  # handed to the caller
                    self._error = error


def _split_sheet(skeleton: bytes) -> tuple[bytes, bytes]:
    """Cut a sheet's XML where more rows go: before ``</sheetData>``."""
    head, sep, tail = skeleton.rpartition(b"</sheetData>")
    if sep:
        return head, sep + tail
    head, sep, tail = skeleton.rpartition(b"<sheetData />")
    if sep:
        return head + b"<sheetData>", b"</sheetData>" + tail
    raise ValueError("openpyxl wrote a worksheet without sheetData")
