"""tests/outcomes.py in real pytest runs: under CI a missing component fails the tests that need it instead
of skipping them, platform skips stay skips, and scripts/test's total adds up the runs' results.

Every run here is a pytest subprocess; none brings up, tears down or locks the real test bed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.outcomes import CI_NOTE, total

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTBED_TEST = "tests/test_testbed.py::test_ssh_into_each_host_as_root"

# A module of every outcome, run outside the repository (only the outcomes plugin loaded, with -p).
SAMPLE = textwrap.dedent(
    """
    import pytest

    from tests.outcomes import skip_missing


    def test_passes():
        pass


    def test_fails():
        assert 1 == 2


    def test_platform_skip():
        pytest.skip("no such platform feature here")


    def test_missing_widget():
        skip_missing("widget", "no widget on this machine")


    @pytest.mark.docker
    def test_docker_kind_with_a_plain_skip():
        pytest.skip("plain reason")


    @pytest.fixture
    def broken():
        raise RuntimeError("setup breaks")


    def test_setup_error(broken):
        pass


    @pytest.fixture
    def mosquitto():
        skip_missing("mosquitto", "none here")


    def test_kind_from_the_fixture(mosquitto):
        pass


    @pytest.mark.xfail(strict=True, reason="known: the widget is slow")
    def test_known_failure():
        assert 1 == 2


    @pytest.mark.xfail(strict=True, reason="known but fixed")
    def test_known_failure_now_fixed():
        pass
    """
)
SAMPLE_INI = "[pytest]\nmarkers =\n    testbed: t\n    docker: d\n    mqtt: m\n"


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS", "MLPACKER_TESTBED_DIR")}
    env.update(overrides)
    return env


def run_pytest(
    args: list[str], results: Path, env: dict[str, str], cwd: Path = REPO_ROOT
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--results-json", str(results), *args]
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert results.exists(), done.stdout[-4000:] + done.stderr[-2000:]
    return done, json.loads(results.read_text())


def broken_testbed_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The test bed made to fail cheaply: none of its tools on PATH (it fails before its lock), and a state
    dir of its own in case it got further."""
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir(exist_ok=True)
    return clean_env(PATH=str(empty_bin), MLPACKER_TESTBED_DIR=str(tmp_path / "testbed-state"), **overrides)


def test_ci_fails_a_test_bed_test_whose_test_bed_cannot_come_up(tmp_path: Path) -> None:
    env = broken_testbed_env(tmp_path, CI="true")
    done, results = run_pytest([TESTBED_TEST], tmp_path / "ci.json", env)
    out = done.stdout
    assert done.returncode == 1, out
    assert "missing component test bed: test bed unavailable: " in out, out
    assert CI_NOTE in out and "test kinds: testbed" in out, out
    assert "1 error" in out.splitlines()[-1] and "skipped" not in out.splitlines()[-1], out
    assert (results["passed"], results["failed"], results["skips"]) == (0, 1, [])
    assert results["failures"] == [TESTBED_TEST]
    assert not (tmp_path / "testbed-state").exists(), "the fixture got as far as the test bed's lock"


def test_without_ci_the_same_test_skips_and_says_why(tmp_path: Path) -> None:
    done, results = run_pytest([TESTBED_TEST], tmp_path / "dev.json", broken_testbed_env(tmp_path))
    assert done.returncode == 0, done.stdout
    assert (results["passed"], results["failed"]) == (0, 0)
    [skip] = results["skips"]
    assert skip["nodeid"] == TESTBED_TEST and skip["kinds"] == ["testbed"]
    assert skip["reason"].startswith("missing component test bed: test bed unavailable: ")
    # the total of this run alone: nothing ran, so it fails; under CI the skipped testbed test fails it too
    lines, status = total([tmp_path / "dev.json"], ci=True)
    assert status == 1 and lines[-1] == "total: 0 passed, 0 failed, 1 skipped"
    assert f"error: CI is set and a test of kind testbed was skipped: {TESTBED_TEST}" in lines
    assert "error: no test ran" in lines


@pytest.fixture()
def sample(tmp_path: Path) -> Path:
    folder = tmp_path / "sample"
    folder.mkdir()
    (folder / "pytest.ini").write_text(SAMPLE_INI)
    (folder / "test_sample.py").write_text(SAMPLE)
    return folder


def run_sample(sample: Path, results: Path, *args: str, **env: str) -> dict[str, Any]:
    _, data = run_pytest(
        ["-p", "tests.outcomes", *args], results, clean_env(PYTHONPATH=str(REPO_ROOT), **env), cwd=sample
    )
    return data


def test_ci_fails_only_missing_components_and_kinds_and_the_total_adds_both_processes(
    sample: Path, tmp_path: Path
) -> None:
    dev = run_sample(sample, tmp_path / "dev.json")
    assert (dev["passed"], dev["failed"], len(dev["skips"])) == (1, 3, 4)
    # A strict xfail is listed with its reason, neither a pass nor a skip; one that passes fails the run.
    assert dev["xfails"] == [
        {"nodeid": "test_sample.py::test_known_failure", "reason": "known: the widget is slow"}
    ]
    assert {s["nodeid"].split("::")[1]: (s["kinds"], s["reason"]) for s in dev["skips"]} == {
        "test_platform_skip": ([], "no such platform feature here"),
        "test_missing_widget": ([], "missing component widget: no widget on this machine"),
        "test_docker_kind_with_a_plain_skip": (["docker"], "plain reason"),
        "test_kind_from_the_fixture": (["mqtt"], "missing component mosquitto: none here"),
    }
    assert sorted(dev["failures"]) == [
        "test_sample.py::test_fails",
        "test_sample.py::test_known_failure_now_fixed",
        "test_sample.py::test_setup_error",
    ]

    ci = run_sample(sample, tmp_path / "ci.json", CI="true")
    assert (ci["passed"], ci["failed"]) == (1, 6)
    assert [s["nodeid"] for s in ci["skips"]] == ["test_sample.py::test_platform_skip"]

    # what scripts/test runs after its two processes, on their files
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.outcomes",
            "total",
            str(tmp_path / "ci.json"),
            str(tmp_path / "dev.json"),
        ],
        cwd=REPO_ROOT,
        env=clean_env(CI="true"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 1
    assert lines[-1] == "total: 2 passed, 9 failed, 5 skipped"
    assert "expected failure: test_sample.py::test_known_failure: known: the widget is slow" in lines
    assert "skipped: test_sample.py::test_platform_skip: no such platform feature here" in lines
    assert (
        "skipped: test_sample.py::test_kind_from_the_fixture [mqtt]: missing component mosquitto: none here"
        in (lines)
    )
    assert "failed: test_sample.py::test_setup_error" in lines


def test_the_total_passes_a_clean_run_with_platform_skips_and_fails_when_none_ran_or_a_run_died(
    sample: Path, tmp_path: Path
) -> None:
    clean = tmp_path / "clean.json"
    run_sample(sample, clean, "-k", "passes or platform", CI="true")
    assert total([clean], ci=True) == (
        [
            "skipped: test_sample.py::test_platform_skip: no such platform feature here",
            "total: 1 passed, 0 failed, 1 skipped",
        ],
        0,
    )
    # the markers a fixture gives are there before -m selects (scripts/test splits its processes by marker)
    selected = run_sample(sample, tmp_path / "mqtt.json", "-m", "mqtt")
    assert [s["nodeid"] for s in selected["skips"]] == ["test_sample.py::test_kind_from_the_fixture"]
    assert selected["passed"] + selected["failed"] == 0

    nothing = tmp_path / "nothing.json"
    run_sample(sample, nothing, "-k", "no_such_test")
    assert json.loads(nothing.read_text())["exitstatus"] == 5
    lines, status = total([clean, nothing], ci=False)
    assert status == 0 and lines[-1] == "total: 1 passed, 0 failed, 1 skipped"
    lines, status = total([nothing], ci=False)
    assert status == 1 and lines[-2:] == ["error: no test ran", "total: 0 passed, 0 failed, 0 skipped"]
    lines, status = total([clean, tmp_path / "never-written.json"], ci=False)
    assert status == 1 and lines[-1] == "total: 1 passed, 1 failed, 1 skipped"
    assert lines[-2].startswith(f"error: no result in {tmp_path / 'never-written.json'}")
