# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The rollout setting (defaults, errors naming the key), its batches, and the hosts a phase left behind."""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.rollout import (
    DEFAULTS,
    DROPPED,
    RolloutError,
    failure_text,
    hosts_left_behind,
    normalise_rollout,
    rollout_batches,
    rollout_plan,
)


@pytest.mark.parametrize(
    ("given", "changed"),
    [
        (None, {}),
        ({}, {}),
        ({"batch_size": 2}, {"batch_size": 2}),
        ({"batch_size": "3"}, {"batch_size": 3}),
        ({"max_fail_percentage": 100}, {"max_fail_percentage": 100}),
        ({"unstaged_hosts": "leave"}, {"unstaged_hosts": "leave"}),
    ],
)
def test_setting_over_the_defaults(given: Any, changed: dict[str, Any]) -> None:
    assert normalise_rollout(given) == dict(DEFAULTS, **changed)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([1], "mlpacker_rollout: expected a dictionary, got [1]"),
        ({"serial": 1}, "mlpacker_rollout: unknown key(s) serial (known: batch_size, max_fail_percentage"),
        ({"batch_size": -1}, "mlpacker_rollout.batch_size: expected a whole number >= 0, got -1"),
        ({"batch_size": 1.5}, "mlpacker_rollout.batch_size: expected a whole number >= 0, got 1.5"),
        ({"batch_size": True}, "mlpacker_rollout.batch_size: expected a whole number >= 0, got True"),
        (
            {"max_fail_percentage": 101},
            "mlpacker_rollout.max_fail_percentage: expected a whole number from 0 to 100",
        ),
        (
            {"max_fail_percentage": "ten"},
            "mlpacker_rollout.max_fail_percentage: expected a whole number from 0",
        ),
        (
            {"unstaged_hosts": "skip"},
            "mlpacker_rollout.unstaged_hosts: expected one of fail, leave, got 'skip'",
        ),
    ],
)
def test_a_bad_setting_is_named(given: Any, message: str) -> None:
    with pytest.raises(RolloutError) as error:
        normalise_rollout(given)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("hosts", "size", "batches"),
    [
        ([], 0, []),
        (["a", "b", "c"], 0, [["a", "b", "c"]]),
        (["a", "b", "c"], 1, [["a"], ["b"], ["c"]]),
        (["a", "b", "c"], 2, [["a", "b"], ["c"]]),
        (["a", "b", "c"], 5, [["a", "b", "c"]]),
    ],
)
def test_batches_keep_the_host_order(hosts: list[str], size: int, batches: list[list[str]]) -> None:
    assert rollout_batches(hosts, size) == batches


@pytest.mark.parametrize(
    ("percentage", "hosts", "allowed"),
    [(0, 4, 0), (25, 4, 1), (49, 4, 1), (50, 4, 2), (100, 3, 3), (10, 5, 0)],
)
def test_hosts_that_may_end_rolled_back_round_down(percentage: int, hosts: int, allowed: int) -> None:
    names = [f"h{number}" for number in range(hosts)]
    plan = rollout_plan({"max_fail_percentage": percentage, "batch_size": 2}, names)
    assert plan["max_failed_hosts"] == allowed
    assert plan["batches"] == rollout_batches(names, 2)


def test_hosts_left_behind_say_why() -> None:
    facts = {
        "staged": {"done": True},
        "failed": {"done": False, "why": "service 's' on failed is not ready"},
        "dropped": {},
    }
    left = hosts_left_behind(["staged", "failed", "dropped", "absent"], facts, "done", "why")
    assert left == {"failed": "service 's' on failed is not ready", "dropped": DROPPED, "absent": DROPPED}
    assert hosts_left_behind(["staged"], facts, "done") == {}


@pytest.mark.parametrize(
    ("failure", "text"),
    [
        ("plain words", "plain words"),
        (
            {"task": "Restart", "msg": "non-zero return code", "output": ""},
            'task "Restart" failed: non-zero return code',
        ),
        (
            {
                "task": "Restart",
                "msg": "non-zero return code",
                "output": "mlpacker-x: ERROR\n (spawn error)\n",
            },
            'task "Restart" failed: non-zero return code: mlpacker-x: ERROR (spawn error)',
        ),
        ({"task": "Gate", "msg": None, "output": None}, 'task "Gate" failed: failed'),
        (
            {
                "task": "Ship",
                "msg": "One or more items failed",
                "output": "",
                "items": ["", "[Errno 28] No space"],
            },
            'task "Ship" failed: One or more items failed ([Errno 28] No space)',
        ),
    ],
)
def test_a_kept_failure_reads_as_one_line(failure: Any, text: str) -> None:
    assert failure_text(failure) == text
    assert hosts_left_behind(["h"], {"h": {"why": failure}}, "done", "why") == {"h": text}


def test_a_long_output_keeps_its_end() -> None:
    text = failure_text({"task": "T", "msg": "m", "output": "x" * 5000 + " the end"}, limit=100)
    assert len(text) <= 100 and text.endswith("the end")
