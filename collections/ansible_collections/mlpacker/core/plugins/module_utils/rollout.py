# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""How a deploy rolls out over its hosts (``mlpacker_rollout``), and which hosts a phase of it left behind.

A rollout stages the new release on every host, then switches hosts in batches (all at once by default). A
batch is all or nothing: when one of its hosts fails to switch, every host of the batch goes back to its
previous release. ``max_fail_percentage`` says how many hosts may end rolled back before the rollout stops;
``unstaged_hosts`` what a host that could not stage (unreachable, a failed check, a full disk) does to the
others: ``fail`` (nothing is switched anywhere) or ``leave`` (the others switch, it keeps its release).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULTS: dict[str, Any] = {"batch_size": 0, "max_fail_percentage": 0, "unstaged_hosts": "fail"}
UNSTAGED_CHOICES = ("fail", "leave")
# Why a host has no mark of a finished phase: Ansible dropped it from the play before (its error is printed).
DROPPED = "unreachable, or failed before this step (its error is above)"


class RolloutError(ValueError):
    """The rollout setting is unusable; the message names ``mlpacker_rollout.<key>`` and the value."""


def _whole(key: str, value: Any, low: int, high: int | None) -> int:
    field = f"mlpacker_rollout.{key}"
    bounds = f">= {low}" if high is None else f"from {low} to {high}"
    if (
        isinstance(value, str) and value.strip().lstrip("-").isdigit()
    ):  # extra vars (-e key=value) arrive as text
        value = int(value.strip())
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        raise RolloutError(f"{field}: expected a whole number {bounds}, got {value!r}")
    return value


def normalise_rollout(setting: Mapping[str, Any] | None) -> dict[str, Any]:
    """The setting laid over the defaults, every value checked."""
    if setting is None:
        setting = {}
    if not isinstance(setting, Mapping):
        raise RolloutError(f"mlpacker_rollout: expected a dictionary, got {setting!r}")
    unknown = sorted(set(setting) - set(DEFAULTS))
    if unknown:
        raise RolloutError(
            f"mlpacker_rollout: unknown key(s) {', '.join(map(str, unknown))} (known: {', '.join(DEFAULTS)})"
        )
    merged = dict(DEFAULTS, **setting)
    unstaged = merged["unstaged_hosts"]
    if unstaged not in UNSTAGED_CHOICES:
        raise RolloutError(
            f"mlpacker_rollout.unstaged_hosts: expected one of {', '.join(UNSTAGED_CHOICES)},"
            f" got {unstaged!r}"
        )
    return {
        "batch_size": _whole("batch_size", merged["batch_size"], 0, None),
        "max_fail_percentage": _whole("max_fail_percentage", merged["max_fail_percentage"], 0, 100),
        "unstaged_hosts": unstaged,
    }


def rollout_batches(hosts: list[str], batch_size: int) -> list[list[str]]:
    """The hosts in switch order, ``batch_size`` at a time (0: every host in one batch)."""
    if not hosts:
        return []
    size = batch_size or len(hosts)
    return [hosts[start : start + size] for start in range(0, len(hosts), size)]


def failure_text(failure: Any, limit: int = 2000) -> str:
    """A kept failure ({task, msg, output, items}, or text) as one line: the task, its message (and the first
    failed loop item's), its output's end."""
    if not isinstance(failure, Mapping):
        return str(failure)[:limit]
    text = f'task "{failure.get("task", "?")}" failed: {failure.get("msg") or "failed"}'
    item_messages = [str(message) for message in failure.get("items") or [] if message]
    if item_messages:
        text += f" ({item_messages[0]})"
    output = " ".join(str(failure.get("output") or "").split())
    if output:
        text += f": {output[-limit // 2 :]}"
    return text[:limit]


def hosts_left_behind(
    hosts: list[str], facts: Mapping[str, Mapping[str, Any]], done: str, failure: str = ""
) -> dict[str, str]:
    """Each host of ``hosts`` that did not finish a phase, with why: the failure it kept in the fact named
    ``failure`` (failure_text), or DROPPED when it has no ``done`` mark (Ansible took it out of the play)."""
    left: dict[str, str] = {}
    for host in hosts:
        host_facts = facts[host] if host in facts else {}
        reason = host_facts.get(failure) if failure else None
        if reason:
            left[host] = failure_text(reason)
        elif not host_facts.get(done):
            left[host] = DROPPED
    return left


def rollout_plan(setting: Mapping[str, Any] | None, hosts: list[str]) -> dict[str, Any]:
    """The checked setting, with the batches of ``hosts`` and how many of them may end rolled back
    (``max_failed_hosts``, rounded down) before the rollout stops."""
    plan = normalise_rollout(setting)
    plan["batches"] = rollout_batches(hosts, plan["batch_size"])
    plan["max_failed_hosts"] = plan["max_fail_percentage"] * len(hosts) // 100
    return plan
