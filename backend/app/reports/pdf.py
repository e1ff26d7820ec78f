"""PDF claims report ("Rapport de sinistralité") with an exact page count.

Geometry is fixed so the page count is known before layout: page 1 is the cover,
pages 2..N each hold a table of :data:`ROWS_PER_PAGE` claims (header repeated), and the
last page holds :data:`LAST_PAGE_ROWS` claims plus the totals. A one-page report holds
a compact cover, :data:`SINGLE_PAGE_ROWS` claims and the totals. Explicit page breaks
(never reportlab's table splitting) make N exact; :class:`ReportDocument` checks it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from reportlab.lib.units import cm
from reportlab.platypus import PageBreak, Paragraph, Spacer
from reportlab.platypus.flowables import HRFlowable

from app.domain.params import PdfParams
from app.domain.progress import Progress
from app.reports import data
from app.reports._pdfstyle import (
    BODY,
    COMPANY,
    H1,
    NAVY,
    SMALL,
    SUBTITLE,
    TITLE,
    Deferred,
    ReportDocument,
    eur,
    eur_cents,
    fr_number,
    grid_table,
    percent,
)

REPORT_TITLE = "Rapport de sinistralité"
ROWS_PER_PAGE = 45
LAST_PAGE_ROWS = 25
SINGLE_PAGE_ROWS = 10
_LAYOUT_START = 0.1  # progress share of data generation and story building
_DETAIL_HEADER = (
    "N° sinistre",
    "Survenance",
    "Contrat",
    "Assuré",
    "Garantie",
    "Région",
    "Montant",
    "Statut",
)
_DETAIL_WIDTHS = (70, 49, 53, 79, 79, 101, 58, 38)
_TOTAL_WIDTHS = (160, 80, 110, 100, 77)
_PERIOD = f"{data.WINDOW_START:%d/%m/%Y} au {data.WINDOW_END:%d/%m/%Y}"


def claims_count(pages: int) -> int:
    """How many claims a report of ``pages`` pages details."""
    if pages == 1:
        return SINGLE_PAGE_ROWS
    return (pages - 2) * ROWS_PER_PAGE + LAST_PAGE_ROWS


@dataclass(slots=True)
class Totals:
    """Counts and exact amounts (cents) of a set of claims, overall and per group."""

    count: int = 0
    cents: int = 0
    largest: int = 0
    by_product: Counter[str] = field(default_factory=Counter)
    cents_by_product: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    cents_by_status: Counter[str] = field(default_factory=Counter)

    def add(self, claim: data.Claim) -> None:
        """Count ``claim`` in every total (its amount in whole cents)."""
        cents = round(claim.amount * 100)
        self.count += 1
        self.cents += cents
        self.largest = max(self.largest, cents)
        self.by_product[claim.product] += 1
        self.cents_by_product[claim.product] += cents
        self.by_status[claim.status] += 1
        self.cents_by_status[claim.status] += cents


class PdfRenderer:
    """Renders :class:`PdfParams` into a PDF of exactly ``params.pages`` pages."""

    content_type = "application/pdf"
    extension = "pdf"

    def render(self, params: PdfParams, target: Path, progress: Progress) -> None:
        """Write the PDF to ``target``: one pass for the cover's totals, one for the tables."""
        progress.advance(0.0, "generating claims")
        count = claims_count(params.pages)
        totals = Totals()  # first pass: the cover shows the totals
        for i, claim in enumerate(data.claims(params.seed, count), start=1):
            totals.add(claim)
            if i % 10_000 == 0:
                progress.advance(_LAYOUT_START / 2 * i / count, "generating claims")
        doc = ReportDocument(
            target,
            title=REPORT_TITLE,
            subject=f"Registre des sinistres, {params.pages} pages, graine {params.seed}",
            footer_note=f"données synthétiques, graine {params.seed}",
            total_pages=params.pages,
            progress=progress,
            start=_LAYOUT_START,
        )
        progress.advance(_LAYOUT_START / 2, "layout")
        claims = data.claims(params.seed, count)  # second pass: the tables, page by page
        if params.pages == 1:
            story = _single_page(params, list(claims), totals)
        else:
            story = _cover(params, totals) + _detail_pages(params.pages, claims, totals)
        doc.render(story)
        progress.advance(1.0, "done")


def _parameters(params: PdfParams, detailed: int) -> list[Any]:
    rows = [
        ("Paramètre", "Valeur"),
        ("Rapport", f"{REPORT_TITLE} (PDF)"),
        ("Nombre de pages", fr_number(params.pages)),
        ("Sinistres détaillés", fr_number(detailed)),
        ("Graine des données", str(params.seed)),
        ("Durée minimale de traitement", f"{fr_number(params.processing_time, 1)} s"),
        ("Période de survenance", f"du {_PERIOD}"),
        ("Situation des dossiers au", f"{data.AS_OF:%d/%m/%Y}"),
    ]
    return [Paragraph("Paramètres de génération", H1), grid_table(rows, (200, 327), numeric_from=2)]


def _key_figures(totals: Totals) -> list[Any]:
    settled = totals.by_status["Réglé"]
    pending = totals.by_status["Ouvert"] + totals.by_status["En cours"]
    rows = [
        ("Indicateur", "Valeur"),
        ("Nombre de sinistres", fr_number(totals.count)),
        ("Charge totale", eur_cents(totals.cents)),
        ("Coût moyen", eur(totals.cents / 100 / max(totals.count, 1))),
        ("Sinistre le plus élevé", eur_cents(totals.largest)),
        ("Dossiers réglés", f"{fr_number(settled)} ({percent(settled / max(totals.count, 1))})"),
        ("Dossiers ouverts ou en cours", fr_number(pending)),
    ]
    return [Paragraph("Chiffres clés", H1), grid_table(rows, (200, 327), numeric_from=2)]


def _cover(params: PdfParams, totals: Totals) -> list[Any]:
    last = params.pages
    return [
        Spacer(1, 1.6 * cm),
        Paragraph(REPORT_TITLE, TITLE),
        Paragraph(f"Extrait du registre des sinistres — survenances du {_PERIOD}", SUBTITLE),
        Spacer(1, 0.4 * cm),
        HRFlowable(width="100%", thickness=1.5, color=NAVY, spaceAfter=10),
        Paragraph(f"<b>{COMPANY}</b><br/>Direction technique — pilotage de la sinistralité", BODY),
        Spacer(1, 0.8 * cm),
        *_parameters(params, totals.count),
        Spacer(1, 0.6 * cm),
        *_key_figures(totals),
        Spacer(1, 0.6 * cm),
        Paragraph("Contenu", H1),
        Paragraph(
            f"Pages 2 à {last} : détail des {fr_number(totals.count)} sinistres par date de "
            f"survenance, en-têtes répétés sur chaque page. Page {last} : totaux par produit "
            "et par statut. Les montants sont exprimés en euros, charge brute de recours.",
            BODY,
        ),
        Spacer(1, 0.4 * cm),
        Paragraph(
            "Données synthétiques produites de façon déterministe à partir de la graine : "
            "toute ressemblance avec des assurés réels serait fortuite.",
            SMALL,
        ),
        PageBreak(),
    ]


def _detail_table(claims: Sequence[data.Claim]) -> Any:
    rows: list[Sequence[str]] = [_DETAIL_HEADER]
    rows += [
        (
            c.claim_id,
            f"{c.loss_date:%d/%m/%Y}",
            c.policy_number,
            c.holder,
            c.guarantee,
            c.region,
            eur(c.amount),
            c.status,
        )
        for c in claims
    ]
    return grid_table(rows, _DETAIL_WIDTHS, numeric_from=6)


def _next_table(claims: Iterator[data.Claim], size: int) -> Any:
    return _detail_table(list(itertools.islice(claims, size)))


def _detail_pages(pages: int, claims: Iterator[data.Claim], totals: Totals) -> list[Any]:
    """Pages 2..N: a heading and a table each; tables are built as layout reaches them."""
    story: list[Any] = []
    start = 0
    for page in range(2, pages + 1):
        size = LAST_PAGE_ROWS if page == pages else ROWS_PER_PAGE
        first, last, count = (fr_number(n) for n in (start + 1, start + size, totals.count))
        heading = f"Détail des sinistres — lignes {first} à {last} sur {count}"
        story += [Paragraph(heading, H1), Deferred(partial(_next_table, claims, size))]
        start += size
        if page < pages:
            story.append(PageBreak())
    return story + _totals_block(totals)


def _totals_table(
    counts: Counter[str], cents: Counter[str], order: Iterable[str], label: str, totals: Totals
) -> Any:
    rows: list[Sequence[str]] = [(label, "Sinistres", "Charge totale", "Coût moyen", "Part")]
    for key in order:
        n, amount = counts[key], cents[key]
        rows.append(
            (
                key,
                fr_number(n),
                eur_cents(amount),
                eur(amount / 100 / max(n, 1)),
                percent(amount / max(totals.cents, 1)),
            )
        )
    rows.append(
        (
            "Total",
            fr_number(totals.count),
            eur_cents(totals.cents),
            eur(totals.cents / 100 / max(totals.count, 1)),
            percent(1.0 if totals.cents else 0.0),
        )
    )
    return grid_table(rows, _TOTAL_WIDTHS, numeric_from=1, row_height=15, total_row=True)


def _totals_block(totals: Totals) -> list[Any]:
    products = [p.label for p in data.PRODUCTS]
    return [
        Spacer(1, 0.5 * cm),
        Paragraph("Totaux par produit", H1),
        _totals_table(totals.by_product, totals.cents_by_product, products, "Produit", totals),
        Spacer(1, 0.4 * cm),
        Paragraph("Totaux par statut", H1),
        _totals_table(totals.by_status, totals.cents_by_status, data.STATUSES, "Statut", totals),
    ]


def _single_page(params: PdfParams, claims: list[data.Claim], totals: Totals) -> list[Any]:
    return [
        Paragraph(REPORT_TITLE, TITLE),
        Paragraph(f"{COMPANY} — survenances du {_PERIOD}", SUBTITLE),
        Spacer(1, 0.3 * cm),
        *_parameters(params, totals.count),
        Spacer(1, 0.3 * cm),
        Paragraph(f"Détail des {len(claims)} sinistres", H1),
        _detail_table(claims),
        *_totals_block(totals),
    ]
