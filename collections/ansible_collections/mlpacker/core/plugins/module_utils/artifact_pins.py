# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Pinned artifacts: the sha256 a user writes in the spec (``stages[].sha256``) and its check.

The controller compares the file with its pin before anything opens it for loading (pipeline_plan at
validation, artifact_info and pipeline_reference again right before their child process loads it); the pin is
what the runtime configuration records, so each host compares it again before it loads the file.
"""

from __future__ import annotations

import re
from typing import Any

from ansible_collections.mlpacker.core.plugins.module_utils.artifacts import sha256_file

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class PinMismatch(Exception):
    """The file's content is not the pinned one; the message names both digests."""

    def __init__(self, message: str, expected: str, actual: str):
        super().__init__(message)
        self.expected = expected
        self.actual = actual


def normalise_sha256(value: Any) -> str:
    """The pin in lower case; ValueError (a message without the field) when it is not 64 hex digits."""
    if not isinstance(value, str) or not SHA256_HEX.match(value.strip().lower()):
        raise ValueError(f"expected 64 hex digits (a sha256), got {value!r}")
    return value.strip().lower()


def mismatch_message(what: str, path: str, expected: str, actual: str) -> str:
    return (
        f"{what}: artifact {path} has sha256 {actual}, expected (pinned) {expected};"
        " refusing to load it (the file changed, or the pin is wrong)"
    )


def verify_pin(what: str, path: str, expected: str | None) -> str:
    """The file's sha256; PinMismatch naming ``what``, both digests and the file when ``expected`` (a pin)
    is given and differs. Reads the file, never loads it."""
    actual = sha256_file(path)
    if expected and actual != expected.lower():
        raise PinMismatch(mismatch_message(what, path, expected.lower(), actual), expected.lower(), actual)
    return actual
