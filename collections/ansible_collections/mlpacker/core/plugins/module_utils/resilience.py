# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""How a deploy's services cope with failing neighbours: ``mlpacker_rest_hops`` and
``mlpacker_stream_max_consecutive_refusals``.

``mlpacker_rest_hops`` (``timeout_s``, ``retry_timeouts``, ``ejection: {consecutive_failures, base_s,
max_s}``) becomes the runtime configuration's ``rest.hop_timeout_s``, ``rest.hop_retry_timeouts`` and
``rest.hop_ejection``; ``mlpacker_stream_max_consecutive_refusals`` its ``stream.max_consecutive_refusals``
(runtime/README.md). The user's values are laid over the defaults here and every one is checked, so a bad one
fails the preflight naming ``mlpacker_rest_hops.<key>``. The defaults are the runtime's: it ships as its own
wheel and cannot import this module, so tests/unit/plugins/module_utils/test_resilience.py proves both equal.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean

HOPS = "mlpacker_rest_hops"
REFUSALS = "mlpacker_stream_max_consecutive_refusals"
HOP_DEFAULTS: dict[str, Any] = {
    # Seconds a service waits for a next-hop replica's answer.
    "timeout_s": 10.0,
    # Whether a hop request that timed out is tried on the next replica (connection failures and 503s always
    # are).
    "retry_timeouts": False,
    # Failures in a row that take a replica out of the rotation (0: never), for base_s doubled per ejection
    # in a row up to max_s.
    "ejection": {"consecutive_failures": 3, "base_s": 5.0, "max_s": 300.0},
}
MAX_CONSECUTIVE_REFUSALS = 10
# The setting's keys and the runtime configuration's rest keys they become.
REST_KEYS = {"timeout_s": "hop_timeout_s", "retry_timeouts": "hop_retry_timeouts", "ejection": "hop_ejection"}


class ResilienceError(ValueError):
    """A setting is unusable; the message names it (``mlpacker_rest_hops.<key>``) and the value."""


def _mapping(field: str, value: Any, known: dict[str, Any]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ResilienceError(f"{field}: expected a mapping of {', '.join(known)}, got {value!r}")
    unknown = sorted(str(key) for key in value if key not in known)
    if unknown:
        raise ResilienceError(f"{field}.{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
    return value


def _number(field: str, value: Any, *, whole: bool, least: int = 1) -> int | float:
    """A number > 0 (``whole``: a whole number >= ``least``); text (extra vars arrive as text) is parsed."""
    wanted = f"a whole number >= {least}" if whole else "a number > 0"
    bad = ResilienceError(f"{field}: expected {wanted}, got {value!r}")
    if isinstance(value, bool) or value is None:
        raise bad
    if isinstance(value, str):
        try:
            value = int(value.strip()) if whole else float(value.strip())
        except ValueError:
            raise bad from None
    if isinstance(value, float) and whole:
        if not value.is_integer():
            raise bad
        value = int(value)
    if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        raise bad
    if (whole and value < least) or (not whole and value <= 0):
        raise bad
    return value


def _bool(field: str, value: Any) -> bool:
    try:
        return boolean(value, strict=True)
    except TypeError:
        raise ResilienceError(f"{field}: expected true or false, got {value!r}") from None


def normalise_rest_hops(hops: Any) -> dict[str, Any]:
    """``hops`` (None or a dict of some keys) over :data:`HOP_DEFAULTS`, every value checked."""
    given = _mapping(HOPS, hops, HOP_DEFAULTS)
    ejection_given = _mapping(f"{HOPS}.ejection", given.get("ejection"), HOP_DEFAULTS["ejection"])
    ejection = {**HOP_DEFAULTS["ejection"], **ejection_given}
    resolved = {
        "timeout_s": _number(
            f"{HOPS}.timeout_s", given.get("timeout_s", HOP_DEFAULTS["timeout_s"]), whole=False
        ),
        "retry_timeouts": _bool(
            f"{HOPS}.retry_timeouts", given.get("retry_timeouts", HOP_DEFAULTS["retry_timeouts"])
        ),
        "ejection": {
            "consecutive_failures": _number(
                f"{HOPS}.ejection.consecutive_failures", ejection["consecutive_failures"], whole=True, least=0
            ),
            "base_s": _number(f"{HOPS}.ejection.base_s", ejection["base_s"], whole=False),
            "max_s": _number(f"{HOPS}.ejection.max_s", ejection["max_s"], whole=False),
        },
    }
    base, longest = resolved["ejection"]["base_s"], resolved["ejection"]["max_s"]
    if longest < base:
        which = {key: "" if key in ejection_given else ", the default" for key in ("base_s", "max_s")}
        raise ResilienceError(
            f"{HOPS}.ejection.max_s: the longest ejection ({longest!r}{which['max_s']}) is shorter than "
            f"base_s ({base!r}{which['base_s']})"
        )
    return resolved


def normalise_max_consecutive_refusals(value: Any) -> int:
    """Refused publishes in a row before a stream service says it is not ready: a whole number >= 1."""
    return _number(REFUSALS, MAX_CONSECUTIVE_REFUSALS if value is None else value, whole=True)


def resilience_settings(hops: Any, max_consecutive_refusals: Any = None) -> dict[str, Any]:
    """Both settings checked and resolved: ``{"rest_hops": {...}, "stream_max_consecutive_refusals": N}``.

    The result is a valid input again (normalising it changes nothing), so the deploy can carry it to the
    service roles and the runtime_config filter checks it once more.
    """
    return {
        "rest_hops": normalise_rest_hops(hops),
        "stream_max_consecutive_refusals": normalise_max_consecutive_refusals(max_consecutive_refusals),
    }


def _resolved(settings: Any) -> dict[str, Any]:
    known = {"rest_hops": None, "stream_max_consecutive_refusals": None}
    given = _mapping("resilience", settings, known)
    return resilience_settings(given.get("rest_hops"), given.get("stream_max_consecutive_refusals"))


def rest_keys(settings: Any) -> dict[str, Any]:
    """The keys of the runtime configuration's ``rest`` section, from resilience_settings' result."""
    hops = _resolved(settings)["rest_hops"]
    return {REST_KEYS[key]: copy.deepcopy(value) for key, value in hops.items()}


def stream_keys(settings: Any) -> dict[str, Any]:
    """The keys of the runtime configuration's ``stream`` section, from resilience_settings' result."""
    return {"max_consecutive_refusals": _resolved(settings)["stream_max_consecutive_refusals"]}
