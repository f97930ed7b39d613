"""Run an ordered chain of stages: the output of stage k is the input of stage k+1."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mlpacker_runtime.input_signature import InputSignature, SignatureError, describe, is_number, is_scalar
from mlpacker_runtime.jsonsafe import to_jsonsafe
from mlpacker_runtime.loading import Stage
from mlpacker_runtime.log_limit import ThrottledLog

log = logging.getLogger("mlpacker_runtime.chain")

StageObserver = Callable[[str, float], None]


class InputError(ValueError):
    """The request's instances do not have the shape the first stage expects (HTTP 422)."""


class StageError(RuntimeError):
    """A stage raised; ``stage`` names it. The original exception is chained for the log."""

    def __init__(self, stage: str, exc: BaseException):
        self.stage = stage
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        super().__init__(f"stage {stage!r} failed: {type(exc).__name__}" + (f": {detail}" if detail else ""))


class Chain:
    def __init__(self, stages: list[Stage], *, forwards: bool = False):
        """``forwards``: the last stage's output goes on to a next hop (so it must be finite, as JSON is)."""
        if not stages:
            raise ValueError("a chain needs at least one stage")
        self.stages = stages
        self.forwards = forwards
        # A stage failing on every request logs its traceback once per exception type, then counted summaries.
        self.failures = ThrottledLog(log)

    @property
    def expected_features(self) -> int | None:
        return self.stages[0].expected_features

    @property
    def input_signature(self) -> InputSignature | None:
        return self.stages[0].input_signature

    def prepare_input(self, instances: Any, may_have_bools: bool = True) -> Any:
        """Check the instances against the first stage (its input signature, else its feature count) and
        turn them into an array. Rows are values or lists of values: nothing nests deeper."""
        if not isinstance(instances, list):
            raise InputError(f"'instances' must be a list of rows, received {type(instances).__name__}")
        if not instances:
            raise InputError("'instances' is empty: send at least one row")
        signature = self.input_signature
        if signature is not None:
            try:
                return signature.check(instances, may_have_bools)
            except SignatureError as exc:
                raise InputError(str(exc)) from None
        expected = self.expected_features
        if expected is None:
            try:
                array = np.asarray(instances)
            except (ValueError, OverflowError):
                array = None
            if array is not None and array.ndim <= 2 and array.dtype.kind != "O":
                return array
            _check_depth(instances)
            return instances  # ragged or mixed input for a stage that did not declare a shape: as is
        for position, row in enumerate(instances):
            if not isinstance(row, list):
                raise InputError(
                    f"instances[{position}]: expected a row of {expected} features, received {_describe(row)}"
                )
            if len(row) != expected:
                raise InputError(f"instances[{position}]: expected {expected} features, received {len(row)}")
        try:
            array = np.asarray(instances)
        except (ValueError, OverflowError) as exc:
            _check_depth(instances)
            raise InputError(
                f"'instances' must be a 2-D array of {expected} features per row: {exc}"
            ) from None
        if array.ndim != 2:
            _check_depth(instances)
            raise InputError(
                f"'instances' must be a 2-D array of shape (n, {expected}), "
                f"received shape {list(array.shape)}"
            )
        if array.dtype.kind not in "biufUS":
            raise InputError(
                "'instances' must contain only numbers or strings (no nested lists, objects or null)"
            )
        if may_have_bools:
            # numpy reads true and false as numbers; JSON booleans are not features.
            for position, row in enumerate(instances):
                for index, value in enumerate(row):
                    if isinstance(value, bool):
                        raise InputError(
                            f"instances[{position}][{index}]: expected a number or a string, "
                            f"received {describe(value)}"
                        )
        return array

    def run(self, data: Any, observe: StageObserver | None = None, instances: Any = None) -> Any:
        """Run every stage in order; raise StageError naming the stage that failed.

        With the request's ``instances``, a ValueError or TypeError of the first stage on values it cannot
        take (see ``input_problem``) is an InputError instead; so is an overflow to infinity or NaN in what a
        stage hands on (the next stage, or the next hop: JSON has no infinity).
        """
        # Overflow to infinity is judged below (an error naming the stage), not warned about on every request.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._run(data, observe, instances)

    def _run(self, data: Any, observe: StageObserver | None, instances: Any) -> Any:
        last = len(self.stages) - 1
        for index, stage in enumerate(self.stages):
            started = time.perf_counter()
            try:
                output = stage.run(data)
            except Exception as exc:
                problem = None
                if index == 0 and instances is not None:
                    problem = input_problem(stage, data, instances, exc)
                if problem is not None:
                    raise InputError(problem) from None
                self.failures.exception(
                    (stage.name, type(exc).__name__), f"stage {stage.name!r} ({stage.method}) failed", exc
                )
                raise StageError(stage.name, exc) from exc
            if (index < last or self.forwards) and _overflowed(data, output):
                raise InputError(
                    f"instances: stage {stage.name!r} computed infinity or NaN from these values (out of the "
                    "range this pipeline can compute)"
                )
            data = output
            if observe is not None:
                observe(stage.name, time.perf_counter() - started)
        return data

    def predict(
        self, instances: Any, observe: StageObserver | None = None, may_have_bools: bool = True
    ) -> Any:
        """Validate, run and convert the result into JSON-safe values."""
        result = self.run(self.prepare_input(instances, may_have_bools), observe, instances)
        try:
            return to_jsonsafe(result)
        except (TypeError, RecursionError) as exc:
            raise StageError(self.stages[-1].name, exc) from None


def _overflowed(given: Any, output: Any) -> bool:
    """Whether a stage made infinity or NaN of finite input (both float arrays: otherwise not judged)."""
    if not isinstance(output, np.ndarray) or output.dtype.kind not in "fc" or np.isfinite(output).all():
        return False
    if isinstance(given, np.ndarray) and given.dtype.kind in "fc":
        return bool(np.isfinite(given).all())
    return isinstance(given, np.ndarray) and given.dtype.kind in "iub"


def _first_non_number(instances: list[Any]) -> tuple[int, int | None, Any] | None:
    """The row, the column (None for a row that is a single value) and the value of the first cell that is
    not a finite JSON number."""
    for position, row in enumerate(instances):
        if not isinstance(row, list):
            if not is_number(row):
                return position, None, row
            continue
        for index, value in enumerate(row):
            if not is_number(value):
                return position, index, value
    return None


def input_problem(stage: Stage, data: Any, instances: Any, exc: Exception) -> str | None:
    """Why the first stage's failure is the request's fault, or None (a stage failure: 500).

    Without an input signature nothing says what a column takes, so: a ValueError or TypeError, on a request
    holding a value that is not a number (a string, a boolean, null), where the same stage takes that row
    with zeros in place of such values. The stage is tried again on one row, on this error path only.
    """
    if not isinstance(exc, (ValueError, TypeError)) or not isinstance(instances, list):
        return None
    found = _first_non_number(instances)
    if found is None:
        return None
    position, column, value = found
    row = instances[position]
    if isinstance(row, list) and not all(is_scalar(cell) for cell in row):
        return None
    probe = (
        np.asarray([[cell if is_number(cell) else 0.0 for cell in row]], dtype=np.float64)
        if isinstance(row, list)
        else np.zeros(1)
    )
    try:
        stage.run(probe)
    except Exception:
        return None
    where = f"[{position}]" + (f"[{column}]" if column is not None else "")
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return (
        f"instances{where}: expected a number, received {describe(value)} "
        f"(stage {stage.name!r}: {type(exc).__name__}" + (f": {detail})" if detail else ")")
    )


def _check_depth(instances: list[Any]) -> None:
    """Rows are values or lists of values; name the first cell that nests deeper."""
    for position, row in enumerate(instances):
        if isinstance(row, dict):
            raise InputError(
                f"instances[{position}]: expected a row (a list of values), received {describe(row)}"
            )
        if isinstance(row, list):
            for index, value in enumerate(row):
                if not is_scalar(value):
                    raise InputError(
                        f"instances[{position}][{index}]: expected a value, received {describe(value)} "
                        "(rows are lists of numbers or strings; nothing nests deeper)"
                    )


def _describe(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__} ({value!r:.40})"
