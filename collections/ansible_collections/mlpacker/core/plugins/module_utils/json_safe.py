# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Turn model outputs (numpy arrays and scalars, tuples, dicts) into JSON-safe Python values."""

from __future__ import annotations

import math
from typing import Any


def to_json_safe(value: Any) -> Any:
    """Recursively convert numpy arrays/scalars to lists and Python scalars; NaN/inf become None.

    numpy is never imported here: objects are recognised by their ``tolist``/``item`` methods, so this
    works on a controller without numpy too.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): to_json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(item) for item in value]
    if hasattr(value, "tolist"):
        # numpy arrays and numpy scalars (tolist() on a scalar returns the Python scalar)
        return to_json_safe(value.tolist())
    if hasattr(value, "item"):
        return to_json_safe(value.item())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")
