"""Queue priorities, by behaviour: what one worker (one process) consuming every queue
takes first when ``reports`` has a backlog — Celery on Redis and on RabbitMQ, and RQ.

The backlog is built while no worker runs: three jobs with a callback (each a chain render
→ document → notify) and then ten plain renders, all on ``reports``. Once the worker
starts, each chain's ``documents`` step is published when its render ends, behind the
backlog. The worker's log gives the order of deliveries (one ``received`` line each); the
ledger's ``started_at`` agrees for the renders. On Redis (Celery and RQ) the order follows
the queues' priorities exactly (documents 7, reports 5, notifications 3); on RabbitMQ it
does not.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from app import bootstrap
from app.core.celery_app import NOTIFY, POSTPROCESS, RUN_REPORT, queue_name
from app.domain.queues import Queue, ReportType
from app.domain.states import JobStatus
from app.services.enqueue import enqueue_report
from kombu import Connection
from kombu import Queue as KombuQueue

from tests.integration.workers import (
    AMQP_URL,
    CallbackReceiver,
    delete_redis_keys,
    settings_from,
    start_celery_worker,
    start_rq_worker,
    wait_for,
)

CHAINS = 3
BACKLOG = 10
_RECEIVED = re.compile(r"Task ([\w.]+)\[([0-9a-f-]{36})(?:_\w+)?\] received")
_DEQUEUED = re.compile(
    r"Worker \w+: \S+: (?!Job OK)[^\n]*\(([0-9a-f-]{36})(_document|_notify)?\)$", re.MULTILINE
)


@contextmanager
def broker(backend_env: dict[str, str], kind: str) -> Iterator[dict[str, str]]:
    """The session's environment on queues of its own, on Redis or RabbitMQ."""
    prefix = f"o{secrets.token_hex(3)}-"
    env = {**backend_env, "QUEUE_PREFIX": prefix}
    if kind == "rabbitmq":
        env["CELERY_BROKER_URL"] = AMQP_URL
    try:
        yield env
    finally:
        if kind == "rabbitmq":
            delete_amqp_queues(env)
        else:
            delete_redis_keys(prefix)


def delete_amqp_queues(env: dict[str, str]) -> None:
    settings = settings_from(env)
    with Connection(AMQP_URL, connect_timeout=5) as conn:
        for queue in Queue:
            KombuQueue(queue_name(settings.brokers, queue)).bind(conn.default_channel).delete()


def deliveries(log: str) -> list[tuple[str, str]]:
    """(step, job id) of every task the worker received (Celery) or dequeued (RQ), in order."""
    celery = [(_STEP[m[1]], m[2]) for m in _RECEIVED.finditer(log)]
    return celery or [(_STEP[m[2] or ""], m[1]) for m in _DEQUEUED.finditer(log)]


def drain_backlog(
    env: dict[str, str], work_dir: Path, receiver: CallbackReceiver, backend: str = "celery"
) -> list[str]:
    """Build the backlog with no worker, start one (one process), and return what it
    received, in order: ``render 0``, ``document 0``, ``notify 0`` for the chains,
    ``render backlog`` for the plain renders."""
    container = bootstrap.build(settings_from(env, dispatch_backend=backend))
    deps = container.deps
    try:
        chains = [
            enqueue_report(
                deps=deps,
                report_type=ReportType.DUMMY,
                params={"seed": i},
                callback_url=receiver.url,
            ).job
            for i in range(CHAINS)
        ]
        backlog = [
            enqueue_report(
                deps=deps, report_type=ReportType.DUMMY, params={"processing_time": 0.2}
            ).job
            for _ in range(BACKLOG)
        ]
        assert {j.status for j in [*chains, *backlog]} == {JobStatus.QUEUED}  # no worker yet
        if backend == "rq":
            worker = start_rq_worker(env, work_dir)
        else:
            worker = start_celery_worker(env, work_dir, queues="all", concurrency=1)
        try:
            for job in chains:
                wait_for(deps.repo, job.id, lambda j: j.notification is not None, timeout=45)
            done = [wait_for(deps.repo, job.id, timeout=30) for job in backlog]
            log = worker.logs()
        finally:
            worker.stop()
        claims = {
            str(j.id): wait_for(deps.repo, j.id, lambda j: j.started_at is not None).started_at
            for j in [*chains, *backlog]
        }
    finally:
        container.close()
    assert {j.status for j in done} == {JobStatus.COMPLETED}
    tag = {str(j.id): str(i) for i, j in enumerate(chains)}
    tag.update({str(j.id): "backlog" for j in backlog})
    seen = [f"{step} {tag[job_id]}" for step, job_id in deliveries(log)]
    # The ledger agrees with the worker's log on the renders: claims in delivery order.
    assert [tag[job_id] for job_id in sorted(claims, key=lambda k: str(claims[k]))] == [
        s.split()[1] for s in seen if s.startswith("render")
    ]
    return seen


_STEP = {
    RUN_REPORT: "render",
    POSTPROCESS: "document",
    NOTIFY: "notify",
    "": "render",  # RQ job ids: <job id>, <job id>_document, <job id>_notify
    "_document": "document",
    "_notify": "notify",
}


@pytest.mark.timeout(120)
def test_on_redis_documents_are_taken_before_a_reports_backlog(
    backend_env: dict[str, str], work_dir: Path, receiver: CallbackReceiver
) -> None:
    """Strict order by queue priority: each chain's document right after its render,
    before any render of the backlog; the notifications only once the backlog is done."""
    with broker(backend_env, "redis") as env:
        seen = drain_backlog(env, work_dir, receiver)
    expected = [
        *[f"{step} {i}" for i in range(CHAINS) for step in ("render", "document")],
        *["render backlog"] * BACKLOG,
        *[f"notify {i}" for i in range(CHAINS)],
    ]
    assert seen == expected, "\n".join(seen)


@pytest.mark.timeout(120)
def test_on_rabbitmq_a_worker_takes_its_queues_in_no_set_order(
    backend_env: dict[str, str], work_dir: Path, receiver: CallbackReceiver
) -> None:
    """RabbitMQ orders messages by priority within one queue (``x-max-priority``) only; a
    worker consuming several queues gets them in no set order (measured: a document
    waited behind 0 to 7 of the 10 queued renders). What holds: with one message
    prefetched, documents are not kept behind the whole backlog, and neither are
    notifications (priority 3 < 5) — no precedence across queues."""
    with broker(backend_env, "rabbitmq") as env:
        seen = drain_backlog(env, work_dir, receiver)
    last_backlog = len(seen) - 1 - seen[::-1].index("render backlog")
    documents = [seen.index(f"document {i}") for i in range(CHAINS)]
    notifies = [seen.index(f"notify {i}") for i in range(CHAINS)]
    assert min(documents) < last_backlog, "\n".join(seen)
    assert min(notifies) < last_backlog, "\n".join(seen)


@pytest.mark.timeout(120)
def test_on_rq_documents_are_taken_before_a_reports_backlog(
    backend_env: dict[str, str], work_dir: Path, receiver: CallbackReceiver
) -> None:
    """RQ: the worker dequeues from its queues in their listed order (highest first)."""
    with broker(backend_env, "redis") as env:
        seen = drain_backlog(env, work_dir, receiver, backend="rq")
    expected = [
        *[f"{step} {i}" for i in range(CHAINS) for step in ("render", "document")],
        *["render backlog"] * BACKLOG,
        *[f"notify {i}" for i in range(CHAINS)],
    ]
    assert seen == expected, "\n".join(seen)
