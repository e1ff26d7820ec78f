"""``manage.py``: serve the API, apply migrations, run workers."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from app.core.config import get_settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
        log_config=None,
        timeout_graceful_shutdown=args.grace,
    )
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from app.db.schema import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    print("database schema at head")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="manage.py", description="MonAssurance report jobs: operations CLI."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the API (uvicorn)")
    serve.add_argument("--host", help="default: HOST setting")
    serve.add_argument("--port", type=int, help="default: PORT setting")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--grace", type=int, default=30, help="graceful shutdown seconds")
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations (alembic upgrade head)")
    migrate.set_defaults(func=_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
