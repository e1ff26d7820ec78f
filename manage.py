#!/usr/bin/env python3
"""Operations CLI: serve, migrate, workers. ``python manage.py --help``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "backend"))

from app.cli.manage import main

if __name__ == "__main__":
    sys.exit(main())
