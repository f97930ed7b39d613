"""Parse an untrusted request body (REST /predict, stream messages) into its ``instances``, cheaply.

Every refusal is a ``BodyError`` with the HTTP status to answer and a message naming the problem or the
limit; nothing here raises anything else for any input (no RecursionError, no MemoryError past the limits).
"""

from __future__ import annotations

import json
from typing import Any


class BodyError(ValueError):
    """The body cannot be used; ``status`` is the HTTP answer (400, 413, 422), ``kind`` the metric label."""

    def __init__(self, status: int, kind: str, message: str):
        self.status = status
        self.kind = kind
        super().__init__(message)


def _reject_constant(name: str) -> Any:
    raise BodyError(
        400,
        "bad_json",
        f"malformed JSON body: {name} is not a JSON value (JSON does not allow NaN, Infinity or -Infinity; "
        "send null for a missing value if the model takes it)",
    )


# One decoder for every request: json.loads(raw, parse_constant=...) would build a new one each time.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json(raw: bytes, what: str = "body") -> Any:
    """The JSON document in ``raw``; BodyError(400) for anything JSON does not allow or nests too deeply.

    ``what`` names the document in the message (``body``; ``message`` in stream mode).
    """
    try:
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
        return _DECODER.decode(text)
    except BodyError as exc:
        raise BodyError(
            exc.status, exc.kind, str(exc).replace("malformed JSON body", f"malformed JSON {what}")
        ) from None
    except RecursionError:
        # The C scanner stops at the interpreter's recursion limit: cheap, and nothing is logged.
        raise BodyError(
            400, "bad_json", f"malformed JSON {what}: nested too deeply (instances are rows of values)"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyError(400, "bad_json", f"malformed JSON {what}: {exc}") from None


def instances_of(payload: Any, max_instances: int, what: str = "body") -> Any:
    """The ``instances`` of a parsed body; BodyError(422) for another shape, (413) past ``max_instances``."""
    if not isinstance(payload, dict) or "instances" not in payload:
        raise BodyError(422, "bad_shape", f'{what} must be a JSON object {{"instances": [[...], ...]}}')
    instances = payload["instances"]
    if isinstance(instances, list) and len(instances) > max_instances:
        raise BodyError(
            413,
            "too_many_instances",
            f"'instances' holds {len(instances)} rows, more than rest.max_instances ({max_instances}): "
            "send them in smaller batches",
        )
    return instances
