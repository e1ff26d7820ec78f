"""The schema comes from Alembic on both databases: up from empty, matching the models, down."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from app.db.migrations import alembic_config, current_revision, head_revision
from app.db.session import make_engine
from sqlalchemy import inspect

from tests.conftest import fresh_pg_database

ROOT = Path(__file__).resolve().parents[2]


def _alembic(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with fresh_pg_database("migrations") as url:
        yield url


def test_upgrade_check_downgrade_round_trip(empty_url: str) -> None:
    up = _alembic(empty_url, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    check = _alembic(empty_url, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr

    engine = make_engine(empty_url)
    assert current_revision(engine) == head_revision(empty_url)
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("report_jobs")}
    assert {
        "ix_report_jobs_created",
        "ix_report_jobs_status_created",
        "ix_report_jobs_type_created",
        "ix_report_jobs_backend_created",
    } <= indexes

    down = _alembic(empty_url, "downgrade", "base")
    assert down.returncode == 0, down.stderr
    assert "report_jobs" not in inspect(engine).get_table_names()
    engine.dispose()


def test_config_points_at_the_repo_scripts() -> None:
    config = alembic_config("sqlite://")
    assert Path(config.get_main_option("script_location") or "").is_dir()
