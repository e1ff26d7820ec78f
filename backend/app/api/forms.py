"""The enqueue routes' request forms, derived from the domain's parameter models.

A report parameter is declared once, in :mod:`app.domain.jobs` (name, type, bounds,
default, description). The JSON body and the query form of each enqueue route are built
from those models here, so adding a parameter is one edit. The forms only carry values:
bounds are checked by the domain (``parse_params``), which answers ``INVALID_PARAMS``
whichever form the values came in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from app.domain.params import PARAMS_MODELS
from app.domain.queues import ReportType

HEAVY = (ReportType.PDF, ReportType.EXCEL, ReportType.ANALYSIS)
_CALLBACK = "Optional: the finished job is POSTed here (HMAC-signed; allowed hosts only)."
_RECIPIENTS = "Optional: email addresses the finished (or failed) report is sent to, once each."
_ATTACH = "With recipients: attach the file (default; a link above the size limit) or link it."


class RequestForm(BaseModel):
    """Values as sent; ``None`` where the caller gave none (the domain's default applies)."""

    def split(self) -> tuple[ReportType | None, dict[str, Any]]:
        """The report type (if the form has one) and the parameters that were given."""
        given = self.model_dump(exclude_none=True)
        return given.pop("report_type", None), given


class _Body(RequestForm):
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {"report_type": "pdf", "pages": 50, "processing_time": 30},
                {"report_type": "excel", "rows": 100000, "sheets": 4, "seed": 7},
            ]
        },
    )


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def _rule(info: FieldInfo) -> str:
    low = next((m.ge for m in info.metadata if isinstance(m, Ge)), None)
    high = next((m.le for m in info.metadata if isinstance(m, Le)), None)
    bounds = f"{_number(low)}–{_number(high)}, " if low is not None and high is not None else ""
    return f"{info.description} {bounds}default {_number(info.default)}."


def _describe(name: str, types: Sequence[ReportType]) -> str:
    rules = {
        t: _rule(m.model_fields[name])
        for t in types
        if name in (m := PARAMS_MODELS[t]).model_fields
    }
    if len(set(rules.values())) == 1 and len(rules) == len(types):
        return next(iter(rules.values()))
    return " ".join(f"{t}: {rule}" for t, rule in rules.items())


def _form(
    name: str,
    types: Sequence[ReportType],
    base: type[RequestForm],
    doc: str,
    report_type: str | None = None,
) -> type[RequestForm]:
    """A form with every parameter of ``types``, optional, described from the domain."""
    fields: dict[str, Any] = {}
    if report_type:
        fields["report_type"] = (ReportType | None, Field(None, description=report_type))
    for param in dict.fromkeys(p for t in types for p in PARAMS_MODELS[t].model_fields):
        annotation: Any = next(
            PARAMS_MODELS[t].model_fields[param].annotation
            for t in types
            if param in PARAMS_MODELS[t].model_fields
        )
        fields[param] = (annotation | None, Field(None, description=_describe(param, types)))
    fields["callback_url"] = (str | None, Field(None, max_length=2048, description=_CALLBACK))
    fields["recipients"] = (list[str] | None, Field(None, max_length=500, description=_RECIPIENTS))
    fields["attach"] = (bool | None, Field(None, description=_ATTACH))
    return create_model(name, __base__=base, __doc__=doc, **fields)


if TYPE_CHECKING:  # the classes below are built at import time; mypy sees their base

    class ReportRequest(RequestForm): ...

    class DummyQuery(RequestForm): ...

    class HeavyQuery(RequestForm): ...

else:
    ReportRequest = _form(
        "ReportRequest",
        (*HEAVY, ReportType.DUMMY),
        _Body,
        "Parameters of a report, as a JSON body. Which apply depends on ``report_type``.",
        report_type="pdf, excel or analysis: required for /reports/heavy; dummy or none for "
        "/reports/dummy.",
    )
    DummyQuery = _form("DummyQuery", (ReportType.DUMMY,), RequestForm, "A dummy report.")
    HeavyQuery = _form(
        "HeavyQuery", HEAVY, RequestForm, "A heavy report.", report_type="pdf, excel or analysis."
    )
