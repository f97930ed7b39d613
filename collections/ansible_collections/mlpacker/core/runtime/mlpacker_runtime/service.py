"""The state of one service, shared by the REST app and the stream consumer: stages, readiness, /info."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from mlpacker_runtime import __version__
from mlpacker_runtime.chain import Chain
from mlpacker_runtime.loading import installed_version, load_stages
from mlpacker_runtime.metrics import Metrics
from mlpacker_runtime.redaction import public_path

log = logging.getLogger("mlpacker_runtime.service")

# Libraries whose installed versions /info reports (recorded ones come from the stages' config).
REPORTED_LIBRARIES = (
    "numpy",
    "scikit-learn",
    "scipy",
    "joblib",
    "skops",
    "onnxruntime",
    "flask",
    "gunicorn",
    "paho-mqtt",
)


class Service:
    def __init__(self, config: dict[str, Any], metrics: Metrics | None = None):
        self.config = config
        self.metrics = metrics or Metrics()
        self.chain: Chain | None = None
        self.load_error: str | None = None
        self._loaded = threading.Event()

    @property
    def ready(self) -> bool:
        return self.chain is not None

    def load(self) -> None:
        """Load every stage; on failure keep the error for /health/ready and re-raise."""
        try:
            forwards = self.config["mode"] == "rest" and bool(self.config["rest"]["next_hops"])
            self.chain = Chain(load_stages(self.config), forwards=forwards)
        except Exception as exc:
            self.load_error = str(exc)
            raise
        finally:
            self._loaded.set()

    def load_in_background(self, exit_on_failure: bool) -> threading.Thread:
        """Load in a thread so /health/live answers (and /health/ready says 503) while big models load."""

        def run() -> None:
            try:
                self.load()
            except Exception:
                log.exception("service %s: loading stages failed", self.config["service"])
                if exit_on_failure:
                    # Exit code 3 is gunicorn's "worker failed to boot": the master stops instead of
                    # restarting the worker forever, so the supervisor sees the failure.
                    os._exit(3)

        thread = threading.Thread(target=run, name="mlpacker-load", daemon=True)
        thread.start()
        return thread

    def wait_loaded(self, timeout: float | None = None) -> bool:
        return self._loaded.wait(timeout)

    def readiness(self) -> tuple[int, dict[str, Any]]:
        if self.ready:
            return 200, {"status": "ready"}
        if self.load_error:
            return 503, {"status": "failed", "error": self.load_error}
        return 503, {"status": "loading", "error": "stages are still loading"}

    def info(self) -> dict[str, Any]:
        """What /info shows: no secret, no path of a secret file, artifacts by file name only."""
        config = self.config
        tls = config["security"]["tls"]
        stages = []
        for index, spec in enumerate(config["stages"]):
            entry = {
                "name": spec["name"],
                "format": spec["format"],
                "method": spec["method"],
                "artifact": public_path(spec["artifact"]),
                "function": spec["function"],
                "sha256": spec["sha256"],
                "versions": spec["versions"],
            }
            if self.chain is not None:
                entry["expected_features"] = self.chain.stages[index].expected_features
            stages.append(entry)
        return {
            "pipeline": config["pipeline"],
            "service": config["service"],
            "mode": config["mode"],
            "ready": self.ready,
            "stages": stages,
            "libraries": {name: installed_version(name) for name in ("python", *REPORTED_LIBRARIES)},
            "runtime_version": __version__,
            # Whether security is on, never where its files are.
            "security": {
                "tls": bool(tls["cert_file"]),
                "client_certificates": bool(tls["client_ca_file"]),
                "auth": bool(config["security"]["auth"]["token_file"]),
            },
        }
