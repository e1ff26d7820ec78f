#!/usr/bin/env python3
"""Celery operations: worker QUEUE N | beat | flower [PORT] | status. ``--help`` for more."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "backend"))

from app.cli.celery_manager import main

if __name__ == "__main__":
    sys.exit(main())
