"""Convert stage outputs (numpy, pandas, scipy sparse, plain Python) into JSON-serialisable values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def to_jsonsafe(value: Any) -> Any:
    """Return ``value`` as nested lists/dicts of str, int, float, bool and None.

    NaN and infinities become None because JSON has no representation for them.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and np.isfinite(value).all():
            # Fast path for the common case: tolist() already yields Python floats.
            return value.tolist()
        if value.dtype.kind in "iub":
            return value.tolist()
        # Object, string and non-finite float arrays: convert element by element.
        return to_jsonsafe(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonsafe(value.item())
    if isinstance(value, dict):
        return {str(key): to_jsonsafe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonsafe(item) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    # pandas DataFrame/Series and scipy sparse matrices, without importing either library.
    if hasattr(value, "toarray") and callable(value.toarray):
        return to_jsonsafe(np.asarray(value.toarray()))
    if hasattr(value, "to_numpy") and callable(value.to_numpy):
        return to_jsonsafe(value.to_numpy())
    if hasattr(value, "tolist") and callable(value.tolist):
        return to_jsonsafe(value.tolist())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot convert a {type(value).__name__} to JSON")
