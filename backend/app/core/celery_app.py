"""The Celery application: JSON only, the seed's four queues, bounded broker retries.

Messages carry a job id and nothing else; the ledger is the source of truth, so there is
no result backend unless ``CELERY_RESULT_BACKEND`` asks for one. Report tasks are
``acks_late`` + ``reject_on_worker_lost``: a duplicate delivery is harmless because
``run_report`` claims the ledger row with a conditional update.
"""

from __future__ import annotations

from typing import Any, Literal

from celery import Celery, signals
from kombu import Exchange
from kombu import Queue as KombuQueue

from app.core.logging import request_id_var
from app.core.settings.jobs import soft_limit
from app.core.settings.runtime import BrokerSettings, CeleryPolicy
from app.domain.errors import Misconfigured
from app.domain.queues import Queue

Role = Literal["client", "worker"]

#: Explicit, stable task names: the only thing producers and workers share.
RUN_REPORT = "reports.run_report"
POSTPROCESS = "documents.postprocess"
NOTIFY = "notifications.notify"
PING = "system.ping"

TASK_QUEUES: dict[str, Queue] = {
    "reports.*": Queue.REPORTS,
    "documents.*": Queue.DOCUMENTS,
    "notifications.*": Queue.NOTIFICATIONS,
    "system.*": Queue.CELERY,
}

MAX_PRIORITY = 9


@signals.before_task_publish.connect
def _carry_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Carry the request id of the current API request to the worker, as a message header."""
    request_id = request_id_var.get()
    if request_id and headers is not None:
        headers.setdefault("request_id", request_id)


def queue_name(brokers: BrokerSettings, queue: Queue) -> str:
    """The broker-side name of ``queue`` (QUEUE_PREFIX isolates environments sharing a broker)."""
    return f"{brokers.queue_prefix}{queue.value}"


def message_priority(brokers: BrokerSettings, queue: Queue) -> int:
    """The priority that messages to ``queue`` carry, so that a worker takes higher queues first.

    RabbitMQ orders by it within a queue (declared with ``x-max-priority``; higher first).
    kombu's Redis transport keeps one list per priority step (0, 3, 6, 9) and a worker
    pops the *lowest* step first across all the queues it consumes, then the queues in
    their ``--queues`` order (``queue_order_strategy=priority``; ``celery_manager.py``
    lists them highest first). There the value is inverted: ``documents`` (7 → 2, step 0)
    before ``celery`` (6 → 3) and ``reports`` (5 → 4, both step 3), ``notifications``
    (3 → 6) last. Without the inversion a worker would take a ``reports`` backlog first.
    """
    if brokers.celery_broker_is_redis:
        return MAX_PRIORITY - queue.priority
    return queue.priority


def check_visibility_timeout(policy: CeleryPolicy) -> None:
    """Refuse a Redis broker whose visibility timeout would redeliver running or waiting tasks.

    Raises:
        Misconfigured: the timeout does not exceed the longest hard time limit and the
            longest retry countdown.
    """
    brokers = policy.brokers
    if not brokers.celery_broker_is_redis:
        return
    needed = max(policy.time_limit, policy.longest_countdown)
    if brokers.celery_visibility_timeout <= needed:
        raise Misconfigured(
            f"CELERY_VISIBILITY_TIMEOUT={brokers.celery_visibility_timeout}s must exceed the "
            f"longest hard time limit or retry countdown ({needed:g}s): otherwise Redis "
            "redelivers tasks that are still running or waiting for their retry."
        )


def _transport_options(brokers: BrokerSettings, role: Role) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if brokers.celery_broker_is_redis:
        options.update(
            visibility_timeout=brokers.celery_visibility_timeout,
            queue_order_strategy="priority",
            socket_connect_timeout=brokers.broker_timeout,
        )
    if role == "client":
        # A producer (API, CLI) must never hang on a dead broker: one quick retry, bounded.
        options.update(
            max_retries=1,
            interval_start=0,
            interval_step=0.1,
            interval_max=0.2,
            connect_retries_timeout=brokers.broker_timeout * 2,
        )
        if brokers.celery_broker_is_redis:
            options["socket_timeout"] = max(1.0, brokers.broker_timeout * 2)
        else:
            options.update(read_timeout=2.0, write_timeout=2.0)
    return options


def _queues(brokers: BrokerSettings) -> tuple[KombuQueue, ...]:
    return tuple(
        KombuQueue(
            queue_name(brokers, q),
            Exchange(queue_name(brokers, q), type="direct"),
            routing_key=queue_name(brokers, q),
            queue_arguments={"x-max-priority": MAX_PRIORITY},
        )
        for q in Queue
    )


def create_celery_app(policy: CeleryPolicy, *, role: Role = "client") -> Celery:
    """A configured Celery app; ``role="worker"`` keeps reconnecting instead of failing fast.

    ``policy`` comes from the settings (``settings.celery_policy()``); the composition
    root builds the apps (:func:`app.bootstrap.celery_app`).
    """
    check_visibility_timeout(policy)
    brokers = policy.brokers
    app = Celery("report_jobs", set_as_current=False)
    app.conf.update(
        broker_url=brokers.celery_broker_url,
        result_backend=brokers.celery_result_backend or None,
        task_ignore_result=not brokers.celery_result_backend,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        timezone=policy.timezone,  # Beat's schedule: the business day
        enable_utc=True,
        task_queues=_queues(brokers),
        task_default_queue=queue_name(brokers, Queue.CELERY),
        task_default_priority=message_priority(brokers, Queue.CELERY),
        task_queue_max_priority=MAX_PRIORITY,
        task_routes={
            pattern: {"queue": queue_name(brokers, q), "priority": message_priority(brokers, q)}
            for pattern, q in TASK_QUEUES.items()
        },
        task_time_limit=policy.time_limit,
        task_soft_time_limit=soft_limit(policy.time_limit),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=policy.max_tasks_per_child,
        worker_max_memory_per_child=policy.max_memory_per_child,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # No task-sent event: it was a second message per publish, about half of
        # apply_async's time (benchmarks/profiles/enqueue_before.txt: 400 kombu publishes
        # for 200 jobs), and it only lets Flower list a task before a worker takes it. The
        # ledger already shows those jobs (queued). Worker task events are off too: a
        # running Flower switches them on (every few seconds), so Flower still sees every
        # task while someone watches, and nobody pays three messages a task otherwise.
        task_send_sent_event=False,
        broker_connection_timeout=brokers.broker_timeout if role == "client" else 4.0,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None if policy.reconnect_forever and role == "worker" else 10,
        broker_pool_limit=10,
        broker_heartbeat=30 if role == "worker" else 0,
        broker_transport_options=_transport_options(brokers, role),
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        control_queue_ttl=5.0,
        control_queue_expires=10.0,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_enable_remote_control=True,
    )
    return app
