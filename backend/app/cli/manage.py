"""``manage.py``: serve the API, apply migrations, run and inspect workers.

Options after a ``celery-*`` command that this CLI does not know go to Celery itself.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from app.core.config import Settings, get_settings
from app.domain.queues import Backend

if TYPE_CHECKING:
    from app.domain.auth import ApiKeyRepository


def _stopped_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _serve(args: argparse.Namespace) -> int:
    """uvicorn with uvloop and httptools (``uvicorn[standard]``; "auto" falls back to asyncio
    and h11 where they are not installed), ``--workers`` or ``API_WORKERS`` processes."""
    import uvicorn

    from app.core.metrics_export import prepare_multiprocess_dir

    settings = get_settings()
    _check_storage(settings)
    prepare_multiprocess_dir()  # before the workers start: /metrics adds up all of them
    # uvicorn raises a SIGTERM/SIGINT again once its graceful shutdown is done, under the
    # handlers it found: make that a clean exit (0), so a supervisor tells it from a crash.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped_cleanly)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host or settings.process.host,
        port=args.port or settings.process.port,
        workers=args.workers or settings.process.api_workers,
        loop="auto",
        http="auto",
        log_config=None,
        timeout_graceful_shutdown=args.grace,
        proxy_headers=True,
        forwarded_allow_ips=settings.process.forwarded_allow_ips,
    )
    return 0


def _check_storage(settings: Settings) -> None:
    """Ask the artifact store before anything starts: a missing bucket or refused
    credentials stop the command (``MISCONFIGURED``) instead of failing the first job."""
    from app.bootstrap import artifact_store

    artifact_store(settings, verify=True)


def _migrate(args: argparse.Namespace) -> int:
    from app.db.migrations import upgrade

    settings = get_settings()
    settings.ledger.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.ledger.database_url)
    print("database schema at head")
    if args.create_bucket and settings.storage.storage_backend == "s3":
        from app.bootstrap import artifact_store
        from app.storage.s3 import S3ArtifactStore

        store = artifact_store(settings)
        assert isinstance(store, S3ArtifactStore)
        made = store.create_bucket()
        print(f"bucket {settings.storage.s3_bucket} {'created' if made else 'already there'}")
    return 0


def _celery(args: argparse.Namespace) -> int:
    from app.cli.celery_manager import dispatch

    code: int = dispatch(args, list(getattr(args, "extra", [])))
    return code


def _rq_worker(args: argparse.Namespace) -> int:
    from app.cli.celery_manager import parse_queues
    from app.cli.rq_worker import run_rq_worker
    from app.core.logging import setup_logging
    from app.core.metrics_export import prepare_multiprocess_dir
    from app.workers.observability import start_worker_metrics

    queues = parse_queues(args.queues)
    settings = get_settings()
    _check_storage(settings)
    setup_logging(
        settings.process.log_level, settings.process.log_format
    )  # RQ then logs through it too
    # Work horses write their metrics there, one after the other; this process serves them.
    prepare_multiprocess_dir(children_in_turn=True)
    start_worker_metrics()
    return run_rq_worker(queues, name=args.name, burst=args.burst)


def _rq_cron(args: argparse.Namespace) -> int:
    """RQ's cron scheduler sending the periodic tick (schedules, housekeeping) every minute."""
    from app.bootstrap import build_worker
    from app.core.logging import setup_logging
    from app.workers.rq_cron import cron_scheduler

    settings = get_settings()
    setup_logging(settings.process.log_level, settings.process.log_format)
    container = build_worker(Backend.RQ, settings)
    try:
        cron_scheduler(container.rq_connection, settings.brokers).start()  # type: ignore[no-untyped-call]
    finally:
        container.close()
    return 0


def _healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 when ``url`` answers 200 (container healthchecks need no curl)."""
    import httpx

    url = args.url or f"http://127.0.0.1:{get_settings().process.port}/health/ready"
    try:
        status = httpx.get(url, timeout=args.timeout).status_code
    except httpx.HTTPError as exc:
        print(f"{url}: {type(exc).__name__}: {exc}")
        return 1
    print(f"{url}: HTTP {status}")
    return 0 if status == 200 else 1


def _api_key(args: argparse.Namespace) -> int:
    """``api-key create|list|revoke``: the new key is printed alone on the last line."""
    from app import bootstrap

    with bootstrap.api_key_repository(get_settings()) as repo:
        return _api_key_action(repo, args)


def _api_key_action(repo: ApiKeyRepository, args: argparse.Namespace) -> int:
    from app.domain.auth import Role
    from app.domain.errors import AppError
    from app.domain.jobs import utcnow
    from app.services.auth import create_api_key, revoke_api_key

    try:
        if args.action == "create":
            record, plain = create_api_key(
                repo, owner=args.owner, role=Role(args.role), now=utcnow()
            )
            print(f"created key {record.key_id} for {record.owner} ({record.role.value}):")
            print(plain)
        elif args.action == "list":
            print(f"{'KEY ID':<14}{'OWNER':<24}{'ROLE':<11}{'CREATED':<27}REVOKED")
            for key in repo.list_keys():
                revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"
                print(
                    f"{key.key_id:<14}{key.owner:<24}{key.role.value:<11}"
                    f"{key.created_at.isoformat(timespec='seconds'):<27}{revoked}"
                )
        else:
            revoked_key = revoke_api_key(repo, args.key_id, now=utcnow())
            print(f"revoked key {revoked_key.key_id} of {revoked_key.owner}")
    except AppError as exc:
        print(f"error: {exc.code}: {exc.message}")
        return 1
    return 0


def _config_docs(args: argparse.Namespace) -> int:
    from app.cli.config_docs import main as write_config_docs

    return write_config_docs(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manage.py", description="MonAssurance report jobs: operations CLI."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the API (uvicorn)")
    serve.add_argument("--host", help="default: HOST setting")
    serve.add_argument("--port", type=int, help="default: PORT setting")
    serve.add_argument(
        "--workers", type=int, help="uvicorn worker processes (default: API_WORKERS, 1)"
    )
    serve.add_argument("--grace", type=int, default=30, help="graceful shutdown seconds")
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations (alembic upgrade head)")
    migrate.add_argument(
        "--create-bucket",
        action="store_true",
        help="with STORAGE_BACKEND=s3, also create S3_BUCKET if it is missing (first start)",
    )
    migrate.set_defaults(func=_migrate)

    from app.cli.celery_manager import add_worker_arguments

    worker = sub.add_parser("celery-worker", help="run a Celery worker: celery-worker QUEUE N")
    add_worker_arguments(worker)
    worker.set_defaults(func=_celery)
    sub.add_parser("celery-beat", help="run the Celery Beat scheduler").set_defaults(func=_celery)
    flower = sub.add_parser("celery-flower", help="run Flower: celery-flower [PORT]")
    flower.add_argument("port", nargs="?", type=int, default=5555, help="default: 5555")
    flower.set_defaults(func=_celery)
    status = sub.add_parser(
        "celery-status", help="Celery and RQ workers and queues; non-zero when none answers"
    )
    status.set_defaults(func=_celery)

    rq = sub.add_parser("rq-worker", help="run an RQ worker: rq-worker [QUEUES...] (default all)")
    rq.add_argument("queues", nargs="*", default=["all"], help="queue names, or all")
    rq.add_argument("--name", help="worker name (default: RQ's)")
    rq.add_argument("--burst", action="store_true", help="stop when the queues are empty")
    rq.set_defaults(func=_rq_worker)

    sub.add_parser(
        "rq-cron", help="run RQ's cron scheduler: the periodic tick every minute (RQ-era stack)"
    ).set_defaults(func=_rq_cron)

    keys = sub.add_parser("api-key", help="manage API keys: create, list, revoke")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="new key; printed once, on the last line")
    create.add_argument("--owner", required=True, help="who the key's jobs belong to")
    create.add_argument("--role", choices=["submitter", "operator"], default="submitter")
    actions.add_parser("list", help="every key: id, owner, role, created, revoked")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    keys.set_defaults(func=_api_key)

    check = sub.add_parser("healthcheck", help="exit 0 when a URL answers 200 (default: ready)")
    check.add_argument("--url", help="default: http://127.0.0.1:PORT/health/ready")
    check.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    check.set_defaults(func=_healthcheck)

    from app.cli.config_docs import add_arguments as add_config_docs_arguments

    docs = sub.add_parser("config-docs", help="write docs/configuration.md from the settings")
    add_config_docs_arguments(docs)
    docs.set_defaults(func=_config_docs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if extra and args.command not in ("celery-worker", "celery-beat", "celery-flower"):
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    from app.domain.errors import AppError

    try:
        code: int = args.func(args)
    except AppError as exc:  # a refusal the person at the terminal can act on
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        return 2
    return code
