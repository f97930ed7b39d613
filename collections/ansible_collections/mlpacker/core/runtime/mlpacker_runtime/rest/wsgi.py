"""WSGI entry point for gunicorn workers: ``mlpacker_runtime.rest.wsgi:app``."""

from __future__ import annotations

import os

from mlpacker_runtime.config import load_config
from mlpacker_runtime.logs import setup_logging
from mlpacker_runtime.rest.app import create_app

setup_logging()
# Loaded after fork in each worker, in the background: /health/ready answers 503 until the stages are in.
app = create_app(
    load_config(os.environ["MLPACKER_RUNTIME_CONFIG"]), load_in_background=True, exit_on_load_failure=True
)
