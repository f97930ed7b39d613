"""Outlier ejection of next-hop replicas (mlpacker_runtime/outliers.py), with a hand-driven clock and probes.

The same policy against real services (a replica stopped with SIGSTOP) is in test_rest_gunicorn.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mlpacker_runtime.config import DEFAULTS, ConfigError, build_config
from mlpacker_runtime.outliers import EjectionPolicy, Outliers
from runtime_helpers import IrisModels, base_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    count: int = 2, ready: dict[int, bool] | None = None, policy: EjectionPolicy | None = None
) -> tuple[Outliers, Clock, list[tuple[int, bool]], list[int]]:
    clock = Clock()
    changes: list[tuple[int, bool]] = []
    probed: list[int] = []
    answers = ready if ready is not None else {}

    def probe(index: int) -> bool:
        probed.append(index)
        return answers.get(index, True)

    def now(run: Callable[[], None]) -> None:
        run()  # the probe's thread, run at once

    outliers = Outliers(
        count,
        policy or EjectionPolicy(consecutive_failures=3, base_s=5, max_s=60),
        probe,
        changed=lambda index, ejected: changes.append((index, ejected)),
        clock=clock,
        start_probe=now,
    )
    return outliers, clock, changes, probed


def test_round_robin_while_every_replica_answers() -> None:
    outliers, _, changes, probed = make(3)
    assert [outliers.order(start) for start in range(3)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    outliers.failed(1)
    outliers.failed(1)
    outliers.succeeded(1)  # failures must be in a row
    outliers.failed(1)
    outliers.failed(1)
    assert outliers.order(0) == [0, 1, 2] and changes == [] and probed == []


def test_a_replica_failing_in_a_row_is_ejected_probed_when_due_and_put_back() -> None:
    outliers, clock, changes, probed = make(ready={1: True})
    for _ in range(3):
        outliers.failed(1)
    assert outliers.ejected(1) and changes == [(1, True)]
    assert outliers.order(1) == [0] and probed == []
    clock.now += 4.9
    assert outliers.order(0) == [0] and probed == []
    clock.now += 0.1  # base_s is up: probed, answered, back in the rotation
    assert outliers.order(1) == [0]  # this request is not spent on it: the probe runs beside it
    assert probed == [1] and not outliers.ejected(1) and changes == [(1, True), (1, False)]
    assert outliers.order(1) == [1, 0]


def test_each_ejection_in_a_row_lasts_twice_as_long_up_to_max_s() -> None:
    outliers, clock, changes, probed = make(ready={1: False})
    for _ in range(3):
        outliers.failed(1)
    lengths = []
    for _ in range(6):
        started = clock.now
        while True:  # a request per second until the probe is due (and fails: ejected again)
            clock.now += 1
            before = len(probed)
            outliers.order(0)
            if len(probed) > before:
                break
        lengths.append(clock.now - started)
    assert lengths == [5, 10, 20, 40, 60, 60]
    assert changes == [(1, True)] * 7 and outliers.ejected(1)


def test_healthy_for_max_s_the_next_ejection_is_a_first_one_again() -> None:
    outliers, clock, _, _ = make(ready={1: True})
    for _ in range(3):
        outliers.failed(1)
    clock.now += 5
    outliers.order(0)  # probed: back
    for _ in range(3):
        outliers.failed(1)
    clock.now += 9.9
    assert outliers.ejected(1) and outliers.order(0) == [0]  # ejected for 10 s: the second in a row
    clock.now += 0.1
    outliers.order(0)
    assert not outliers.ejected(1)
    clock.now += 60
    outliers.succeeded(1)  # healthy for max_s
    for _ in range(3):
        outliers.failed(1)
    clock.now += 5
    outliers.order(0)
    assert not outliers.ejected(1)  # 5 s again


def test_with_every_replica_ejected_the_one_back_first_still_gets_requests() -> None:
    outliers, clock, changes, _ = make(ready={0: False, 1: False})
    for index in (0, 1):
        for _ in range(3):
            outliers.failed(index)
        clock.now += 1
    assert outliers.order(0) == [0] and outliers.order(1) == [0]
    outliers.succeeded(0)  # it answered after all: back
    assert not outliers.ejected(0) and changes[-1] == (0, False)
    assert outliers.order(1) == [0]


def test_zero_consecutive_failures_never_ejects() -> None:
    outliers, _, changes, _ = make(policy=EjectionPolicy(consecutive_failures=0))
    for _ in range(100):
        outliers.failed(0)
    assert outliers.order(0) == [0, 1] and changes == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"consecutive_failures": 3, "base_s": 5, "max_s": 300}, None),
        ({"consecutive_failures": 0, "base_s": 0.5, "max_s": 0.5}, None),
        ({"base_s": 1}, None),  # the other fields keep their defaults
        ({"consecutive_failures": -1}, "consecutive_failures: must be >= 0 (0: never eject), got -1"),
        ({"consecutive_failures": True}, "consecutive_failures: expected a int, got True"),
        ({"base_s": 0}, "base_s: must be > 0, got 0"),
        ({"max_s": "1m"}, "max_s: expected a number, got '1m'"),
        ({"base_s": 10, "max_s": 5}, "max_s: 5 is shorter than base_s (10)"),
        ({"jitter": 1}, "jitter: unknown field (known: base_s, consecutive_failures, max_s)"),
        ([3, 5, 300], "expected a dict, got [3, 5, 300]"),
    ],
)
def test_validation_names_the_field(value: object, problem: str | None, iris_models: IrisModels) -> None:
    raw = base_config(iris_models.three_stages(), rest={"hop_ejection": value})
    if problem is None:
        config = build_config(raw, environ={})
        assert EjectionPolicy.from_config(config["rest"]["hop_ejection"]).base_s > 0
        return
    with pytest.raises(ConfigError) as caught:
        build_config(raw, environ={})
    assert any(text.startswith("rest.hop_ejection") and problem in text for text in caught.value.problems), (
        caught.value.problems
    )


def test_the_policys_defaults_are_the_runtimes() -> None:
    assert EjectionPolicy() == EjectionPolicy(consecutive_failures=3, base_s=5.0, max_s=300.0)
    assert DEFAULTS["rest"]["hop_ejection"] == {"consecutive_failures": 3, "base_s": 5.0, "max_s": 300.0}
