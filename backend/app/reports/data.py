"""Deterministic, streaming generator of French insurance data (policies and claims).

Everything derives from an integer seed through private ``random.Random`` instances
(no global random state, no wall clock): the same seed and count always yield the same
rows. Generators are lazy, so a consumer that streams never holds a million rows.

A :class:`Portfolio` of policies is addressed by index and each policy is derived from
a hash of ``(seed, index)``, so a claim can name its policy without the portfolio ever
being materialised. Claims cover the fixed window :data:`WINDOW_START` ..
:data:`WINDOW_END`, come out sorted by date of loss, and follow a winter-peaking
seasonality; amounts are lognormal per guarantee, scaled by a regional severity factor.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
from array import array
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import NamedTuple, cast

from app.reports._catalog import HOLDERS, PRODUCTS, REGIONS, TARGET_LOSS_RATIO, Product

__all__ = [
    "AS_OF",
    "PRODUCTS",
    "REGIONS",
    "STATUSES",
    "TARGET_LOSS_RATIO",
    "WINDOW_DAYS",
    "WINDOW_END",
    "WINDOW_START",
    "Claim",
    "Policy",
    "Portfolio",
    "Product",
    "claim_figures",
    "claims",
    "daily_counts",
]

WINDOW_START = date(2024, 1, 1)
WINDOW_END = date(2025, 12, 31)
WINDOW_DAYS = (WINDOW_END - WINDOW_START).days + 1
AS_OF = date(2026, 1, 31)
"""Date the claim statuses are observed at."""

STATUSES = ("Ouvert", "En cours", "Réglé", "Refusé")


class Policy(NamedTuple):
    """One policy of a :class:`Portfolio`."""

    number: str
    holder: str
    product: str
    region: str
    start_date: date
    annual_premium: float
    """EUR, rounded to the cent."""


class Claim(NamedTuple):
    """One claim on a policy, within the window; ``status`` as of :data:`AS_OF`."""

    claim_id: str
    loss_date: date
    policy_number: str
    holder: str
    product: str
    guarantee: str
    region: str
    amount: float
    """EUR, rounded to the cent."""
    status: str


def _table(weights: list[float], size: int) -> list[int]:
    """Indices laid out in ``size`` slots in proportion to ``weights`` (largest remainder)."""
    total = sum(weights)
    exact = [w * size / total for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: size - sum(counts)]:
        counts[i] += 1
    return [i for i, n in enumerate(counts) for _ in range(n)]


_REGION_NAMES = tuple(REGIONS)
_REGION_TABLE = tuple(_REGION_NAMES[i] for i in _table([p for p, _ in REGIONS.values()], 1024))
_SEVERITY = {name: factor for name, (_, factor) in REGIONS.items()}
_CLAIM_PRODUCT_TABLE = tuple(_table([p.policy_share * p.frequency for p in PRODUCTS], 1024))
_GUARANTEE_TABLES = tuple(
    tuple(p.guarantees[i] for i in _table([w for _, w, _, _ in p.guarantees], 100))
    for p in PRODUCTS
)
_START_ORIGIN = date(2002, 1, 1)
_START_SPAN = (WINDOW_START - _START_ORIGIN).days  # every policy is in force on WINDOW_START
_MASK = (1 << 64) - 1
# SplitMix64's increment and its finaliser's two multipliers: _mix, _mix_range, _draw.
_GAMMA, _MUL1, _MUL2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_NORMAL_MAGIC = 4 * math.exp(-0.5) / math.sqrt(2.0)
"""Kinderman and Monahan's constant, as ``random.normalvariate`` computes it."""


def _mix(x: int) -> int:
    """SplitMix64 finaliser: 64 well-mixed bits from an integer."""
    x = (x + _GAMMA) & _MASK
    x = ((x ^ (x >> 30)) * _MUL1) & _MASK
    x = ((x ^ (x >> 27)) * _MUL2) & _MASK
    return x ^ (x >> 31)


class Portfolio:
    """``size`` policies split by product in contiguous index ranges, derived on demand."""

    def __init__(self, seed: int, size: int) -> None:
        self.seed = seed
        self.size = size
        self.key = (seed * 0x2545F4914F6CDD1D) & _MASK
        bounds = [0]
        for product in PRODUCTS[:-1]:
            bounds.append(bounds[-1] + round(size * product.policy_share))
        bounds.append(size)
        if any(b >= e for b, e in itertools.pairwise(bounds)):
            raise ValueError(f"A portfolio of {size} policies leaves a product without any.")
        self.ranges: tuple[tuple[int, int], ...] = tuple(itertools.pairwise(bounds))

    @classmethod
    def for_claims(cls, seed: int, claims_count: int) -> Portfolio:
        """The portfolio whose expected claims over the window number ``claims_count``."""
        rate = sum(p.policy_share * p.frequency for p in PRODUCTS) * WINDOW_DAYS / 365.25
        return cls(seed, max(len(PRODUCTS) * 10, round(claims_count / rate)))

    def product_index(self, index: int) -> int:
        """The index in ``PRODUCTS`` of policy ``index``'s product.

        Raises:
            IndexError: ``index`` is not below ``size``.
        """
        for i, (_, end) in enumerate(self.ranges):
            if index < end:
                return i
        raise IndexError(index)

    def policy(self, index: int) -> Policy:
        """The policy at ``index`` (0 <= index < size)."""
        h = _mix(self.key ^ index)
        product = PRODUCTS[self.product_index(index)]
        factor = 0.75 + (h >> 48) / 131070  # 0.75 .. 1.25, mean 1
        return Policy(
            number=f"{product.code}-{index:08d}",
            holder=HOLDERS[(h >> 10) & 4095],
            product=product.label,
            region=_REGION_TABLE[h & 1023],
            start_date=_START_ORIGIN + timedelta(days=((h >> 22) & 0x3FFFFFF) % _START_SPAN),
            annual_premium=round(product.base_premium * factor, 2),
        )

    def policies(self) -> Iterator[Policy]:
        """Every policy, in index order, lazily."""
        return (self.policy(i) for i in range(self.size))

    def earned_premium_cents(
        self, checkpoint: Callable[[int], None] | None = None, every: int = 20_000
    ) -> dict[str, int]:
        """Cents of premium earned over the window per region, summed over every policy.

        Every policy is in force for the whole two-year window, so it earns its annual
        premium twice. Same figures as :meth:`policy`, without building the records: the
        hashes of ``every`` policies at a time come from :func:`_mix_range`, and a
        premium's cents are ``round(premium * 100)`` taken straight from the unrounded
        premium unless that lands within a hair of a half cent (then the exact way).
        ``checkpoint(policies_done)`` is called after each ``every`` policies.
        """
        by_slot = [0] * 1024  # cents per slot of _REGION_TABLE
        bases = [p.base_premium for p in PRODUCTS]
        for first in range(0, self.size, every):
            last = min(first + every, self.size)
            for product, (start, end) in enumerate(self.ranges):
                lo, hi, base = max(start, first), min(end, last), bases[product]
                if lo >= hi:
                    continue
                for h in _mix_range(self.key, lo, hi):
                    premium = base * (0.75 + (h >> 48) / 131070)  # as in policy()
                    cents = round(premium * 100)
                    if abs(premium * 100 - cents) > 0.4999:  # near a tie: decimal rounding
                        cents = round(round(premium, 2) * 100)
                    by_slot[h & 1023] += cents
            if checkpoint is not None and last - first == every:
                checkpoint(last)
        years = round(WINDOW_DAYS / 365.25)
        totals = dict.fromkeys(_REGION_NAMES, 0)
        for region, cents in zip(_REGION_TABLE, by_slot, strict=True):
            totals[region] += cents * years
        return totals


def _mix_range(key: int, start: int, end: int) -> array[int]:
    """``_mix(key ^ i)`` for each ``i`` in ``range(start, end)``, all at once.

    The values sit in 128-bit lanes of one large integer: a 64-bit value times a 64-bit
    constant fits its lane, and the bits a right shift brings down from the next lane
    land in the upper half, cleared before the next step. Python's big-integer
    arithmetic then does each step of SplitMix64 for every lane in one call.
    """
    n = end - start
    words = array("Q", bytes(16 * n))
    words[0::2] = array("Q", range(start, end))
    if sys.byteorder == "big":
        words.byteswap()
    x = int.from_bytes(words, "little")

    def lanes(value: int) -> int:
        return int.from_bytes(value.to_bytes(16, "little") * n, "little")

    low = lanes(_MASK)
    x = ((x ^ lanes(key)) + lanes(_GAMMA)) & low
    x = ((x ^ (x >> 30)) & low) * _MUL1 & low
    x = ((x ^ (x >> 27)) & low) * _MUL2 & low
    x = (x ^ (x >> 31)) & low
    words = array("Q", x.to_bytes(16 * n, "little"))
    if sys.byteorder == "big":
        words.byteswap()
    return words[0::2]


def daily_counts(count: int) -> list[int]:
    """How many of ``count`` claims fall on each day of the window (winter peak).

    Deterministic and independent of the seed, so a consumer can size sheets or pages
    before generating the claims.
    """
    days = (WINDOW_START + timedelta(days=d) for d in range(WINDOW_DAYS))
    weights = [
        1.0 + 0.2 * math.cos(2 * math.pi * (d.timetuple().tm_yday - 20) / 365.25) for d in days
    ]
    cumulative = list(itertools.accumulate(weights, initial=0.0))
    bounds = [round(count * c / cumulative[-1]) for c in cumulative]  # spreads remainders evenly
    return [b - a for a, b in itertools.pairwise(bounds)]


def claims(seed: int, count: int, portfolio: Portfolio | None = None) -> Iterator[Claim]:
    """``count`` claims sorted by date of loss, lazily; ids ``SIN-<year>-<n>``, n from 1.

    Args:
        seed: the data seed; the default portfolio is ``Portfolio.for_claims(seed, count)``.
        count: exactly how many claims to yield.
        portfolio: the policies the claims hit.
    """
    return cast(Iterator[Claim], _draw(seed, count, portfolio, full=True))


def claim_figures(
    seed: int, count: int, portfolio: Portfolio | None = None
) -> Iterator[tuple[date, str, float]]:
    """``(loss_date, region, amount)`` of the same claims as :func:`claims`, lazily.

    The same draws in the same order, so the same figures, without the identifiers and the
    status nobody reads in a statistics pass (half the cost of a claim).
    """
    return cast(Iterator[tuple[date, str, float]], _draw(seed, count, portfolio, full=False))


def _draw(
    seed: int, count: int, portfolio: Portfolio | None, *, full: bool
) -> Iterator[Claim | tuple[date, str, float]]:
    """The claims, one draw after another; the hot loop of every report.

    :func:`_mix` and ``random.lognormvariate`` are written out inline (the loop's two
    costliest calls): the same arithmetic on the same draws, so the same claims.
    """
    book = portfolio or Portfolio.for_claims(seed, count)
    rand = random.Random(seed * 1_000_003 + 7).random
    exp, log, magic = math.exp, math.log, _NORMAL_MAGIC
    product_table, guarantee_tables, severity = _CLAIM_PRODUCT_TABLE, _GUARANTEE_TABLES, _SEVERITY
    ranges, key, holders, regions = book.ranges, book.key, HOLDERS, _REGION_TABLE
    mask, gamma, mul1, mul2 = _MASK, _GAMMA, _MUL1, _MUL2
    codes = [p.code for p in PRODUCTS]
    labels = [p.label for p in PRODUCTS]
    number = 0
    for offset, today in enumerate(daily_counts(count)):
        if not today:
            continue
        loss_date = WINDOW_START + timedelta(days=offset)
        prefix = f"SIN-{loss_date.year}-"
        age = (AS_OF - loss_date).days
        refused = 0.05 * min(1.0, age / 60)
        settled = refused + 0.92 * (1 - math.exp(-age / 45))
        in_progress = settled + (1 - settled) * 0.6
        for _ in range(today):
            number += 1
            p = product_table[int(rand() * 1024)]
            start, end = ranges[p]
            index = start + int(rand() * (end - start))
            x = ((key ^ index) + gamma) & mask  # _mix(key ^ index)
            x = ((x ^ (x >> 30)) * mul1) & mask
            x = ((x ^ (x >> 27)) * mul2) & mask
            h = x ^ (x >> 31)  # the fields of book.policy(index), without building it
            region = regions[h & 1023]
            label, _, mu, sigma = guarantee_tables[p][int(rand() * 100)]
            while True:  # a normal draw by Kinderman and Monahan's ratio of uniforms
                u = rand()
                v = 1.0 - rand()
                z = magic * (u - 0.5) / v
                if z * z / 4.0 <= -log(v):
                    break
            amount = max(15.0, round(exp(mu + z * sigma) * severity[region], 2))
            r = rand()
            if not full:
                yield loss_date, region, amount
                continue
            yield Claim(
                f"{prefix}{number:07d}",
                loss_date,
                f"{codes[p]}-{index:08d}",
                holders[(h >> 10) & 4095],
                labels[p],
                label,
                region,
                amount,
                "Refusé"
                if r < refused
                else "Réglé"
                if r < settled
                else "En cours"
                if r < in_progress
                else "Ouvert",
            )
