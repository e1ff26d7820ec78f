"""One-pass statistics over a stream of claims, and earned premiums per region.

Amounts are accumulated in integer cents so totals are exact and order-independent.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

from app.reports import data

BUCKET_EDGES_EUR = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000)
"""Upper bounds (exclusive) of the histogram buckets; the last bucket is open."""
BUCKET_LABELS = (
    "< 100 €",
    "100–250 €",
    "250–500 €",
    "500–1 k€",
    "1–2,5 k€",
    "2,5–5 k€",
    "5–10 k€",
    "10–25 k€",
    "25–50 k€",
    "≥ 50 k€",
)
MONTHS = tuple((2024 + m // 12, m % 12 + 1) for m in range(24))
_EDGES_CENTS = tuple(e * 100 for e in BUCKET_EDGES_EUR)


@dataclass(slots=True)
class ClaimStats:
    """Count and cents overall, per amount bucket, per region and per month of loss."""

    count: int = 0
    cents: int = 0
    largest: int = 0
    bucket_count: list[int] = field(default_factory=lambda: [0] * len(BUCKET_LABELS))
    bucket_cents: list[int] = field(default_factory=lambda: [0] * len(BUCKET_LABELS))
    region_count: dict[str, int] = field(default_factory=lambda: dict.fromkeys(data.REGIONS, 0))
    region_cents: dict[str, int] = field(default_factory=lambda: dict.fromkeys(data.REGIONS, 0))
    month_count: list[int] = field(default_factory=lambda: [0] * len(MONTHS))
    month_cents: list[int] = field(default_factory=lambda: [0] * len(MONTHS))
    premium_cents: dict[str, int] = field(default_factory=lambda: dict.fromkeys(data.REGIONS, 0))

    @property
    def premiums(self) -> int:
        return sum(self.premium_cents.values())

    def loss_ratio(self, region: str | None = None) -> float:
        """Claims over earned premiums, overall or for one region."""
        if region is None:
            return self.cents / max(self.premiums, 1)
        return self.region_cents[region] / max(self.premium_cents[region], 1)

    def mean(self) -> float:
        """Average claim in euros."""
        return self.cents / 100 / max(self.count, 1)


def compute(
    seed: int,
    rows: int,
    checkpoint: Callable[[float, str], None],
    *,
    every: int = 5_000,
) -> ClaimStats:
    """Statistics of ``data.claims(seed, rows)`` and of its portfolio's premiums.

    ``checkpoint(fraction, stage)`` is called every ``every`` claims (fraction 0..0.8)
    and every ``4 * every`` policies (0.8..1.0).
    """
    stats = ClaimStats()
    portfolio = data.Portfolio.for_claims(seed, rows)
    _add_claims(stats, data.claim_figures(seed, rows, portfolio), rows, checkpoint, every)
    checkpoint(0.8, "summing premiums")
    size = portfolio.size
    stats.premium_cents = portfolio.earned_premium_cents(
        lambda done: checkpoint(0.8 + 0.2 * done / size, "summing premiums"), 4 * every
    )
    return stats


def _add_claims(
    stats: ClaimStats,
    claims: Iterable[tuple[date, str, float]],
    rows: int,
    checkpoint: Callable[[float, str], None],
    every: int,
) -> None:
    """One pass over ``claims`` into ``stats``.

    Local names only: a method call and attribute lookups per claim cost as much as the
    arithmetic.
    """
    count = cents_sum = largest = 0
    bucket_count, bucket_cents = stats.bucket_count, stats.bucket_cents
    region_count, region_cents = stats.region_count, stats.region_cents
    month_count, month_cents = stats.month_count, stats.month_cents
    edges, last_date, month = _EDGES_CENTS, None, 0
    for loss_date, region, amount in claims:
        cents = round(amount * 100)
        count += 1
        cents_sum += cents
        if cents > largest:
            largest = cents
        bucket = bisect_right(edges, cents)
        bucket_count[bucket] += 1
        bucket_cents[bucket] += cents
        region_count[region] += 1
        region_cents[region] += cents
        if loss_date != last_date:  # claims come sorted by date: a few hundred changes
            last_date, month = loss_date, (loss_date.year - 2024) * 12 + loss_date.month - 1
        month_count[month] += 1
        month_cents[month] += cents
        if count % every == 0:
            checkpoint(0.8 * count / rows, "analysing claims")
    stats.count, stats.cents, stats.largest = count, cents_sum, largest
