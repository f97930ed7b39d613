"""What a test run ends with: a missing component fails under CI, and one total over scripts/test's processes.

A pytest plugin (registered by the repository's root ``conftest.py``, so it covers ``tests/`` and the
collection's unit tests alike) and a small command line:

- **One shape for "a component is missing".** A test or fixture that cannot run because something it needs
  is absent (the test bed, a Docker engine, the mosquitto binary, a free port 1883, a Python package) skips
  with :func:`skip_missing` (or, in a ``skipif`` marker, ``reason=missing(...)``); the reason then starts
  with ``"missing component "``. The collection's unit tests stay importable on their own, so they write
  that same prefix literally. A skip about the platform (say no ``systemd-analyze`` on a machine without
  systemd) uses a plain ``pytest.skip`` and says why it is not a missing component.
- **Under CI** (``CI`` set to anything but ``""``/``0``/``false``/``no``; CI sets ``CI=true``) such a skip
  fails the test instead, with the reason, and so does any skip of a test of the kinds ``testbed``,
  ``docker`` and ``mqtt`` (the markers of tests that need the test bed, a Docker engine, the mosquitto
  binary; a test that uses the ``testbed``, ``testbed_docker``, ``docker_engine`` or ``mosquitto`` fixture
  gets its kind's marker here even when its module forgot it). On a developer's machine they stay skips.
- **``--results-json FILE``** writes what the run did: counts of passed, failed (setup/teardown errors and
  collection errors included) and skipped tests, and each skip with its reason and kinds.
- **``python -m tests.outcomes total FILE...``** adds those files up, lists every skip with its reason and
  prints ``total: N passed, N failed, N skipped`` as its last line. It exits 1 when a test failed, when
  no test ran, when a file is missing (its pytest process died: counted as one failure), and under CI
  when a test of kind ``testbed``, ``docker`` or ``mqtt`` was skipped; else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

MISSING_PREFIX = "missing component "
KINDS = ("testbed", "docker", "mqtt")
# Fixtures that bring up a component, and the kinds a test using them is of.
KIND_FIXTURES = {
    "testbed": ("testbed",),
    "testbed_docker": ("testbed", "docker"),
    "docker_engine": ("docker",),
    "mosquitto": ("mqtt",),
}
CI_NOTE = "CI is set: a missing component fails the test instead of skipping it"


def ci_mode(environ: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() not in ("", "0", "false", "no")


def missing(component: str, reason: str) -> str:
    """The skip reason of a test that cannot run because ``component`` is missing."""
    return f"{MISSING_PREFIX}{component}: {reason}"


def skip_missing(component: str, reason: str) -> NoReturn:
    """Skip (under CI: fail) the current test because ``component`` is missing, saying why."""
    pytest.skip(missing(component, reason))


def item_kinds(item: pytest.Item) -> list[str]:
    return [kind for kind in KINDS if item.get_closest_marker(kind) is not None]


# ---------------------------------------------------------------------------------------------------------
# the plugin


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--results-json",
        metavar="FILE",
        default=None,
        help="write the run's counts (passed, failed, skipped) and its skips to FILE (scripts/test adds up)",
    )


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("results_json")
    if path:
        config.pluginmanager.register(ResultsWriter(Path(path)), "mlpacker-results-json")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, kinds in KIND_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                for kind in kinds:
                    if item.get_closest_marker(kind) is None:
                        item.add_marker(kind)


def _fail_missing_under_ci(item: pytest.Item) -> Generator[None, Any, Any]:
    try:
        return (yield)
    except pytest.skip.Exception as skip:
        reason = str(skip.msg)
        if ci_mode() and (reason.startswith(MISSING_PREFIX) or item_kinds(item)):
            kinds = ", ".join(item_kinds(item)) or "none"
            raise pytest.fail.Exception(f"{reason} [{CI_NOTE}; test kinds: {kinds}]", pytrace=False) from None
        raise


# Skips are raised while setting a test up (skipif markers, fixtures) or while it runs (pytest.skip).
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _fail_missing_under_ci(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _fail_missing_under_ci(item))


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        return reason.removeprefix("Skipped: ")
    return str(report.longrepr)


class ResultsWriter:
    """Counts each test once (failed over skipped over passed, any phase) and writes them at the end."""

    RANK = {"passed": 0, "xfailed": 1, "skipped": 2, "failed": 3}

    def __init__(self, path: Path) -> None:
        self.path = path
        self.outcomes: dict[str, str] = {}
        self.skips: dict[str, dict[str, Any]] = {}
        self.xfails: dict[str, str] = {}
        self.collection_errors: list[str] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)  # no stale result can stand in for this run

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collection_errors.append(report.nodeid or "<collection>")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            outcome = "failed"
        elif report.skipped and hasattr(report, "wasxfail"):
            # A known, named failure (xfail strict: it fails the run the day it passes): listed, not a skip.
            outcome = "xfailed"
            self.xfails[report.nodeid] = str(report.wasxfail)
        elif report.skipped:
            outcome = "skipped"
            self.skips[report.nodeid] = {
                "nodeid": report.nodeid,
                "reason": _skip_reason(report),
                "kinds": [kind for kind in KINDS if kind in report.keywords],
            }
        elif report.when == "call":
            outcome = "passed"
        else:
            return
        previous = self.outcomes.get(report.nodeid)
        if previous is None or self.RANK[outcome] > self.RANK[previous]:
            self.outcomes[report.nodeid] = outcome

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        counts = {outcome: 0 for outcome in self.RANK}
        for outcome in self.outcomes.values():
            counts[outcome] += 1
        result = {
            **counts,
            "failed": counts["failed"] + len(self.collection_errors),
            "failures": sorted(n for n, o in self.outcomes.items() if o == "failed") + self.collection_errors,
            "skips": [self.skips[n] for n, o in self.outcomes.items() if o == "skipped"],
            "xfails": [
                {"nodeid": n, "reason": self.xfails[n]} for n, o in self.outcomes.items() if o == "xfailed"
            ],
            "exitstatus": int(exitstatus),
            "ci": ci_mode(),
        }
        partial = self.path.with_name(self.path.name + ".part")
        partial.write_text(json.dumps(result, indent=1) + "\n")
        partial.replace(self.path)


# ---------------------------------------------------------------------------------------------------------
# the total over several runs


def total(paths: Sequence[Path], ci: bool) -> tuple[list[str], int]:
    """The lines to print (the total last) and the exit status for the results files ``paths``."""
    passed = failed = skipped = 0
    lines: list[str] = []
    problems: list[str] = []
    for path in paths:
        try:
            result = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            failed += 1
            problems.append(
                f"no result in {path} ({error}): its pytest process ended early; counted as 1 failed"
            )
            continue
        passed += result["passed"]
        failed += result["failed"]
        skipped += len(result["skips"])
        for name in result["failures"]:
            lines.append(f"failed: {name}")
        for xfail in result.get("xfails", []):
            lines.append(f"expected failure: {xfail['nodeid']}: {xfail['reason']}")
        for skip in result["skips"]:
            kinds = f" [{', '.join(skip['kinds'])}]" if skip["kinds"] else ""
            lines.append(f"skipped: {skip['nodeid']}{kinds}: {skip['reason']}")
            if ci and skip["kinds"]:
                problems.append(
                    f"CI is set and a test of kind {', '.join(skip['kinds'])} was skipped: {skip['nodeid']}"
                )
        # 1: tests failed, 5: none collected (both counted already); 2 after collection errors (counted).
        if result["exitstatus"] not in (0, 1, 5) and not result["failed"]:
            failed += 1
            problems.append(f"{path}: pytest exit status {result['exitstatus']}; counted as 1 failed")
    if passed + failed == 0:
        problems.append("no test ran")
    lines += [f"error: {problem}" for problem in problems]
    lines.append(f"total: {passed} passed, {failed} failed, {skipped} skipped")
    return lines, 1 if failed or problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.outcomes", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    total_cmd = commands.add_parser("total", help="add up --results-json files; the total is the last line")
    total_cmd.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    lines, status = total(args.files, ci_mode())
    for line in lines:
        print(line)
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
