"""Run schemathesis against a service's /openapi.json and return what it found (tests/deploy, tests/runtime).

schemathesis runs as its command line (its own process, as a user would run it) with every check it has;
positive_data_acceptance and negative_data_rejection are replaced by the two variants of
tests/openapi_fuzz_hooks.py, each allowing one documented answer the schema cannot express. The JSON
report gives the number of requests and the failures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
REPLACED_CHECKS = "positive_data_acceptance,negative_data_rejection"


@dataclass
class FuzzResult:
    requests: int
    failures: list[dict[str, Any]]
    errors: list[Any]
    exit_code: int
    output: str
    report: dict[str, Any]

    def describe(self) -> str:
        return (
            f"schemathesis: {self.requests} requests, {len(self.failures)} kinds of failure, "
            f"{len(self.errors)} errors, exit code {self.exit_code}\n"
            f"failures: {json.dumps(self.failures, indent=1)}\nerrors: {self.errors}\n{self.output[-6000:]}"
        )


def run_schemathesis(
    base_url: str,
    report_dir: Path,
    *,
    token: str | None = None,
    ca_file: str | None = None,
    max_examples: int = 300,
    seed: int = 13,
    timeout: float = 1200,
) -> FuzzResult:
    """Fuzz ``base_url`` (scheme, host and port) from its /openapi.json; every check, failures kept going."""
    report_dir.mkdir(parents=True, exist_ok=True)
    report = report_dir / "schemathesis.json"
    command = [
        str(SCHEMATHESIS), "run", f"{base_url}/openapi.json",
        "--checks", "all", "--exclude-checks", REPLACED_CHECKS,
        "--max-examples", str(max_examples), "--seed", str(seed), "--continue-on-failure",
        "--workers", "2", "--request-timeout", "30", "--no-color", "--output-truncate", "true",
        # A kept-alive connection left idle (while hypothesis builds a big body) may be closed by the server
        # (rest.body_read_timeout_s) just as the client reuses it: retried, as HTTP clients do.
        "--request-retries", "2",
        "--generation-database", "none",
        "--report", "json", "--report-json-path", str(report),
    ]  # fmt: skip
    if token:
        command += ["--header", f"Authorization: Bearer {token}"]
    if ca_file:
        command += ["--tls-verify", ca_file]
    env = dict(os.environ, SCHEMATHESIS_HOOKS="tests.openapi_fuzz_hooks")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        command, cwd=report_dir, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = done.stdout + done.stderr
    if not report.is_file():
        raise AssertionError(f"schemathesis wrote no report (exit code {done.returncode}):\n{output[-6000:]}")
    data = json.loads(report.read_text())
    return FuzzResult(
        requests=int(data["test_cases"]["generated"]),
        failures=list(data["failures"]),
        errors=list(data["errors"]),
        exit_code=done.returncode,
        output=output,
        report=data,
    )
