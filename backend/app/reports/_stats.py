"""One-pass statistics over a stream of claims, and earned premiums per region.

Amounts are accumulated in integer cents so totals are exact and order-independent.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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

    def add(self, claim: data.Claim) -> None:
        cents = round(claim.amount * 100)
        self.count += 1
        self.cents += cents
        if cents > self.largest:
            self.largest = cents
        bucket = bisect_right(_EDGES_CENTS, cents)
        self.bucket_count[bucket] += 1
        self.bucket_cents[bucket] += cents
        self.region_count[claim.region] += 1
        self.region_cents[claim.region] += cents
        month = (claim.loss_date.year - 2024) * 12 + claim.loss_date.month - 1
        self.month_count[month] += 1
        self.month_cents[month] += cents

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
    add = stats.add
    for i, claim in enumerate(data.claims(seed, rows, portfolio), start=1):
        add(claim)
        if i % every == 0:
            checkpoint(0.8 * i / rows, "analysing claims")
    checkpoint(0.8, "summing premiums")
    _sum_premiums(stats, portfolio.earned_premiums(), portfolio.size, checkpoint, 4 * every)
    return stats


def _sum_premiums(
    stats: ClaimStats,
    premiums: Iterable[tuple[str, int]],
    size: int,
    checkpoint: Callable[[float, str], None],
    every: int,
) -> None:
    totals = stats.premium_cents
    for i, (region, cents) in enumerate(premiums, start=1):
        totals[region] += cents
        if i % every == 0:
            checkpoint(0.8 + 0.2 * i / size, "summing premiums")
