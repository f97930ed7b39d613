# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The request limits of a deploy's services (``mlpacker_request_limits``): defaults, checks, sections.

Each limit is a runtime configuration key (docs/architecture.md, "Runtime configuration"; docs/security.md,
"Untrusted input"): ``rest.max_body_bytes``, ``rest.max_instances``, ``rest.body_read_timeout_s``,
``rest.max_connections`` and ``stream.max_message_bytes``. The user's dict is laid over the defaults here,
every value checked, so a bad one fails the preflight naming ``mlpacker_request_limits.<key>``.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULTS: dict[str, Any] = {
    "max_body_bytes": 10 * 1024 * 1024,
    "max_instances": 10000,
    "body_read_timeout_s": 10,
    "max_connections": 100,
    "max_message_bytes": 1024 * 1024,
}
REST_KEYS = ("max_body_bytes", "max_instances", "body_read_timeout_s", "max_connections")
STREAM_KEYS = ("max_message_bytes",)
# Request threads of a REST worker (the runtime's rest.threads, which the roles leave at its default): the
# connections a worker holds must outnumber them, or kept-alive connections and health probes would not fit.
RUNTIME_THREADS = 4


class RequestLimitsError(ValueError):
    """A request limit is unusable; the message names ``mlpacker_request_limits.<key>`` and the value."""


def _number(key: str, value: Any, *, whole: bool) -> int | float:
    field = f"mlpacker_request_limits.{key}"
    wanted = "a whole number" if whole else "a number"
    if isinstance(value, bool) or value is None:
        raise RequestLimitsError(f"{field}: expected {wanted} > 0, got {value!r}")
    if isinstance(value, str):  # extra vars (-e key=value) arrive as text
        try:
            value = float(value.strip()) if not whole else int(value.strip())
        except ValueError:
            raise RequestLimitsError(f"{field}: expected {wanted} > 0, got {value!r}") from None
    if isinstance(value, float) and whole:
        if not value.is_integer():
            raise RequestLimitsError(f"{field}: expected {wanted} > 0, got {value!r}")
        value = int(value)
    finite = not isinstance(value, float) or math.isfinite(value)
    if not isinstance(value, (int, float)) or not finite or value <= 0:
        raise RequestLimitsError(f"{field}: expected {wanted} > 0, got {value!r}")
    return value


def normalise_request_limits(limits: Any) -> dict[str, Any]:
    """``limits`` (None or a dict of some keys) over the defaults, every value checked."""
    if limits is None:
        limits = {}
    if not isinstance(limits, dict):
        raise RequestLimitsError(
            f"mlpacker_request_limits: expected a mapping of {', '.join(DEFAULTS)}, "
            f"got {type(limits).__name__}"
        )
    unknown = sorted(str(key) for key in limits if key not in DEFAULTS)
    if unknown:
        raise RequestLimitsError(
            f"mlpacker_request_limits.{unknown[0]}: unknown limit (known: {', '.join(sorted(DEFAULTS))})"
        )
    resolved = {
        key: _number(key, limits.get(key, default), whole=key != "body_read_timeout_s")
        for key, default in DEFAULTS.items()
    }
    if resolved["max_connections"] <= RUNTIME_THREADS:
        raise RequestLimitsError(
            f"mlpacker_request_limits.max_connections: must be more than the {RUNTIME_THREADS} request "
            "threads of a worker (kept-alive connections and health probes need room), "
            f"got {resolved['max_connections']}"
        )
    return resolved


def rest_limits(limits: Any) -> dict[str, Any]:
    """The keys of the runtime configuration's ``rest`` section."""
    resolved = normalise_request_limits(limits)
    return {key: resolved[key] for key in REST_KEYS}


def stream_limits(limits: Any) -> dict[str, Any]:
    """The keys of the runtime configuration's ``stream`` section."""
    resolved = normalise_request_limits(limits)
    return {key: resolved[key] for key in STREAM_KEYS}
