"""The RQ-era dummy report: a tiny deterministic JSON document, for smoke tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

from app.domain.errors import RenderError
from app.domain.params import DummyParams
from app.domain.progress import Progress

STEPS = 10


class DummyRenderer:
    """Renders :class:`DummyParams` into ``{"report": "dummy", "seed": ..., "summary": ...}``.

    The first ``simulate_failures`` attempts fail with a retryable ``SIMULATED_FAILURE``
    before anything is written.
    """

    content_type = "application/json"
    extension = "json"

    def render(self, params: DummyParams, target: Path, progress: Progress) -> None:
        """Write the JSON document to ``target``, unless this attempt must fail first."""
        attempt = progress.attempt
        if attempt <= params.simulate_failures:
            raise RenderError(
                f"Simulated failure on attempt {attempt}",
                code="SIMULATED_FAILURE",
                retryable=True,
            )
        rng = random.Random(params.seed)
        values: list[int] = []
        for step in range(STEPS):
            values.append(rng.randint(1, 1000))
            progress.advance(step / STEPS, f"step {step + 1}/{STEPS}")
        document = {
            "report": "dummy",
            "seed": params.seed,
            "summary": {
                "steps": STEPS,
                "values": values,
                "total": sum(values),
                "minimum": min(values),
                "maximum": max(values),
            },
        }
        target.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        progress.advance(1.0, "done")
