"""Report routes: enqueue, list, inspect, download, cancel, queue status.

Routes are ``async`` and send their blocking work (the ledger, the brokers) to the thread
pool in one ``run_in_threadpool`` call; FastAPI would otherwise make a sync route's
response validation a second hop. With the async dependencies of :mod:`app.api.dependencies`, an
enqueue request makes one hop in all.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any
from uuid import UUID

from anyio import to_thread
from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic.json_schema import SkipJsonSchema
from starlette.concurrency import run_in_threadpool

from app.api.cursor import decode_cursor
from app.api.dependencies import Caller, Operator, ServiceDeps, get_container
from app.api.download import artifact_response, file_content
from app.api.errors import error_responses
from app.api.forms import HEAVY, DummyQuery, HeavyQuery, ReportRequest, RequestForm
from app.api.observability import TrackedRoute
from app.api.schemas import JobList, JobOut, QueuesOut, QueueStatusOut
from app.domain.auth import Principal
from app.domain.errors import InvalidInput
from app.domain.jobs import utcnow
from app.domain.ledger import JobFilter
from app.domain.queues import Backend, ReportType
from app.domain.states import JobStatus
from app.reports import MEDIA_TYPES
from app.services.cancel import cancel_job
from app.services.enqueue import enqueue_report
from app.services.queries import artifact_of, get_job_with_emails, list_jobs, queue_status

router = APIRouter(prefix="/api/v1/reports", tags=["reports"], route_class=TrackedRoute)

#: An optional JSON body: ``ReportRequest`` in OpenAPI (not required, never ``null``).
OptionalBody = Annotated[ReportRequest | SkipJsonSchema[None], Body()]
JobId = Annotated[UUID, "job id"]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        pattern=r"^[\x21-\x7e]+$",
        description="Sending the same key and request again returns the first job (200); "
        "the same key with another request is refused (409).",
    ),
]
#: Says whether an enqueue answer is a replay of an earlier Idempotency-Key request.
REPLAYED = "Idempotent-Replayed"
_ENQUEUE_RESPONSES = {
    200: {
        "description": "The job: a new one, or for an Idempotency-Key replay the first one",
        "headers": {
            REPLAYED: {
                "description": "`true`: the job an earlier request with this Idempotency-Key "
                "created (nothing new was queued); `false`: a new job.",
                "schema": {"type": "string", "enum": ["true", "false"]},
            }
        },
    },
    **error_responses(400, 401, 409, 413, 422, 429, 503),
}


def _params(
    body: RequestForm | None, query: RequestForm
) -> tuple[ReportType | None, dict[str, Any]]:
    report_type, given = query.split()
    if body is None:
        return report_type, given
    if given or report_type:
        raise InvalidInput(
            "Send the report parameters either in the query string or in a JSON body, not both.",
            code="AMBIGUOUS_PARAMS",
        )
    return body.split()


def _dummy(chosen: ReportType | None) -> ReportType:
    if chosen not in (None, ReportType.DUMMY):
        raise InvalidInput(
            f"/reports/dummy makes dummy reports; send {chosen} to /reports/heavy.",
            code="INVALID_REPORT_TYPE",
        )
    return ReportType.DUMMY


def _heavy(chosen: ReportType | None) -> ReportType:
    if chosen not in HEAVY:
        raise InvalidInput(
            "report_type must be one of pdf, excel, analysis"
            + (" (dummy reports go to /reports/dummy)." if chosen else "."),
            code="INVALID_REPORT_TYPE",
        )
    return chosen


def _enqueue_route(
    name: str,
    form: type[RequestForm],
    report_type: Callable[[ReportType | None], ReportType],
    *,
    summary: str,
    doc: str,
) -> None:
    """Add ``POST /<name>``: the enqueue routes share this one body.

    They differ by their query form (``form``, in OpenAPI), their documentation, and which
    report type they make of the one asked (``report_type``, which refuses the others).
    """

    async def enqueue(
        request: Request,
        caller: Caller,
        response: Response,
        query: RequestForm,
        idempotency_key: IdempotencyKey = None,
        body: OptionalBody = None,
    ) -> JobOut:
        chosen, params = _params(body, query)
        return await _submit(
            request, caller, response, report_type(chosen), params, idempotency_key
        )

    enqueue.__doc__ = doc
    enqueue.__annotations__["query"] = Annotated[form, Query()]  # the route's own form
    router.add_api_route(
        f"/{name}",
        enqueue,
        methods=["POST"],
        name=f"enqueue_{name}",
        status_code=200,
        response_model=JobOut,
        responses=_ENQUEUE_RESPONSES,
        summary=summary,
    )


_REPLAY_DOC = """

200 with the new job, or with the first job for an Idempotency-Key replay
(``Idempotent-Replayed: true``).
"""
_enqueue_route(
    "dummy",
    DummyQuery,
    _dummy,
    summary="Enqueue the RQ-era dummy report",
    doc="Parameters in the query string (as in the RQ era) or in a JSON body, not both."
    + _REPLAY_DOC,
)
_enqueue_route(
    "heavy",
    HeavyQuery,
    _heavy,
    summary="Enqueue a heavy report (pdf, excel, analysis)",
    doc="`report_type` pdf, excel or analysis; parameters in the query string or a JSON body."
    + _REPLAY_DOC,
)


async def _submit(
    request: Request,
    caller: Principal,
    response: Response,
    report_type: ReportType,
    params: dict[str, Any],
    idempotency_key: str | None,
) -> JobOut:
    """Enqueue in the request's one thread-pool hop; a replay says so in its header.

    At most ``ENQUEUE_CONCURRENCY`` (default ``DB_POOL_SIZE``) enqueues of this process run
    at once: more threads would only open and close overflow connections and fight over
    the GIL; the others wait on the event loop, which costs nothing.
    """
    callback_url = params.pop("callback_url", None)
    recipients = params.pop("recipients", ())
    attach_file = params.pop("attach", True)
    call = partial(
        enqueue_report,
        deps=get_container(request).deps,
        report_type=report_type,
        params=params,
        owner=caller.owner,
        idempotency_key=idempotency_key,
        callback_url=callback_url,
        recipients=recipients,
        attach_file=attach_file,
    )
    result = await to_thread.run_sync(call, limiter=request.app.state.enqueue_limiter)
    response.headers[REPLAYED] = "false" if result.created else "true"
    return JobOut.of(result.job)


@router.get(
    "/jobs",
    name="list_report_jobs",
    response_model=JobList,
    responses=error_responses(401, 422),
    summary="List jobs, newest first (keyset pages: follow `next`)",
)
async def jobs(
    deps: ServiceDeps,
    caller: Caller,
    status: JobStatus | None = None,
    report_type: ReportType | None = None,
    backend: Backend | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="`next` of the previous page")] = None,
) -> JobList:
    """The caller's jobs (an operator's: everyone's), filtered by status, type and backend."""
    page = await run_in_threadpool(
        list_jobs,
        deps=deps,
        where=JobFilter(
            status=status, report_type=report_type, backend=backend, owner=caller.scope
        ),
        limit=limit,
        after=decode_cursor(cursor) if cursor else None,
    )
    return JobList.of(page)


@router.get(
    "/jobs/{job_id}",
    name="get_report_job",
    response_model=JobOut,
    responses=error_responses(401, 404, 422),
    summary="One job: status, progress, stage, artifact",
)
async def job(deps: ServiceDeps, caller: Caller, job_id: UUID) -> JobOut:
    """Another owner's job answers 404, as an unknown one does. With its emails."""
    found, emails = await run_in_threadpool(
        get_job_with_emails, deps=deps, job_id=job_id, owner=caller.scope
    )
    return JobOut.of(found, emails)


@router.delete(
    "/jobs/{job_id}",
    name="cancel_report_job",
    response_model=JobOut,
    responses=error_responses(401, 404, 409, 422),
    summary="Cancel a job: a queued job never runs, a running one stops at its next checkpoint",
)
async def cancel(deps: ServiceDeps, caller: Caller, job_id: UUID) -> JobOut:
    """409 `JOB_ALREADY_FINISHED` when the job has already ended."""
    return JobOut.of(
        await run_in_threadpool(cancel_job, deps=deps, job_id=job_id, owner=caller.scope)
    )


_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report file's bytes, with its own media type (a dummy report is a "
        "JSON file), or application/octet-stream when `Accept` prefers it",
        "content": file_content(MEDIA_TYPES),
    },
    206: {
        "description": "The requested byte range of the report file",
        "content": file_content(MEDIA_TYPES),
    },
    307: {"description": "With DOWNLOAD_REDIRECT: a short-lived URL of the storage"},
    **error_responses(401, 404, 409, 422),
    503: {**error_responses(503)[503], "description": "The artifact storage does not answer"},
}


@router.get(
    "/jobs/{job_id}/download",
    name="download_report",
    response_class=StreamingResponse,
    responses=_DOWNLOAD_RESPONSES,
    summary="Download the report (Range requests supported)",
)
def download(request: Request, deps: ServiceDeps, caller: Caller, job_id: UUID) -> Response:
    """The finished report; 409 `JOB_NOT_COMPLETED` until the job has completed."""
    artifact = artifact_of(deps=deps, job_id=job_id, owner=caller.scope)
    settings = get_container(request).settings
    seconds = settings.storage.download_url_seconds if settings.storage.download_redirect else 0
    return artifact_response(request, deps.store, artifact, redirect_seconds=seconds)


router.add_api_route(
    "/jobs/{job_id}/download",
    download,
    methods=["HEAD"],
    name="head_report",
    response_class=StreamingResponse,
    responses=_DOWNLOAD_RESPONSES,
    summary="The report's headers (size, type, name) without its body",
)


@router.get(
    "/queues/status",
    name="get_queue_status",
    response_model=QueuesOut,
    responses=error_responses(401, 403),
    summary="Waiting and running jobs and live workers, per queue and backend (operators)",
)
async def queues(deps: ServiceDeps, _: Operator) -> QueuesOut:
    """From the ledger (waiting, running) and the brokers (live workers)."""
    statuses = await run_in_threadpool(queue_status, deps=deps)
    return QueuesOut(queues=[QueueStatusOut.of(s) for s in statuses], generated_at=utcnow())
