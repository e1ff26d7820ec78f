"""``manage.py config-docs``: ``docs/configuration.md``, generated from ``Settings``.

Every field of the groups of :class:`app.core.config.Settings` is one row: its environment
variable, its default, what it accepts and its description. The conventions in
``core/settings/``:

- a section is one group of settings (a :class:`~app.core.settings.base.SettingsGroup`,
  one attribute of ``Settings``), in the order ``Settings`` lists them: the first line of its
  docstring is the heading, the rest the paragraph under it; its fields keep their order;
- every field has a ``description`` (the generator refuses a field without one);
- a default that is computed (from another setting, or from ``ENVIRONMENT``) is stated in
  ``json_schema_extra={"doc_default": "…"}`` (Markdown, shown as written); any other default
  is the field's value, shown as a human reads it.

``tests/unit/test_config_docs.py`` fails when the file differs from this output.
"""

from __future__ import annotations

import argparse
import enum
import inspect
import json
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic.fields import FieldInfo

from app.core.config import Settings, SettingsGroup

DOC_PATH = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
COMMAND = "python manage.py config-docs"  # or `make docs`


#: Variables that are not settings of the application, read by a library or by compose.
OUTSIDE_SETTINGS = (
    "Read elsewhere: `PROMETHEUS_MULTIPROC_DIR` (prometheus-client's directory, emptied at "
    "its master's start; default: a private temporary directory per master, see "
    "[operations](operations.md#metrics-and-where-they-are-scraped)). Compose only: "
    "`POSTGRES_PASSWORD` (default `reports`), `GRAFANA_ADMIN_PASSWORD` (required)."
)


def groups(settings_cls: type[Settings] = Settings) -> list[type[SettingsGroup]]:
    """The groups ``settings_cls`` is made of, in the order it lists them."""
    return list(settings_cls.groups().values())


def sections(settings_cls: type[Settings] = Settings) -> list[tuple[str, list[str]]]:
    """The fields of ``settings_cls`` under the heading of the group that declares them."""
    return [(heading(group), list(group.model_fields)) for group in groups(settings_cls)]


def heading(group: type[SettingsGroup]) -> str:
    """The first line of the group's docstring."""
    doc = inspect.getdoc(group) or group.__name__
    return doc.splitlines()[0].rstrip(".")


def intro(group: type[SettingsGroup]) -> str:
    """The group's docstring after its first line."""
    doc = inspect.getdoc(group) or ""
    return " ".join(doc.split("\n", 1)[1].split()) if "\n" in doc else ""


def env_name(name: str, field: FieldInfo, group: type[SettingsGroup]) -> str:
    alias = field.validation_alias if isinstance(field.validation_alias, str) else None
    prefix = str(group.model_config.get("env_prefix", ""))
    return (alias or f"{prefix}{name}").upper()


def _value(value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and value >= 100_000:
        return f"{value:,}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def default_text(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("doc_default"), str):
        return str(extra["doc_default"])
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if value in ("", []):
        return "empty"
    return f"`{_value(value)}`"


def accepts_text(field: FieldInfo) -> str:
    """Choices (enum, ``Literal``, bool) or numeric bounds; empty for free text."""
    kind = field.annotation
    if get_origin(kind) is not Literal:  # Optional[X] is X here
        kind = next((a for a in get_args(kind) if a is not type(None)), kind)
    if get_origin(kind) is Literal:
        return ", ".join(f"`{_value(v)}`" for v in get_args(kind))
    if inspect.isclass(kind) and issubclass(kind, enum.Enum):
        return ", ".join(f"`{_value(v)}`" for v in kind)
    if kind is bool:
        return "`true`, `false`"
    bounds: dict[str, Any] = {}
    for item in field.metadata:
        for attr in ("gt", "ge", "lt", "le"):
            if isinstance(item, annotated_types.BaseMetadata) and hasattr(item, attr):
                bounds[attr] = getattr(item, attr)
    if "ge" in bounds and "le" in bounds:
        return f"{_value(bounds['ge'])}–{_value(bounds['le'])}"
    signs = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    return ", ".join(f"{signs[k]} {_value(v)}" for k, v in bounds.items())


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(settings_cls: type[Settings] = Settings) -> str:
    """The Markdown of ``docs/configuration.md``."""
    fields = settings_cls.fields()
    missing = [name for name, field in fields.items() if not field.description]
    if missing:
        raise ValueError(f"settings without a description: {', '.join(missing)}")
    lines = [
        "Describes backend/app/core/settings/ (the groups of `Settings`, backend/app/core/"
        "config.py). Generated by `python manage.py config-docs` (`make docs`) from their "
        "fields: edit their descriptions there, not this file.",
        "",
        "# Configuration",
        "",
        "One `Settings` class, made of the groups below, reads the environment (and `.env`); "
        "each field is the upper-case variable shown. JSON values (`{…}`) are given as JSON; "
        "lists as comma-separated text.",
    ]
    for group in groups(settings_cls):
        lines += ["", f"## {heading(group)}", ""]
        if intro(group):
            lines += [intro(group), ""]
        lines.append("| variable | default | accepts | meaning |")
        lines.append("|---|---|---|---|")
        for name, field in group.model_fields.items():
            row = (
                f"`{env_name(name, field, group)}`",
                default_text(field),
                accepts_text(field),
                field.description or "",
            )
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    lines += ["", OUTSIDE_SETTINGS, ""]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Write the document (or, with ``--check``, exit 1 when it is out of date)."""
    path = Path(args.output)
    text = render()
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is out of date: run `{COMMAND}`")
            return 1
        print(f"{path} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default=str(DOC_PATH), help="default: docs/configuration.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs")
