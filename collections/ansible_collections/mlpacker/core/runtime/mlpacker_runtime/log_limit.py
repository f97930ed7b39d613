"""Log a recurring failure's traceback once, then a counted one-line summary at most every ``interval_s``.

A client that makes a stage fail on every request must not be able to fill the log with tracebacks: per
key (the stage and the exception's type, say) the first failure is logged with its traceback, later ones are
counted and summed up in one line when the interval has passed since the last line (at the next failure:
no timer thread). Each worker process keeps its own counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

DEFAULT_INTERVAL_S = 60.0
# Keys are few in practice (stages x exception types); past this many, new keys get one line each.
MAX_KEYS = 1024


class ThrottledLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: dict[Hashable, list[float]] = {}  # key -> [time of the last line, failures since]

    def exception(self, key: Hashable, message: str, exc: BaseException) -> None:
        """Log ``message`` for ``exc``: with its traceback the first time ``key`` fails, else throttled."""
        now = self.clock()
        with self._lock:
            state = self._keys.get(key)
            if state is None:
                if len(self._keys) < MAX_KEYS:
                    self._keys[key] = [now, 0]
                    first = True
                else:
                    first = False
            else:
                first = False
                state[1] += 1
                if now - state[0] < self.interval_s:
                    return
                summary = int(state[1])
                elapsed = now - state[0]
                state[0], state[1] = now, 0
        if first:
            self.logger.error(
                "%s (traceback shown once; repeats are counted, one line per %.0f s)",
                message,
                self.interval_s,
                exc_info=exc,
            )
        elif state is None:
            self.logger.error("%s: %s: %s", message, type(exc).__name__, exc)
        else:
            self.logger.error(
                "%s: %d times in the last %.0f s (last: %s: %s; traceback logged at the first)",
                message,
                summary,
                elapsed,
                type(exc).__name__,
                str(exc)[:200],
            )
