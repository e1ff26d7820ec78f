"""The pipeline bench's report: issue 28's anchors and targets, computed from the run."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from pipeline_bench.drains import additive_bound
from pipeline_bench.report import report


def bench(**figures: float) -> SimpleNamespace:
    args = SimpleNamespace(jobs=1000, duration=10.0, only=["celery", "rq"])
    return SimpleNamespace(figures=figures, args=args, load_before=0.5, failed={})


def row(text: str, measure: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {measure}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_additive_bound_is_the_two_rates_in_series() -> None:
    assert additive_bound(700, 350) == pytest.approx(233.33, abs=0.01)
    assert additive_bound(100, 100) == pytest.approx(50)


def test_the_celery_drain_is_judged_against_the_bound_and_the_ledger_against_raw() -> None:
    raw, ledger = 700.0, 580.0
    bound = additive_bound(raw, ledger)
    text = report(
        bench(
            **{
                "celery_drain.raw": raw,
                "celery_drain.ceiling": ledger,
                "celery_drain.bound": bound,
                "celery_drain.platform": 0.95 * bound,
                "celery_drain.pg": 180.0,
                "rq_drain.raw": 80.0,
                "rq_drain.platform": 70.0,
            }
        ),
        "pipeline.py",
        1.0,
    )
    drain = row(text, "Celery drain, jobs/s — vs the additive bound")
    assert drain[1:] == [f"{0.95 * bound:.0f}", f"{bound:.0f}", "0.95×", "≥ 0.9×", "✓"]
    assert row(text, "Ledger alone (L)")[3:] == ["0.83×", "≥ 0.8×", "✓"]
    assert row(text, "RQ drain")[3:] == ["0.88×", "≥ 0.9×", "✗"]
    # The peers without a target of their own are still reported, unjudged.
    assert row(text, "Celery drain, jobs/s — vs Celery + PostgreSQL")[3:] == ["1.67×", "—", ""]


def test_a_section_not_run_leaves_its_rows_out() -> None:
    text = report(bench(**{"rq_drain.raw": 80.0, "rq_drain.platform": 80.0}), "x", 1.0)
    assert row(text, "RQ drain")[3:] == ["1.00×", "≥ 0.9×", "✓"]
    assert not [line for line in text.splitlines() if line.startswith(("| Celery", "| Ledger"))]
