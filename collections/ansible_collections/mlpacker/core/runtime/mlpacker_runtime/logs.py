"""Logging setup shared by the CLI, gunicorn workers and the stream consumer (stderr, one line per record)."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str | None = None) -> None:
    level_name = (level or os.environ.get("MLPACKER_RUNTIME_LOG_LEVEL") or "INFO").upper()
    root = logging.getLogger()
    if any(getattr(handler, "_mlpacker", False) for handler in root.handlers):
        return
    handler = logging.StreamHandler()
    handler._mlpacker = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level_name)
