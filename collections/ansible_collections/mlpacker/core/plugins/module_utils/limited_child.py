# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Run a function in a forked child process with a time limit and a memory limit (the controller's artifact
inspection: unpickling runs the artifact's code, which must not run in the module's own process unbounded).

The child sets ``RLIMIT_AS`` to what it already maps (inherited from the forking process: a module's Python is
small, a test runner that imported numerical libraries and started threads maps gigabytes) plus the memory
limit, so the limit bounds what loading the artifact adds, wherever the fork comes from. It sends its result
back as JSON through a pipe and exits; it never writes to the module's stdout (the module's JSON answer). The
parent kills it when the time is up.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

MIB = 1024 * 1024
# Numerical libraries start a thread pool per core, each reserving address space: one thread is enough.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class LimitExceeded(Exception):
    """The child ran out of time or memory (or died); the message says which limit and its setting."""


class ChildError(Exception):
    """The function raised in the child: its type name, message and ``library`` attribute, if any."""

    def __init__(self, type_name: str, message: str, library: str | None = None):
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.library = library


def _out_of_memory(exc: BaseException | None) -> bool:
    """Whether a MemoryError is ``exc`` or behind it (loaders wrap what unpickling raised)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, MemoryError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _mapped_bytes() -> int:
    """The address space this process maps now (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _child(func: Callable[..., Any], args: tuple, memory_mb: int, write_fd: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # whatever the artifact prints must not corrupt the module's answer on stdout
    # pylint: disable-next=consider-using-with
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the child
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    try:
        if memory_mb:
            limit = _mapped_bytes() + memory_mb * MIB
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        result: dict[str, Any] = {"ok": func(*args)}
    except BaseException as exc:  # pylint: disable=broad-except
        result = (
            {"memory": True}
            if _out_of_memory(exc)
            else {
                "error": {
                    "type": type(exc).__name__,
                    "message": str(exc),
                    "library": getattr(exc, "library", None),
                }
            }
        )
    try:
        payload = json.dumps(result, default=str).encode("utf-8")
    except (TypeError, ValueError) as exc:
        payload = json.dumps(
            {"error": {"type": "TypeError", "message": f"result is not JSON: {exc}"}}
        ).encode()
    view = memoryview(payload)
    while view:
        written = os.write(write_fd, view)
        view = view[written:]


def run_limited(
    func: Callable[..., Any], args: tuple = (), *, timeout_s: float, memory_mb: int, what: str
) -> Any:
    """``func(*args)`` in a forked child, its result being JSON-able. LimitExceeded when the child takes
    longer than ``timeout_s`` seconds, maps ``memory_mb`` MiB more than at the fork (0: no memory limit)
    or dies; ChildError when ``func`` raised."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(read_fd)
        try:
            _child(func, args, memory_mb, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    deadline = time.monotonic() + timeout_s
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _unused, _unused = select.select([read_fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        _pid, status = os.waitpid(pid, 0)
    if timed_out:
        raise LimitExceeded(
            f"{what}: stopped after the time limit of {timeout_s:g} s (mlpacker_inspect_timeout_s)"
        )
    if os.WIFSIGNALED(status) and not chunks:
        number = os.WTERMSIG(status)
        hint = (
            f" (possibly the memory limit of {memory_mb} MiB, mlpacker_inspect_memory_mb)"
            if memory_mb
            else ""
        )
        raise LimitExceeded(
            f"{what}: the inspection process died with signal {signal.Signals(number).name}{hint}"
        )
    try:
        result = json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError as exc:
        raise LimitExceeded(f"{what}: the inspection process ended without an answer ({exc})") from exc
    if result.get("memory"):
        raise LimitExceeded(
            f"{what}: ran out of the memory limit of {memory_mb} MiB (mlpacker_inspect_memory_mb)"
        )
    if "error" in result:
        error = result["error"]
        raise ChildError(error["type"], error["message"], error.get("library"))
    return result["ok"]
