"""``celery_manager.py``: worker QUEUE [N] | beat | flower [PORT] | status.

Workers run in this process through Celery's own command line (prefork pool); ``status``
asks Celery and RQ who is alive and exits non-zero when no worker answers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

from app.core.celery_app import queue_name
from app.core.config import Environment, Settings, get_settings
from app.core.metrics_export import prepare_multiprocess_dir
from app.domain.errors import AppError, InvalidInput, Misconfigured
from app.domain.queues import Queue


def parse_queues(spec: Sequence[str] | str) -> list[Queue]:
    """``reports``, ``reports,documents`` or ``all`` → queues, highest priority first.

    Raises:
        InvalidInput: an unknown queue name.
    """
    names = [spec] if isinstance(spec, str) else list(spec)
    parts = [p.strip() for name in names for p in name.split(",") if p.strip()]
    if not parts or "all" in parts:
        chosen = list(Queue)
    else:
        unknown = sorted(set(parts) - {q.value for q in Queue})
        if unknown:
            raise InvalidInput(
                f"Unknown queue {', '.join(unknown)}; choose among "
                + ", ".join(q.value for q in Queue)
                + " or all."
            )
        chosen = [Queue(p) for p in dict.fromkeys(parts)]
    return sorted(chosen, key=lambda q: -q.priority)


def default_concurrency(queues: Sequence[Queue]) -> int:
    """The seed's table (reports 2, documents, notifications and celery 1); the largest for
    a worker of several queues."""
    return max(q.concurrency for q in queues)


def redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def run_worker(queues: list[Queue], concurrency: int, *, name: str | None, extra: list[str]) -> int:
    """A Celery worker (prefork) consuming ``queues`` with ``concurrency`` processes."""
    prepare_multiprocess_dir()  # before any child exists: exact metrics across the pool
    from app.bootstrap import artifact_store
    from app.workers.celery_worker import celery_worker_app

    settings = get_settings()
    artifact_store(settings, verify=True)  # a missing bucket stops the worker now
    app = celery_worker_app(settings)
    label = "-".join(q.value for q in queues)
    argv = [
        "worker",
        "--queues",
        ",".join(queue_name(settings.brokers, q) for q in queues),
        "--concurrency",
        str(concurrency),
        "--pool",
        "prefork",
        "--hostname",
        name or f"{settings.brokers.queue_prefix}{label}@%h",
        "--loglevel",
        settings.process.log_level,
        *extra,
    ]
    app.worker_main(argv)
    return 0


def run_beat(extra: list[str]) -> int:
    from app.workers.celery_worker import celery_worker_app

    settings = get_settings()
    app = celery_worker_app(settings)
    settings.ledger.data_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.ledger.data_dir / "celerybeat-schedule"
    code: object = app.start(
        ["beat", "--schedule", str(schedule), "--loglevel", settings.process.log_level, *extra]
    )
    return code if isinstance(code, int) else 0


def flower_auth(settings: Settings) -> str:
    """The Flower credentials, checked.

    Raises:
        Misconfigured: malformed ``FLOWER_BASIC_AUTH``, or none with ``ENVIRONMENT=production``.
    """
    auth = settings.security.flower_basic_auth.strip()
    pairs = [p.partition(":") for p in auth.split(",") if p.strip()]
    if any(not user or not sep or not password for user, sep, password in pairs):
        raise Misconfigured("FLOWER_BASIC_AUTH must be user:password[,user2:password2].")
    if not pairs and settings.process.environment is Environment.PRODUCTION:
        raise Misconfigured("Flower refuses to start without FLOWER_BASIC_AUTH in production.")
    return auth


def run_flower(port: int, extra: list[str]) -> int:
    """Flower on ``port``, bound to FLOWER_ADDRESS, behind basic auth when configured."""
    settings = get_settings()
    auth = flower_auth(settings)
    if auth:  # Flower reads it from the environment: never on a visible command line
        os.environ["FLOWER_BASIC_AUTH"] = auth
    from app.workers.celery_worker import celery_worker_app

    app = celery_worker_app(settings)

    options = [f"--port={port}", f"--address={settings.operations.flower_address}"]
    code: object = app.start(["flower", *options, *extra])
    return code if isinstance(code, int) else 0


def status(out: TextIO = sys.stdout, settings: Settings | None = None) -> int:
    """Print Celery and RQ workers and queue depths; 0 when at least one worker answers."""
    from app import bootstrap

    settings = settings or get_settings()
    timeout = max(settings.brokers.broker_timeout, 1.0)
    alive = 0
    print(f"Celery broker {redact(settings.brokers.celery_broker_url)}", file=out)
    try:
        workers = bootstrap.celery_workers(settings, timeout)
    except Exception as exc:
        print(f"  unreachable: {type(exc).__name__}: {exc}", file=out)
    else:
        alive += len(workers)
        for w in workers:
            print(
                f"  worker {w.name}: queues={','.join(w.queues)} "
                f"active={w.active} reserved={w.reserved}",
                file=out,
            )
        if not workers:
            print("  reachable; no worker answered", file=out)
    print(f"RQ on {redact(settings.brokers.redis_url)}", file=out)
    try:
        infos = bootstrap.rq_queues(settings, timeout)
    except Exception as exc:
        print(f"  unreachable: {type(exc).__name__}: {exc}", file=out)
    else:
        names = {w for info in infos for w in info.workers}
        alive += len(names)
        for info in infos:
            print(
                f"  queue {info.name}: depth={info.depth} workers={len(info.workers)}"
                + (f" ({', '.join(info.workers)})" if info.workers else ""),
                file=out,
            )
    print("OK" if alive else "NO WORKER ANSWERED", file=out)
    return 0 if alive else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="celery_manager.py", description="Run and inspect the Celery side of report jobs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    worker = sub.add_parser("worker", help="run a Celery worker: worker QUEUE [N]")
    add_worker_arguments(worker)
    sub.add_parser("beat", help="run the Celery Beat scheduler")
    flower = sub.add_parser("flower", help="run the Flower web UI")
    flower.add_argument("port", nargs="?", type=int, default=5555, help="default: 5555")
    sub.add_parser("status", help="show workers and queues; non-zero when none answers")
    return parser


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queue", help="reports, documents, notifications, celery, a,b or all")
    parser.add_argument(
        "concurrency",
        type=int,
        nargs="?",
        default=None,
        help="processes (default: reports 2, documents, notifications, celery 1)",
    )
    parser.add_argument("--name", help="node name (default: <queues>@<host>)")


def dispatch(args: argparse.Namespace, extra: list[str]) -> int:
    """Run a parsed ``celery_manager`` command (shared with ``manage.py``).

    A deliberate error (an unknown queue, settings that cannot work) is printed with its
    code and exits 2, instead of a traceback.
    """
    command = args.command.removeprefix("celery-")
    try:
        if command == "worker":
            queues = parse_queues(args.queue)
            concurrency = args.concurrency
            if concurrency is None:
                concurrency = default_concurrency(queues)
            return run_worker(queues, concurrency, name=args.name, extra=extra)
        if command == "beat":
            return run_beat(extra)
        if command == "flower":
            return run_flower(args.port, extra)
        return status()
    except AppError as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if extra and args.command == "status":
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    return dispatch(args, extra)
