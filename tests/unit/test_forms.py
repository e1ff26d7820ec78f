"""The enqueue forms follow the domain's parameter models: one declaration per parameter."""

from __future__ import annotations

from app.api.forms import HEAVY, DummyQuery, HeavyQuery, ReportRequest
from app.domain.params import PARAMS_MODELS
from app.domain.queues import ReportType


def test_every_domain_parameter_is_in_the_body_and_its_routes_query_form() -> None:
    for report_type, model in PARAMS_MODELS.items():
        query = HeavyQuery if report_type in HEAVY else DummyQuery
        for form in (query, ReportRequest):
            assert set(model.model_fields) <= set(form.model_fields), (report_type, form)
    delivery = {"callback_url", "recipients", "attach"}
    extra = {"report_type", *delivery}
    assert set(HeavyQuery.model_fields) == extra | {
        name for t in HEAVY for name in PARAMS_MODELS[t].model_fields
    }
    assert set(DummyQuery.model_fields) == delivery | set(
        PARAMS_MODELS[ReportType.DUMMY].model_fields
    )


def test_forms_carry_values_as_given_and_describe_the_domain_bounds() -> None:
    query = HeavyQuery.model_validate({"report_type": "pdf", "pages": "7"})
    assert query.split() == (ReportType.PDF, {"pages": 7})
    assert ReportRequest.model_validate({"rows": 5}).split() == (None, {"rows": 5})
    pages = HeavyQuery.model_fields["pages"].description or ""
    assert "pdf:" in pages
    assert "1–1,000, default 50" in pages
    rows = ReportRequest.model_fields["rows"].description or ""
    assert "analysis: Claims analysed. 100–1,000,000" in rows
