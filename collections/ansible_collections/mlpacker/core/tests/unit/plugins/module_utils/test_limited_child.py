# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

import mmap
import os
import signal
import time

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.limited_child import (
    ChildError,
    LimitExceeded,
    run_limited,
)


class NeedsLibrary(Exception):
    library = "skops"


def answer(value):
    return {"value": value, "pid": os.getpid()}


def sleep_long():
    time.sleep(60)


def allocate(megabytes):
    return len(bytearray(megabytes * 1024 * 1024))


def raise_needs_library():
    raise NeedsLibrary("skops is missing")


def kill_self():
    os.kill(os.getpid(), signal.SIGSEGV)


def print_noise():
    os.write(1, b"noise on stdout\n")
    print("more noise")
    return "quiet"


def test_result_comes_back_from_another_process() -> None:
    result = run_limited(answer, ([1, "two"],), timeout_s=30, memory_mb=0, what="w")
    assert result["value"] == [1, "two"]
    assert result["pid"] != os.getpid()


@pytest.mark.parametrize(
    ("func", "args", "limits", "message"),
    [
        (sleep_long, (), {"timeout_s": 1, "memory_mb": 0}, "w: stopped after the time limit of 1 s"),
        (allocate, (2048,), {"timeout_s": 30, "memory_mb": 512}, "w: ran out of the memory limit of 512 MiB"),
        (
            kill_self,
            (),
            {"timeout_s": 30, "memory_mb": 512},
            "w: the inspection process died with signal SIGSEGV",
        ),
    ],
)
def test_limits(func, args, limits, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(LimitExceeded) as caught:
        run_limited(func, args, what="w", **limits)
    assert str(caught.value).startswith(message), str(caught.value)
    assert time.monotonic() - started < 30


def test_memory_within_the_limit_is_fine() -> None:
    assert run_limited(allocate, (64,), timeout_s=30, memory_mb=1024, what="w") == 64 * 1024 * 1024


def test_the_memory_limit_bounds_what_the_child_adds_to_what_the_parent_maps() -> None:
    # A forking process that maps a lot already (numerical libraries, thread arenas: a test runner maps
    # gigabytes) must not leave the child less than the limit; the limit still stops an allocation past it.
    mapped = mmap.mmap(-1, 1536 * 1024 * 1024)  # reserved, never touched: no real memory used
    try:
        assert run_limited(allocate, (64,), timeout_s=30, memory_mb=1024, what="w") == 64 * 1024 * 1024
        with pytest.raises(LimitExceeded, match="ran out of the memory limit of 512 MiB"):
            run_limited(allocate, (1024,), timeout_s=30, memory_mb=512, what="w")
    finally:
        mapped.close()


def test_errors_come_back_by_name_and_library() -> None:
    with pytest.raises(ChildError) as caught:
        run_limited(raise_needs_library, (), timeout_s=30, memory_mb=0, what="w")
    assert (caught.value.type_name, caught.value.message, caught.value.library) == (
        "NeedsLibrary",
        "skops is missing",
        "skops",
    )


def test_child_output_never_reaches_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    assert run_limited(print_noise, (), timeout_s=30, memory_mb=0, what="w") == "quiet"
    assert "noise" not in capfd.readouterr().out
