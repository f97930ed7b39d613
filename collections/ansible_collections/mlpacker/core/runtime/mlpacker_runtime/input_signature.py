"""The input signature of a service's first stage: the feature count and, per column, number or string.

The controller records it at packaging (docs/architecture.md, "Runtime configuration": ``stages[].
input_signature``); the runtime checks every request against it before the first stage runs, so a value the
stage cannot take is a 422 naming the row, the column and the expected type, and /openapi.json says per
column what is accepted. All-numeric batches are checked by numpy's dtype; the cells are only scanned one by
one to name a bad one (or when the body may hold JSON booleans, which numpy would turn into numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

TYPES = ("number", "string", "any")
SOURCES = ("spec", "smoke_instances", "artifact")
_FLOAT_MAX = float(np.finfo(np.float64).max)


class SignatureError(ValueError):
    """The instances do not match the signature; the message names the row, the column and the type."""


def validate(problems: list[str], field: str, value: Any) -> None:
    """Append one problem per bad field of a configured ``input_signature`` (None is valid: no signature)."""
    if value is None:
        return
    if not isinstance(value, dict):
        problems.append(f"{field}: expected an object or null, got {value!r}")
        return
    for key in value:
        if key not in ("source", "columns"):
            problems.append(f"{field}.{key}: unknown field (known: columns, source)")
    if value.get("source") not in SOURCES:
        problems.append(f"{field}.source: {value.get('source')!r} is not one of {', '.join(SOURCES)}")
    columns = value.get("columns")
    if not isinstance(columns, list) or not columns:
        problems.append(f"{field}.columns: expected a non-empty list of columns, got {columns!r}")
        return
    for index, column in enumerate(columns):
        where = f"{field}.columns[{index}]"
        if not isinstance(column, dict):
            problems.append(f"{where}: expected an object {{name, type}}, got {column!r}")
            continue
        for key in column:
            if key not in ("name", "type"):
                problems.append(f"{where}.{key}: unknown field (known: name, type)")
        name = column.get("name")
        if name is not None and not isinstance(name, str):
            problems.append(f"{where}.name: expected a string or null, got {name!r}")
        if column.get("type") not in TYPES:
            problems.append(f"{where}.type: {column.get('type')!r} is not one of {', '.join(TYPES)}")


def describe(value: Any) -> str:
    """How a received JSON value is named in an error: its JSON type and (shortened) value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, (int, float)):
        if not is_number(value):
            return "a number outside the range of a 64-bit float"
        return f"a number ({value!r:.40})"
    kind = {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
    return f"{kind} ({value!r:.40})"


def is_number(value: Any) -> bool:
    """A JSON number that fits a float64 (not a boolean, not 1e999 parsed as infinity)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):
        return -_FLOAT_MAX <= value <= _FLOAT_MAX
    return False


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


_ACCEPTS = {"number": is_number, "string": lambda value: isinstance(value, str), "any": is_scalar}
_EXPECTED = {"number": "a number", "string": "a string", "any": "a value (not a list or object)"}
_SCHEMAS: dict[str, dict[str, Any]] = {"number": {"type": "number"}, "string": {"type": "string"}, "any": {}}


@dataclass(frozen=True)
class InputSignature:
    names: tuple[str | None, ...]
    types: tuple[str, ...]
    source: str

    @classmethod
    def from_config(cls, value: dict[str, Any] | None) -> InputSignature | None:
        """The signature of a validated ``stages[i].input_signature`` (None stays None)."""
        if value is None:
            return None
        columns = value["columns"]
        return cls(
            names=tuple(column.get("name") for column in columns),
            types=tuple(column["type"] for column in columns),
            source=value["source"],
        )

    @property
    def features(self) -> int:
        return len(self.types)

    def column(self, index: int) -> str:
        """``[index] (name)``: how an error names a column."""
        name = self.names[index]
        return f"[{index}]" + (f" ({name})" if name else "")

    def row_schema(self) -> dict[str, Any]:
        """The JSON schema of one row, as /openapi.json publishes it."""
        columns = list(zip(self.names, self.types, strict=True))
        described = ", ".join(
            f"{name or f'column {index}'}: {kind}" for index, (name, kind) in enumerate(columns)
        )
        return {
            "type": "array",
            "prefixItems": [
                {**_SCHEMAS[kind], **({"title": name} if name else {})} for name, kind in columns
            ],
            "minItems": self.features,
            "maxItems": self.features,
            "items": False,
            "description": f"one row of {self.features} features ({described})",
        }

    def check(self, instances: list[Any], may_have_bools: bool = True) -> Any:
        """The instances as the array the first stage gets; SignatureError naming the first bad cell.

        ``instances`` is a non-empty list. ``may_have_bools`` False (the body holds no ``true``/``false``
        token) lets an all-numeric batch pass on its numpy dtype alone.
        """
        features = self.features
        for position, row in enumerate(instances):
            if not isinstance(row, list):
                raise SignatureError(
                    f"instances[{position}]: expected a row of {features} features, received {describe(row)}"
                )
            if len(row) != features:
                raise SignatureError(
                    f"instances[{position}]: expected {features} features, received {len(row)}"
                )
        kinds = set(self.types)
        if kinds == {"number"}:
            try:
                array = np.asarray(instances)
            except (ValueError, OverflowError):
                array = None
            if (
                array is not None
                and array.ndim == 2
                and array.dtype.kind in "iuf"
                and not may_have_bools
                and (array.dtype.kind != "f" or np.isfinite(array).all())
            ):
                return array
            self._scan(instances)
            if array is None or array.ndim != 2 or array.dtype.kind not in "iuf":
                return np.asarray(instances, dtype=np.float64)  # e.g. integers past int64
            return array
        self._scan(instances)
        if kinds == {"string"}:
            return np.asarray(instances)  # numpy would have turned numbers into strings: scanned first
        # Mixed or "any" columns: an object array keeps numbers numbers and strings strings.
        return np.asarray(instances, dtype=object)

    def _scan(self, instances: list[list[Any]]) -> None:
        accepts = [_ACCEPTS[kind] for kind in self.types]
        for position, row in enumerate(instances):
            for index, value in enumerate(row):
                if not accepts[index](value):
                    kind = self.types[index]
                    raise SignatureError(
                        f"instances[{position}]{self.column(index)}: expected {_EXPECTED[kind]}, "
                        f"received {describe(value)}"
                    )
