"""Schemathesis against the live OpenAPI schema: no 5xx, every response as documented."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.server import running

# Excluded on purpose, with the reason:
# - positive_data_acceptance: some rules are cross-field (bounds that depend on report_type,
#   query string or body but not both) and cannot be written in OpenAPI; such requests get a
#   documented 422 with a stable code, which the other checks verify.
# - use_after_free: DELETE /jobs/{id} *cancels* a job (the seed's route); the cancelled job
#   stays readable, by design.
EXCLUDED = "positive_data_acceptance,use_after_free"


def test_fuzzed_requests_never_5xx_and_match_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reports.db'}"
    with running(tmp_path, url, INLINE_WORKERS="1", LOG_LEVEL="WARNING") as server:
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "all",
                "--exclude-checks",
                EXCLUDED,
                "--max-examples",
                "100",
                "--seed",
                "20261122",
                "--request-timeout",
                "10",
                "--no-color",
                "--header",
                f"X-API-Key: {server.api_key}",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-4000:]
    generated = int(re.search(r"(\d+) generated", report).group(1))  # type: ignore[union-attr]
    assert generated >= 1000, report[-2000:]  # about 1,700-1,900 with this seed
    assert "http.unhandled" not in server.logs()  # the 500 handler never ran
