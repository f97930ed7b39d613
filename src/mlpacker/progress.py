"""Progress display for the CLI: plain lines on a pipe or log, a one-line spinner on a terminal.

Both show every task as it starts (its label is ``role : task``), every changed/failed/unreachable host, and
for a step that runs long (building a virtualenv, shipping wheels ...) how long it has been running:
a terminal sees the elapsed time on the spinner line, a log gets a "still running" line every
``heartbeat_s`` seconds. Everything goes to ``stream`` (stderr), so stdout stays for results.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import threading
import time
from typing import TextIO

from mlpacker.events import ProgressEvent

_SPINNER_FRAMES = "|/-\\"


class ProgressDisplay:
    """A progress callback (``display(event)``) that renders a run on ``stream``; use as a context manager."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        verbose: bool = False,
        heartbeat_s: float = 30.0,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.verbose = verbose
        self.heartbeat_s = heartbeat_s
        self._lock = threading.Lock()
        self._label: str | None = None
        self._started = 0.0
        self._last_heartbeat = 0.0
        self._hosts_done = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._spinner_visible = False

    # -- callback -------------------------------------------------------------------------------------
    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if event.kind == "play":
                self._line(f"PLAY {event.label}")
            elif event.kind == "task":
                self._label = event.label
                self._started = self._last_heartbeat = time.monotonic()
                self._hosts_done = 0
                if not self.tty:
                    self._line(f"  - {event.label}")
            else:
                self._hosts_done += 1
                self._host_outcome(event)

    def _host_outcome(self, event: ProgressEvent) -> None:
        host = event.host or "?"
        if event.kind == "failed":
            suffix = " (ignored)" if event.ignored else ""
            self._line(f"    FAILED on {host}{suffix}: {event.label}: {event.message}")
        elif event.kind == "unreachable":
            self._line(f"    UNREACHABLE {host}: {event.message}")
        elif event.kind == "changed":
            if self.tty:
                self._line(f"  - {event.label}: changed on {host}")
            else:
                self._line(f"    changed: {host}")
        elif self.verbose:
            self._line(f"    {event.kind}: {host}")

    # -- rendering ------------------------------------------------------------------------------------
    def _line(self, text: str) -> None:
        if self._spinner_visible:
            self.stream.write("\r\x1b[2K")
            self._spinner_visible = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _tick(self) -> None:
        frames = itertools.cycle(_SPINNER_FRAMES)
        interval = 0.2 if self.tty else 1.0
        while not self._stop.wait(interval):
            with self._lock:
                if self._label is None:
                    continue
                now = time.monotonic()
                elapsed = now - self._started
                if self.tty:
                    # One screen line at most: a wrapped line could not be redrawn in place.
                    width = shutil.get_terminal_size().columns - 1
                    text = f"{next(frames)} {self._label} ({elapsed:.0f}s)"
                    if len(text) > width:
                        text = f"{text[: max(0, width - 10)]}... ({elapsed:.0f}s)"
                    self.stream.write(f"\r\x1b[2K{text}")
                    self.stream.flush()
                    self._spinner_visible = True
                elif now - self._last_heartbeat >= self.heartbeat_s:
                    self._last_heartbeat = now
                    self._line(f"    ... still running: {self._label} ({elapsed:.0f}s)")

    def __enter__(self) -> ProgressDisplay:
        self._stop.clear()
        self._thread = threading.Thread(target=self._tick, name="mlpacker-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._spinner_visible:
                self.stream.write("\r\x1b[2K")
                self.stream.flush()
                self._spinner_visible = False
