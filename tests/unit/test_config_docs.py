"""docs/configuration.md is generated from the Settings fields and must match them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from app.cli.config_docs import COMMAND, DOC_PATH, main, render, sections
from app.core.config import Settings


def test_configuration_doc_matches_the_settings() -> None:
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    assert current == render(), (
        f"{DOC_PATH} differs from the Settings fields: regenerate it with `{COMMAND}` "
        "(or `make docs`) and commit the result"
    )


def test_every_setting_is_documented_once_under_a_section() -> None:
    listed = [name for _, names in sections() for name in names]
    assert sorted(listed) == sorted(Settings.fields())
    assert len(listed) == len(set(listed)), "a setting is declared by two groups"
    for name, field in Settings.fields().items():
        assert field.description, f"{name.upper()} has no description in core/settings/"


def test_computed_defaults_are_stated_in_words() -> None:
    text = render()
    assert "| `ENQUEUE_CONCURRENCY` | `DB_POOL_SIZE` |" in text
    assert "| `AUTH_CACHE_SECONDS` | `5` in production, else `0` |" in text
    assert (
        "| `DISPATCH_BACKEND` | `auto` | `auto`, `celery`, `rq`, `inline`, `sync`, `asyncio` |"
        in text
    )


def test_check_mode_says_how_to_regenerate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n", encoding="utf-8")
    assert main(argparse.Namespace(output=str(stale), check=True)) == 1
    assert COMMAND in capsys.readouterr().out
    assert main(argparse.Namespace(output=str(stale), check=False)) == 0
    assert main(argparse.Namespace(output=str(stale), check=True)) == 0
    assert stale.read_text(encoding="utf-8") == render()
