"""Claims analysis report: amount distribution, loss ratio by region, monthly trend.

Statistics come from one streaming pass over ``params.rows`` generated claims (and one
over the premiums of their portfolio); the PDF has a fixed layout of
:data:`ANALYSIS_PAGES` pages, each section on its own page, charts drawn with reportlab
graphics beside tables of the same figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reportlab.lib.units import cm
from reportlab.platypus import PageBreak, Paragraph, Spacer
from reportlab.platypus.flowables import HRFlowable

from app.domain.params import AnalysisParams
from app.domain.progress import Progress
from app.reports import data
from app.reports._charts import histogram, loss_ratio_bars, monthly_trend
from app.reports._pdfstyle import (
    BODY,
    COMPANY,
    H1,
    NAVY,
    SMALL,
    SUBTITLE,
    TITLE,
    ReportDocument,
    eur,
    eur_cents,
    fr_number,
    grid_table,
    percent,
)
from app.reports._stats import BUCKET_LABELS, MONTHS, ClaimStats, compute

REPORT_TITLE = "Analyse de la sinistralité"
ANALYSIS_PAGES = 4
_DATA_SHARE = 0.85  # of the progress bar; the rest is layout
_MONTH_NAMES = [
    "janv.",
    "févr.",
    "mars",
    "avr.",
    "mai",
    "juin",
    "juil.",
    "août",
    "sept.",
    "oct.",
    "nov.",
    "déc.",
]
_PERIOD = f"{data.WINDOW_START:%d/%m/%Y} au {data.WINDOW_END:%d/%m/%Y}"


class AnalysisRenderer:
    """Renders :class:`AnalysisParams` into a four-page PDF of statistics and charts."""

    content_type = "application/pdf"
    extension = "pdf"

    def render(self, params: AnalysisParams, target: Path, progress: Progress) -> None:
        """Write the four-page PDF to ``target``: the statistics pass, then the layout."""
        progress.advance(0.0, "analysing claims")
        stats = compute(
            params.seed,
            params.rows,
            lambda fraction, stage: progress.advance(_DATA_SHARE * fraction, stage),
        )
        progress.advance(_DATA_SHARE, "layout")
        doc = ReportDocument(
            target,
            title=REPORT_TITLE,
            subject=f"Analyse de {params.rows} sinistres, graine {params.seed}",
            footer_note=f"données synthétiques, graine {params.seed}",
            total_pages=ANALYSIS_PAGES,
            progress=progress,
            start=_DATA_SHARE,
        )
        story = [
            *_summary_page(params, stats),
            PageBreak(),
            *_distribution_page(stats),
            PageBreak(),
            *_regions_page(stats),
            PageBreak(),
            *_trend_page(stats),
        ]
        doc.render(story)
        progress.advance(1.0, "done")


def _month_label(year: int, month: int) -> str:
    return f"{_MONTH_NAMES[month - 1]} {year % 100:02d}"


def _ranked_regions(stats: ClaimStats) -> list[str]:
    return sorted(data.REGIONS, key=lambda r: (-stats.loss_ratio(r), r))


def _summary_page(params: AnalysisParams, stats: ClaimStats) -> list[Any]:
    ranked = _ranked_regions(stats)
    busiest = max(range(len(MONTHS)), key=lambda m: (stats.month_cents[m], -m))
    figures = [
        ("Indicateur", "Valeur"),
        ("Sinistres analysés", fr_number(stats.count)),
        ("Charge totale des sinistres", eur_cents(stats.cents)),
        ("Coût moyen d'un sinistre", eur(stats.mean())),
        ("Sinistre le plus élevé", eur_cents(stats.largest)),
        ("Primes acquises sur la période", eur_cents(stats.premiums)),
        ("Ratio sinistres / primes (S/P)", percent(stats.loss_ratio())),
    ]
    settings = [
        ("Paramètre", "Valeur"),
        ("Sinistres générés", fr_number(params.rows)),
        ("Graine des données", str(params.seed)),
        ("Période de survenance", f"du {_PERIOD}"),
        (
            "Contrats en portefeuille",
            fr_number(data.Portfolio.for_claims(params.seed, params.rows).size),
        ),
    ]
    return [
        Spacer(1, 0.8 * cm),
        Paragraph(REPORT_TITLE, TITLE),
        Paragraph(f"{COMPANY} — survenances du {_PERIOD}", SUBTITLE),
        Spacer(1, 0.3 * cm),
        HRFlowable(width="100%", thickness=1.5, color=NAVY, spaceAfter=12),
        Paragraph("Synthèse", H1),
        Paragraph(
            f"Sur la période, {fr_number(stats.count)} sinistres ont été déclarés pour une "
            f"charge totale de {eur_cents(stats.cents)}, soit un coût moyen de "
            f"{eur(stats.mean())}. Rapportée à {eur_cents(stats.premiums)} de primes acquises, "
            f"la charge donne un ratio S/P de {percent(stats.loss_ratio())}. La région la plus "
            f"sinistrée est {ranked[0]} (S/P {percent(stats.loss_ratio(ranked[0]))}), la moins "
            f"sinistrée {ranked[-1]} ({percent(stats.loss_ratio(ranked[-1]))}). Le mois le plus "
            f"lourd est {_month_label(*MONTHS[busiest])} avec "
            f"{eur_cents(stats.month_cents[busiest])} de charge.",
            BODY,
        ),
        Spacer(1, 0.3 * cm),
        Paragraph("Chiffres clés", H1),
        grid_table(figures, (260, 267), numeric_from=1, row_height=16, font_size=8.5),
        Spacer(1, 0.6 * cm),
        Paragraph("Paramètres de génération", H1),
        grid_table(settings, (260, 267), numeric_from=1, row_height=16, font_size=8.5),
        Spacer(1, 0.6 * cm),
        Paragraph("Sommaire", H1),
        Paragraph(
            "Page 2 : distribution des montants. Page 3 : ratio S/P par région. "
            "Page 4 : tendance mensuelle du nombre et de la charge des sinistres.",
            BODY,
        ),
        Spacer(1, 0.3 * cm),
        Paragraph(
            "Données synthétiques produites de façon déterministe à partir de la graine ; "
            "montants en euros, primes acquises au prorata de la période.",
            SMALL,
        ),
    ]


def _distribution_page(stats: ClaimStats) -> list[Any]:
    rows = [("Tranche de montant", "Sinistres", "Part", "Charge", "Part de la charge")]
    for label, n, cents in zip(BUCKET_LABELS, stats.bucket_count, stats.bucket_cents, strict=True):
        share = percent(cents / max(stats.cents, 1))
        rows.append(
            (label, fr_number(n), percent(n / max(stats.count, 1)), eur_cents(cents), share)
        )
    rows.append(
        ("Total", fr_number(stats.count), percent(1.0), eur_cents(stats.cents), percent(1.0))
    )
    count, cents = max(stats.count, 1), max(stats.cents, 1)
    small_count = percent(sum(stats.bucket_count[:4]) / count)
    small_cents = percent(sum(stats.bucket_cents[:4]) / cents)
    large_cents = percent(sum(stats.bucket_cents[-3:]) / cents)
    return [
        Paragraph("1. Distribution des montants", H1),
        Paragraph(
            f"Les sinistres de moins de 1 000 € représentent {small_count} du nombre de "
            f"sinistres mais {small_cents} de la charge ; ceux de 10 000 € et plus pèsent "
            f"{large_cents} de la charge : la distribution est fortement asymétrique "
            "(log-normale).",
            BODY,
        ),
        Spacer(1, 0.2 * cm),
        histogram(BUCKET_LABELS, stats.bucket_count),
        Spacer(1, 0.4 * cm),
        grid_table(rows, (130, 90, 80, 137, 90), numeric_from=1, row_height=15, total_row=True),
    ]


def _regions_page(stats: ClaimStats) -> list[Any]:
    ranked = _ranked_regions(stats)
    rows = [("Région", "Sinistres", "Charge", "Primes acquises", "S/P")]
    for region in ranked:
        rows.append(
            (
                region,
                fr_number(stats.region_count[region]),
                eur_cents(stats.region_cents[region]),
                eur_cents(stats.premium_cents[region]),
                percent(stats.loss_ratio(region)),
            )
        )
    rows.append(
        (
            "Total",
            fr_number(stats.count),
            eur_cents(stats.cents),
            eur_cents(stats.premiums),
            percent(stats.loss_ratio()),
        )
    )
    above = [r for r in ranked if stats.loss_ratio(r) > data.TARGET_LOSS_RATIO + 0.1]
    return [
        Paragraph("2. Ratio sinistres / primes par région", H1),
        Paragraph(
            f"Le ratio S/P global est de {percent(stats.loss_ratio())} pour une cible tarifaire "
            f"de {percent(data.TARGET_LOSS_RATIO, 0)}. "
            + (
                f"{len(above)} région(s) dépassent la cible de plus de 10 points : "
                f"{', '.join(above)}."
                if above
                else "Aucune région ne dépasse la cible de plus de 10 points."
            ),
            BODY,
        ),
        Spacer(1, 0.2 * cm),
        loss_ratio_bars(ranked, [stats.loss_ratio(r) for r in ranked], data.TARGET_LOSS_RATIO),
        Spacer(1, 0.4 * cm),
        grid_table(rows, (150, 70, 115, 127, 65), numeric_from=1, row_height=14, total_row=True),
    ]


def _trend_page(stats: ClaimStats) -> list[Any]:
    labels = [_month_label(y, m) for y, m in MONTHS]
    rows = [("Mois", "Sinistres", "Charge", "Coût moyen")]
    for label, n, cents in zip(labels, stats.month_count, stats.month_cents, strict=True):
        rows.append((label, fr_number(n), eur_cents(cents), eur(cents / 100 / max(n, 1))))
    rows.append(("Total", fr_number(stats.count), eur_cents(stats.cents), eur(stats.mean())))
    first, second = sum(stats.month_cents[:12]), sum(stats.month_cents[12:])
    growth = (second - first) / max(first, 1)
    return [
        Paragraph("3. Tendance mensuelle", H1),
        Paragraph(
            f"La charge passe de {eur_cents(first)} en 2024 à {eur_cents(second)} en 2025 "
            f"({'+' if growth >= 0 else ''}{percent(growth)}). Le nombre de sinistres suit "
            "une saisonnalité marquée, avec un pic hivernal ; la charge mensuelle varie "
            "davantage, au gré des sinistres graves.",
            BODY,
        ),
        monthly_trend(labels, stats.month_count, [c / 100 for c in stats.month_cents]),
        Spacer(1, 0.2 * cm),
        grid_table(rows, (130, 110, 160, 127), numeric_from=1, row_height=12, total_row=True),
    ]
