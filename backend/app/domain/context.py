"""The correlation id of the work in progress: a request, the job it creates, its deliveries.

A context variable (standard library only), so that services can stamp what they send
(an email's ``X-Correlation-ID``) without knowing where the id came from: the API's
middleware sets it for a request, each backend's worker for the job it runs.
"""

from __future__ import annotations

from contextvars import ContextVar

correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)
