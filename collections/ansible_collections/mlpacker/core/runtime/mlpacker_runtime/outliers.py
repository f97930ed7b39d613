"""Outlier ejection for a next hop's replicas (REST): which replicas a request may go to, in which order.

A replica that fails ``consecutive_failures`` requests in a row (no connection, a TLS failure, no answer
within ``rest.hop_timeout_s``, or 503: not ready) is taken out of the rotation for ``base_s`` seconds, twice
as long each time it is ejected again without having been healthy for ``max_s`` in between, at most
``max_s``. When its time is up it is probed (``GET /health/ready``, in a thread of its own: no client request
is spent on finding out) and put back when it answers 200, else ejected again for longer. While every
replica is ejected, requests still go to the one whose ejection ends first: a slow answer beats none.

So a replica that hangs (accepts connections, never answers) costs ``consecutive_failures`` timed-out
requests, then one probe per ejection, instead of every n-th request waiting the full timeout. As Envoy's
outlier detection and nginx's ``max_fails``/``fail_timeout``, per service process (each gunicorn worker keeps
its own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EjectionPolicy:
    """``rest.hop_ejection``; its defaults are the runtime's (config.DEFAULTS is made from them)."""

    consecutive_failures: int = 3  # 0: never eject
    base_s: float = 5.0
    max_s: float = 300.0

    @classmethod
    def from_config(cls, value: dict[str, Any]) -> EjectionPolicy:
        return cls(int(value["consecutive_failures"]), float(value["base_s"]), float(value["max_s"]))


@dataclass
class _Replica:
    failures: int = 0  # in a row
    ejections: int = 0  # in a row, without max_s of health in between
    ejected_until: float | None = None  # None: in the rotation
    probing: bool = False
    back_since: float = 0.0


class Outliers:
    """The replicas' state, shared by a service process's threads.

    ``probe(index)`` asks replica ``index`` whether it is ready (True/False; it must not raise) and runs in a
    thread of its own; ``changed(index, ejected)`` is told every ejection and every return (metrics, logs).
    """

    def __init__(
        self,
        count: int,
        policy: EjectionPolicy,
        probe: Callable[[int], bool],
        changed: Callable[[int, bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        start_probe: Callable[[Callable[[], None]], None] | None = None,
    ):
        self.policy = policy
        self._replicas = [_Replica() for index in range(count)]
        self._probe = probe
        self._changed = changed or (lambda index, ejected: None)
        self._clock = clock
        self._start_probe = start_probe or _in_a_thread
        self._lock = threading.Lock()

    def ejected(self, index: int) -> bool:
        return self._replicas[index].ejected_until is not None

    def order(self, start: int) -> list[int]:
        """The replicas to try for one request, round-robin from ``start``; probes the ones due."""
        count = len(self._replicas)
        now = self._clock()
        due: list[int] = []
        with self._lock:
            order = []
            for offset in range(count):
                index = (start + offset) % count
                replica = self._replicas[index]
                if replica.ejected_until is None:
                    order.append(index)
                elif now >= replica.ejected_until and not replica.probing:
                    replica.probing = True
                    due.append(index)
            if not order:
                # Every replica is out: the one back first (its probe may be under way) rather than no answer.
                order = [min(range(count), key=lambda i: self._replicas[i].ejected_until or 0.0)]
        for index in due:
            self._start_probe(lambda index=index: self._probed(index))
        return order

    def succeeded(self, index: int) -> None:
        replica = self._replicas[index]
        if replica.failures == 0 and replica.ejected_until is None and not replica.ejections:
            return  # the common case, without the lock
        with self._lock:
            replica.failures = 0
            if replica.ejected_until is not None:  # answered while every replica was out
                self._back(index, replica)
            elif replica.ejections and self._clock() - replica.back_since >= self.policy.max_s:
                replica.ejections = 0  # healthy long enough: the next ejection is a first one again

    def failed(self, index: int) -> None:
        if not self.policy.consecutive_failures:
            return
        with self._lock:
            replica = self._replicas[index]
            replica.failures += 1
            if replica.ejected_until is None and replica.failures >= self.policy.consecutive_failures:
                self._eject(index, replica)

    def _eject(self, index: int, replica: _Replica) -> None:
        replica.ejections += 1
        seconds = min(self.policy.base_s * 2 ** (replica.ejections - 1), self.policy.max_s)
        replica.ejected_until = self._clock() + seconds
        replica.failures = 0
        self._changed(index, True)

    def _back(self, index: int, replica: _Replica) -> None:
        replica.ejected_until = None
        replica.failures = 0
        replica.back_since = self._clock()
        self._changed(index, False)

    def _probed(self, index: int) -> None:
        ready = self._probe(index)
        with self._lock:
            replica = self._replicas[index]
            replica.probing = False
            if replica.ejected_until is None:
                return  # back meanwhile (it answered a request while every replica was out)
            if ready:
                self._back(index, replica)
            else:
                self._eject(index, replica)


def _in_a_thread(run: Callable[[], None]) -> None:
    threading.Thread(target=run, name="mlpacker-hop-probe", daemon=True).start()
