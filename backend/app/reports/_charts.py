"""Charts of the analysis report, drawn with reportlab graphics (vector, deterministic)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from reportlab import rl_config

# Checking every attribute set on a shape or widget is a development aid: a quarter of
# drawing the charts (20 of 70 ms in a fresh process), the same bytes without it.
# reportlab.graphics reads the setting when it is imported, hence here.
rl_config.shapeChecking = 0

from reportlab.graphics.charts.barcharts import HorizontalBarChart, VerticalBarChart  # noqa: E402
from reportlab.graphics.charts.legends import Legend  # noqa: E402
from reportlab.graphics.charts.linecharts import HorizontalLineChart  # noqa: E402
from reportlab.graphics.shapes import Drawing, Line, String  # noqa: E402
from reportlab.graphics.widgets.markers import makeMarker  # noqa: E402

from app.reports._pdfstyle import FRAME_WIDTH, GRID, MUTED, NAVY, ORANGE, TEAL, fr_number  # noqa: E402

_FONT = "Helvetica"


def _drawing(height: float, title: str) -> Any:
    drawing = Drawing(FRAME_WIDTH, height)
    drawing.add(
        String(0, height - 10, title, fontName="Helvetica-Bold", fontSize=9, fillColor=NAVY)
    )
    return drawing


def _style_axes(chart: Any, font_size: float = 7) -> None:
    for axis in (chart.categoryAxis, chart.valueAxis):
        axis.labels.fontName = _FONT
        axis.labels.fontSize = font_size
        axis.labels.fillColor = MUTED
        axis.strokeColor = GRID
    chart.valueAxis.visibleGrid = True
    chart.valueAxis.gridStrokeColor = GRID
    chart.valueAxis.gridStrokeWidth = 0.3
    chart.valueAxis.valueMin = 0


def _nice_max(value: float) -> tuple[float, float]:
    """An axis maximum above ``value`` and a step giving about five gridlines."""
    if value <= 0:
        return 1.0, 0.2
    magnitude = 10 ** math.floor(math.log10(value / 5))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if value / (m * magnitude) <= 5)
    return step * math.ceil(value / step + 1e-9), step


def histogram(labels: Sequence[str], counts: Sequence[int], height: float = 215) -> Any:
    """Vertical bars: number of claims per amount bucket, with the count on each bar."""
    drawing = _drawing(height, "Nombre de sinistres par tranche de montant")
    chart = VerticalBarChart()
    chart.x, chart.y = 45, 30
    chart.width, chart.height = FRAME_WIDTH - 55, height - 58
    chart.data = [list(counts)]
    chart.categoryAxis.categoryNames = list(labels)
    _style_axes(chart)
    chart.valueAxis.valueMax, chart.valueAxis.valueStep = _nice_max(max(counts))
    chart.valueAxis.labelTextFormat = fr_number
    chart.bars[0].fillColor = TEAL
    chart.bars[0].strokeColor = None
    chart.barWidth = 10
    chart.barLabelFormat = fr_number
    chart.barLabels.fontName = _FONT
    chart.barLabels.fontSize = 6.5
    chart.barLabels.nudge = 6
    drawing.add(chart)
    return drawing


def loss_ratio_bars(
    regions: Sequence[str], ratios: Sequence[float], target: float, height: float = 290
) -> Any:
    """Horizontal bars of loss ratio (%) per region, top to bottom as given; a target line.

    Regions above ``target`` plus 10 points are drawn in orange.
    """
    drawing = _drawing(height, "Ratio sinistres / primes acquises par région (%)")
    chart = HorizontalBarChart()
    chart.x, chart.y = 125, 22
    chart.width, chart.height = FRAME_WIDTH - 140, height - 45
    values = [round(r * 100, 1) for r in reversed(ratios)]  # first category is drawn at the bottom
    chart.data = [values]
    chart.categoryAxis.categoryNames = list(reversed(regions))
    _style_axes(chart)
    top, step = _nice_max(max(max(values), target * 100) * 1.08)
    chart.valueAxis.valueMax, chart.valueAxis.valueStep = top, step
    chart.valueAxis.labelTextFormat = fr_number
    chart.bars[0].strokeColor = None
    for i, value in enumerate(values):
        chart.bars[(0, i)].fillColor = ORANGE if value > (target + 0.1) * 100 else TEAL
    chart.barLabelFormat = lambda v: fr_number(v, 1)
    chart.barLabels.fontName = _FONT
    chart.barLabels.fontSize = 6.5
    chart.barLabels.boxAnchor = "w"
    chart.barLabels.dx = 4
    drawing.add(chart)
    x = chart.x + chart.width * target * 100 / top
    drawing.add(
        Line(x, chart.y, x, chart.y + chart.height, strokeColor=NAVY, strokeDashArray=[3, 2])
    )
    label = f"cible {fr_number(target * 100)} %"
    drawing.add(String(x + 3, chart.y + chart.height + 3, label, fontName=_FONT, fontSize=6.5))
    return drawing


def monthly_trend(
    months: Sequence[str], counts: Sequence[int], amounts: Sequence[float], height: float = 200
) -> Any:
    """Two lines, count and amount per month, each as an index (100 = monthly average)."""
    drawing = _drawing(height, "Tendance mensuelle — indice base 100 = moyenne des 24 mois")
    chart = HorizontalLineChart()
    chart.x, chart.y = 35, 38
    chart.width, chart.height = FRAME_WIDTH - 45, height - 70
    series = [_index(counts), _index(amounts)]
    chart.data = series
    chart.categoryAxis.categoryNames = list(months)
    _style_axes(chart, 6.5)
    chart.categoryAxis.labels.angle = 45
    chart.categoryAxis.labels.boxAnchor = "ne"
    chart.valueAxis.valueMax, chart.valueAxis.valueStep = _nice_max(max(max(s) for s in series))
    chart.valueAxis.labelTextFormat = fr_number
    for i, color in enumerate((TEAL, ORANGE)):
        chart.lines[i].strokeColor = color
        chart.lines[i].strokeWidth = 1.4
        chart.lines[i].symbol = makeMarker("FilledCircle", size=2.5, fillColor=color)
    drawing.add(chart)
    legend = Legend()
    legend.x, legend.y = FRAME_WIDTH - 200, height - 6
    legend.fontName, legend.fontSize = _FONT, 7
    legend.columnMaximum = 1
    legend.alignment = "right"
    legend.deltax = 90
    legend.colorNamePairs = [(TEAL, "Nombre de sinistres"), (ORANGE, "Charge des sinistres")]
    drawing.add(legend)
    return drawing


def _index(values: Sequence[float]) -> list[float]:
    mean = sum(values) / max(len(values), 1)
    return [round(100 * v / mean, 1) if mean else 0.0 for v in values]
