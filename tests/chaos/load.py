"""A steady load on a deployed pipeline, counted: what was sent, answered, and the longest gap."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.deploy.helpers import request_options


@dataclass
class RestLoad:
    """POSTs one request after another, each to the first entry point that answers (as a client with a
    list of entry points, or a load balancer, does); counts requests no entry point answered."""

    urls: list[str]
    instances: list[list[float]]
    expected: list[Any]
    credentials: dict[str, Any] | None
    sent: int = 0
    answered: int = 0
    wrong: int = 0
    unanswered_times: list[float] = field(default_factory=list)
    longest_gap_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RestLoad:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> RestLoad:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self

    def _run(self) -> None:
        options = request_options(self.credentials)
        session = requests.Session()
        last_answer = time.monotonic()
        while not self._stop.is_set():
            self.sent += 1
            answer = None
            for url in self.urls:
                try:
                    response = session.post(url, json={"instances": self.instances}, timeout=5, **options)
                except requests.RequestException:
                    continue
                if response.status_code == 200:
                    answer = response.json()["predictions"]
                    break
            now = time.monotonic()
            if answer is None:
                self.unanswered_times.append(now)
            else:
                self.answered += 1
                self.wrong += answer != self.expected
                self.longest_gap_s = max(self.longest_gap_s, now - last_answer)
                last_answer = now
            time.sleep(0.05)

    def counts(self) -> dict[str, Any]:
        """record_case's counts: a request no entry point answered is lost; recovery is the span of those."""
        unanswered = self.unanswered_times
        return {
            "sent": self.sent,
            "delivered": self.answered,
            "lost": len(unanswered),
            "duplicates": 0,
            "longest_gap_s": self.longest_gap_s,
            "recovery_s": (unanswered[-1] - unanswered[0]) if unanswered else 0.0,
        }

    def summary(self) -> str:
        return (
            f"sent {self.sent}, answered {self.answered}, unanswered {len(self.unanswered_times)}, "
            f"wrong {self.wrong}, longest gap {self.longest_gap_s:.2f} s"
        )


RESULTS = Path(__file__).resolve().parents[2] / ".test-logs" / "chaos-results.jsonl"


def record_case(
    case: str,
    *,
    sent: int,
    delivered: int,
    lost: int,
    duplicates: int,
    longest_gap_s: float,
    recovery_s: float | None,
) -> None:
    """Append one case's counts to .test-logs/chaos-results.jsonl (the table of the chaos suite), and print
    them (seen with -s)."""
    row = {
        "case": case,
        "sent": sent,
        "delivered": delivered,
        "lost": lost,
        "duplicates": duplicates,
        "longest_gap_s": round(longest_gap_s, 2),
        "recovery_s": None if recovery_s is None else round(recovery_s, 2),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as results:
        results.write(json.dumps(row) + "\n")
    print("chaos:", json.dumps(row))
