"""Each report type's parameters: declared once (name, type, bounds), validated once."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.domain.errors import InvalidParams
from app.domain.queues import ReportType


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    processing_time: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="Minimum duration in seconds, spread over the render's checkpoints.",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the generated data.")


class DummyParams(_Params):
    """Parameters of a ``dummy`` report."""

    simulate_failures: int = Field(
        0,
        ge=0,
        le=5,
        description="Testing aid: the first N attempts fail with a retryable error.",
    )


class PdfParams(_Params):
    """Parameters of a ``pdf`` report."""

    pages: int = Field(50, ge=1, le=1000, description="Exact page count of the PDF.")


class ExcelParams(_Params):
    """Parameters of an ``excel`` report."""

    rows: int = Field(10_000, ge=1, le=1_000_000, description="Data rows across all sheets.")
    sheets: int = Field(3, ge=1, le=12, description="Number of data sheets.")


class AnalysisParams(_Params):
    """Parameters of an ``analysis`` report."""

    rows: int = Field(10_000, ge=100, le=1_000_000, description="Claims analysed.")


ReportParams = DummyParams | PdfParams | ExcelParams | AnalysisParams

PARAMS_MODELS: dict[ReportType, type[ReportParams]] = {
    ReportType.DUMMY: DummyParams,
    ReportType.PDF: PdfParams,
    ReportType.EXCEL: ExcelParams,
    ReportType.ANALYSIS: AnalysisParams,
}


def parse_params(report_type: ReportType, raw: dict[str, Any]) -> ReportParams:
    """Validate raw parameters for ``report_type``; defaults fill what is missing.

    Raises:
        InvalidParams: a value is out of bounds, of the wrong type, or not applicable.
    """
    try:
        return PARAMS_MODELS[report_type].model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'params'}: "
            + (
                f"not a parameter of {report_type} reports"
                if err["type"] == "extra_forbidden"
                else err["msg"]
            )
            for err in exc.errors()
        )
        raise InvalidParams(f"Invalid parameters for a {report_type} report: {problems}.") from exc
