"""Event parsing and result folding, on events recorded from real ansible-runner runs.

Each scenario runs ``tests/api/project/playbooks/record.yml`` through :func:`mlpacker.runner.run_playbook`
(real ansible-playbook, real SSH attempt for the unreachable host) with a kept private data dir; the tests
then re-read the job events ansible-runner stored there and feed them to the parsers.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from mlpacker.events import ProgressEvent, progress_from_event, result_from_events
from mlpacker.progress import ProgressDisplay
from mlpacker.results import EXIT_BAD_SPEC, EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, RunResult
from mlpacker.runner import run_playbook

PROJECT = Path(__file__).parent / "project"
PLAYBOOK = "playbooks/record.yml"


def _local_host() -> dict[str, Any]:
    return {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}


def _run(
    tmp: Path, *, mode: str = "rest", fail_stage: bool = False, down_host: bool = False
) -> dict[str, Any]:
    hosts: dict[str, Any] = {"good1": _local_host(), "good2": _local_host()}
    if down_host:
        # Nothing listens on port 1 of the loopback address: ssh is refused at once.
        hosts["down"] = {"ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_user": "root"}
    seen: list[ProgressEvent] = []
    result = run_playbook(
        "record",
        PLAYBOOK,
        inventory={"all": {"hosts": hosts}},
        extravars={
            "mlpacker_pipeline": {"name": "iris", "mode": mode},
            "record_dir": str(tmp),
            "fail_stage": fail_stage,
        },
        project_dir=PROJECT,
        progress=seen.append,
        private_data_dir=tmp / "pdd",
        envvars={"ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_TIMEOUT": "5"},
    )
    assert result.artifact_dir is not None
    events_dir = Path(result.artifact_dir) / "job_events"
    events = [json.loads(p.read_text()) for p in events_dir.glob("*.json")]
    events.sort(key=lambda e: e["counter"])
    return {"result": result, "events": events, "progress": seen}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every scenario, run once for the whole module (each run is a real ansible-playbook)."""
    scenarios = {
        "success": {},
        "bad_spec": {"mode": "batch"},
        "failed_stage": {"fail_stage": True},
        "unreachable": {"down_host": True},
    }
    return {name: _run(tmp_path_factory.mktemp(name), **options) for name, options in scenarios.items()}


def _refold(run: dict[str, Any]) -> RunResult:
    result: RunResult = run["result"]
    return result_from_events(
        result.operation, run["events"], runner_status=result.runner_status, rc=result.rc
    )


def test_success_stats_entry_points_and_progress(recorded: dict[str, dict[str, Any]]) -> None:
    run = recorded["success"]
    result = _refold(run)
    assert result.status == "successful" and result.exit_code == EXIT_OK
    assert result.failures == []
    assert set(result.hosts) == {"good1", "good2"}
    assert result.hosts["good1"].changed == 1  # the touched file
    assert result.hosts["good1"].skipped == 2  # "Skip on purpose" and the stage check
    assert result.hosts["good1"].ignored == 1
    assert result.entry_points == {"rest": ["http://127.0.0.1:9/predict"]}
    assert result.deployment == {"name": "iris"}
    # The live callback saw the same run: task starts and per-host outcomes.
    progress: list[ProgressEvent] = run["progress"]
    started = [p.label for p in progress if p.kind == "task"]
    assert "Validate the pipeline spec" in started and "Touch a file (changed)" in started
    changed_hosts = {p.host for p in progress if p.kind == "changed"}
    assert changed_hosts == {"good1", "good2"}
    ignored = [p for p in progress if p.kind == "failed"]
    assert ignored and all(p.ignored for p in ignored)
    # Parsing the recorded events gives the same updates as the live callback.
    replayed = [u for u in (progress_from_event(e) for e in run["events"]) if u is not None]
    assert replayed == progress


def test_bad_spec_is_the_validation_task(recorded: dict[str, dict[str, Any]]) -> None:
    result = _refold(recorded["bad_spec"])
    assert result.status == "failed"
    assert result.spec_error and result.exit_code == EXIT_BAD_SPEC
    assert result.failure is not None
    assert result.failure.task == "Validate the pipeline spec"
    assert "mlpacker_pipeline.mode" in result.failure.message and "batch" in result.failure.message


def test_failed_stage_names_host_task_and_message(recorded: dict[str, dict[str, Any]]) -> None:
    result = _refold(recorded["failed_stage"])
    assert result.status == "failed" and result.exit_code == EXIT_FAILED
    assert not result.spec_error
    assert {f.host for f in result.failures} == {"good1", "good2"}
    failure = result.failure
    assert failure is not None and failure.task == "Run a stage check"
    assert "artifact does not load" in failure.message
    assert result.hosts["good1"].failed == 1
    assert f"host {failure.host}, task 'Run a stage check'" in failure.describe()


def test_unreachable_host(recorded: dict[str, dict[str, Any]]) -> None:
    result = _refold(recorded["unreachable"])
    assert result.status == "unreachable" and result.exit_code == EXIT_UNREACHABLE
    assert result.hosts["down"].unreachable == 1
    assert result.hosts["good1"].unreachable == 0
    unreachable = [f for f in result.failures if f.unreachable]
    assert [f.host for f in unreachable] == ["down"]
    assert unreachable[0].message  # ssh's own reason, e.g. "Connection refused"
    updates = [progress_from_event(e) for e in recorded["unreachable"]["events"]]
    assert any(u is not None and u.kind == "unreachable" and u.host == "down" for u in updates)


def test_live_result_matches_refolded(recorded: dict[str, dict[str, Any]]) -> None:
    # run_playbook builds its result from the same events: both paths must agree.
    for run in recorded.values():
        live: RunResult = run["result"]
        again = _refold(run)
        assert (live.status, live.hosts, live.failures, live.stats_data) == (
            again.status,
            again.hosts,
            again.failures,
            again.stats_data,
        )


def test_failure_before_any_task_reports_ansible_output(tmp_path: Path) -> None:
    # An undefined variable in the play header stops ansible-playbook before any host runs a task.
    result = run_playbook(
        "record",
        PLAYBOOK,
        inventory={"all": {"hosts": {"good1": _local_host()}}},
        extravars={"mlpacker_pipeline": "not a mapping", "record_dir": str(tmp_path)},
        project_dir=PROJECT,
    )
    assert result.status == "failed"
    assert result.failure is not None and result.failure.message


def test_progress_display_plain_lines(recorded: dict[str, dict[str, Any]]) -> None:
    stream = io.StringIO()
    with ProgressDisplay(stream, tty=False) as display:
        for update in recorded["failed_stage"]["progress"]:
            display(update)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "PLAY Exercise every task outcome"
    assert "  - Validate the pipeline spec" in lines
    assert "    changed: good1" in lines
    assert "    FAILED on good1 (ignored): Fail but ignored: non-zero return code 1" in lines
    assert any(
        line.startswith("    FAILED on good2: Run a stage check:") and "artifact does not load" in line
        for line in lines
    )
    assert "\r" not in stream.getvalue()  # no terminal control codes on a pipe


def _wait_for(predicate: Any, deadline_s: float = 20.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_progress_display_long_step_heartbeat_on_a_pipe(recorded: dict[str, dict[str, Any]]) -> None:
    stream = io.StringIO()
    task = next(p for p in recorded["success"]["progress"] if p.kind == "task")
    with ProgressDisplay(stream, tty=False, heartbeat_s=0.0) as display:
        display(task)
        assert _wait_for(lambda: "... still running: " in stream.getvalue())
    assert f"    ... still running: {task.label} (" in stream.getvalue()


def test_progress_display_spinner_on_a_terminal(recorded: dict[str, dict[str, Any]]) -> None:
    stream = io.StringIO()
    task = next(p for p in recorded["success"]["progress"] if p.kind == "task")
    with ProgressDisplay(stream, tty=True) as display:
        display(task)
        assert _wait_for(lambda: f" {task.label} (" in stream.getvalue())
    text = stream.getvalue()
    assert "\r\x1b[2K" in text  # the spinner line is redrawn in place
    assert text.endswith("\r\x1b[2K")  # and cleared at the end
