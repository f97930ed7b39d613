"""Turn ansible-runner events into progress updates and run results.

ansible-runner hands every Ansible callback over as a dict (``event``, ``event_data`` ...).
Two consumers read them:

* :func:`progress_from_event` makes a :class:`ProgressEvent` for the progress callback (task started,
  host ok / changed / failed / unreachable / skipped), with a human label for the step;
* :func:`result_from_events` folds a finished run's events into a :class:`mlpacker.results.RunResult`:
  per-host stats and ``set_stats`` data from the final ``playbook_on_stats`` event, failures from the
  ``runner_on_failed`` / ``runner_on_unreachable`` events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mlpacker.results import Failure, HostStats, RunResult, RunStatus

ProgressKind = Literal["play", "task", "ok", "changed", "failed", "unreachable", "skipped"]

# The pipeline role's spec validation task (contract with the collection): its failure means "bad spec".
# "validat" matches "Validate the ..." and the role argument spec check "Validating arguments against ...".
VALIDATION_TASK_MARKER = "validat"
VALIDATION_ACTIONS = frozenset(
    {
        "mlpacker.core.pipeline_plan",
        "pipeline_plan",
        "ansible.builtin.validate_argument_spec",
        "validate_argument_spec",
    }
)
# Messages of the roles' input checks start with the variable they reject.
SPEC_FIELD_PREFIXES = ("mlpacker_pipeline", "mlpacker_broker")


@dataclass(frozen=True)
class ProgressEvent:
    """One progress update of a run.

    ``kind`` is ``play`` or ``task`` when a play/task starts (``host`` is None), else the outcome of the
    current task on ``host``. ``label`` is the step as a user should read it (role and task name);
    ``message`` holds the failure text for ``failed`` / ``unreachable``.
    """

    kind: ProgressKind
    label: str
    host: str | None = None
    task: str | None = None
    action: str | None = None
    message: str | None = None
    ignored: bool = False


def task_label(event_data: Mapping[str, Any]) -> str:
    """The step's label: ``role : task`` as Ansible prints it, without a duplicated role prefix."""
    task = str(event_data.get("task") or event_data.get("name") or "").strip()
    role = str(event_data.get("role") or "").strip()
    if role and not task.startswith(f"{role} :"):
        return f"{role} : {task}" if task else role
    return task or str(event_data.get("task_action") or "task")


def failure_message(res: Mapping[str, Any] | None) -> str:
    """The most useful one-paragraph message from a failed task's result."""
    if not res:
        return "task failed (no result)"
    parts: list[str] = []
    msg = res.get("msg")
    if msg:
        parts.append(str(msg).strip())
    # Loop results carry their failures per item.
    for item in res.get("results") or []:
        if isinstance(item, Mapping) and item.get("failed") and item.get("msg"):
            item_msg = str(item["msg"]).strip()
            if item_msg not in parts:
                parts.append(item_msg)
    if not parts or parts == ["non-zero return code"]:
        # A command's own output says why it failed: stderr, else the end of stdout.
        stderr = str(res.get("stderr") or "").strip()
        stdout_tail = "\n".join(str(res.get("stdout") or "").strip().splitlines()[-5:])
        if stderr or stdout_tail:
            parts.append(stderr or stdout_tail)
        if res.get("rc") is not None and parts and parts[0] == "non-zero return code":
            parts[0] = f"non-zero return code {res['rc']}"
    return "; ".join(parts) if parts else "task failed"


def progress_from_event(event: Mapping[str, Any]) -> ProgressEvent | None:
    """The progress update for one runner event, or None for events a progress display ignores."""
    name = event.get("event")
    data: Mapping[str, Any] = event.get("event_data") or {}
    host = data.get("host")
    task = data.get("task")
    action = data.get("task_action") or data.get("resolved_action")
    if name == "playbook_on_play_start":
        return ProgressEvent(kind="play", label=str(data.get("play") or data.get("name") or "play"))
    if name == "playbook_on_task_start":
        return ProgressEvent(kind="task", label=task_label(data), task=task, action=action)
    label = task_label(data)
    res = data.get("res") or {}
    if name == "runner_on_ok":
        kind: ProgressKind = "changed" if res.get("changed") else "ok"
        return ProgressEvent(kind=kind, label=label, host=host, task=task, action=action)
    if name == "runner_on_failed":
        return ProgressEvent(
            kind="failed",
            label=label,
            host=host,
            task=task,
            action=action,
            message=failure_message(res),
            ignored=bool(data.get("ignore_errors")),
        )
    if name == "runner_on_unreachable":
        return ProgressEvent(
            kind="unreachable", label=label, host=host, task=task, action=action, message=failure_message(res)
        )
    if name == "runner_on_skipped":
        return ProgressEvent(kind="skipped", label=label, host=host, task=task, action=action)
    return None


def is_validation_failure(failure: Failure) -> bool:
    """True when the run failed because the spec is wrong (not the fleet): the failed task is the spec
    validation (module ``mlpacker.core.pipeline_plan``, or a task whose name contains "Validate"), or a
    check whose message starts with the field it rejects (``mlpacker_pipeline...``, ``mlpacker_broker...``).
    """
    if failure.unreachable or failure.host is None:
        return False
    if failure.action in VALIDATION_ACTIONS:
        return True
    if VALIDATION_TASK_MARKER in (failure.task or "").lower():
        return True
    return failure.message.startswith(SPEC_FIELD_PREFIXES)


def result_from_events(
    operation: str,
    events: Iterable[Mapping[str, Any]],
    *,
    runner_status: str,
    rc: int | None,
    stdout_tail: str = "",
    artifact_dir: str | None = None,
) -> RunResult:
    """Fold a finished run's events into a :class:`RunResult`.

    ``runner_status`` is ansible-runner's own status (``successful``, ``failed``, ``timeout``, ``canceled``);
    ``stdout_tail`` explains runs that failed before any task (syntax error, missing playbook ...).
    """
    failures: list[Failure] = []
    stats_event: Mapping[str, Any] | None = None
    plan_data: dict[str, Any] | None = None
    for event in events:
        name = event.get("event")
        data: Mapping[str, Any] = event.get("event_data") or {}
        if name == "playbook_on_stats":
            stats_event = data
        elif name == "runner_on_ok" and _action(data) in VALIDATION_ACTIONS:
            # The planner's answer: services, hosts, ports and entry points as this run computed them.
            plan = (data.get("res") or {}).get("plan")
            if isinstance(plan, dict):
                plan_data = plan
        elif name in ("runner_on_failed", "runner_on_unreachable"):
            if data.get("ignore_errors"):
                continue
            failures.append(
                Failure(
                    host=data.get("host"),
                    task=data.get("task"),
                    action=_action(data),
                    message=failure_message(data.get("res")),
                    unreachable=name == "runner_on_unreachable",
                    role=data.get("role") or None,
                    play=data.get("play") or None,
                )
            )

    hosts = _host_stats(stats_event) if stats_event is not None else {}
    stats_data: dict[str, Any] = dict((stats_event or {}).get("artifact_data") or {})

    status: RunStatus
    if any(f.unreachable for f in failures) or any(h.unreachable for h in hosts.values()):
        status = "unreachable"
    elif runner_status == "successful" and not failures and not any(h.failed for h in hosts.values()):
        status = "successful"
    else:
        status = "failed"
    if status == "failed" and not failures:
        # Ansible stopped before running a task on a host (syntax error, bad inventory, timeout ...).
        reason = stdout_tail.strip() or f"ansible-runner status {runner_status}, rc {rc}"
        failures.append(Failure(host=None, task=None, action=None, message=reason))

    return RunResult(
        operation=operation,
        status=status,
        rc=rc,
        runner_status=runner_status,
        hosts=hosts,
        failures=failures,
        stats_data=stats_data,
        plan=plan_data,
        artifact_dir=artifact_dir,
    )


def _action(data: Mapping[str, Any]) -> str | None:
    return data.get("resolved_action") or data.get("task_action")


def _host_stats(data: Mapping[str, Any]) -> dict[str, HostStats]:
    def count(key: str, host: str) -> int:
        return int((data.get(key) or {}).get(host, 0))

    names: set[str] = set()
    for key in ("ok", "changed", "failures", "dark", "skipped", "processed", "rescued", "ignored"):
        names.update((data.get(key) or {}).keys())
    return {
        host: HostStats(
            host=host,
            ok=count("ok", host),
            changed=count("changed", host),
            failed=count("failures", host),
            unreachable=count("dark", host),
            skipped=count("skipped", host),
            rescued=count("rescued", host),
            ignored=count("ignored", host),
        )
        for host in sorted(names)
    }
