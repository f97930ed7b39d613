"""Run an ordered chain of stages: the output of stage k is the input of stage k+1."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mlpacker_runtime.jsonsafe import to_jsonsafe
from mlpacker_runtime.loading import Stage

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
    def __init__(self, stages: list[Stage]):
        if not stages:
            raise ValueError("a chain needs at least one stage")
        self.stages = stages

    @property
    def expected_features(self) -> int | None:
        return self.stages[0].expected_features

    def prepare_input(self, instances: Any) -> Any:
        """Check the instances' shape against the first stage and turn them into an array."""
        if not isinstance(instances, list):
            raise InputError(f"'instances' must be a list of rows, received {type(instances).__name__}")
        if not instances:
            raise InputError("'instances' is empty: send at least one row")
        expected = self.expected_features
        if expected is None:
            try:
                array = np.asarray(instances)
            except ValueError:
                return instances  # ragged input for a stage that did not declare a shape: pass it as is
            return instances if array.dtype.kind == "O" else array
        for position, row in enumerate(instances):
            if not isinstance(row, list):
                raise InputError(
                    f"instances[{position}]: expected a row of {expected} features, received {_describe(row)}"
                )
            if len(row) != expected:
                raise InputError(f"instances[{position}]: expected {expected} features, received {len(row)}")
        try:
            array = np.asarray(instances)
        except ValueError as exc:
            raise InputError(
                f"'instances' must be a 2-D array of {expected} features per row: {exc}"
            ) from exc
        if array.ndim != 2:
            raise InputError(
                f"'instances' must be a 2-D array of shape (n, {expected}), "
                f"received shape {list(array.shape)}"
            )
        if array.dtype.kind not in "biufUS":
            raise InputError(
                "'instances' must contain only numbers or strings (no nested lists, objects or null)"
            )
        return array

    def run(self, data: Any, observe: StageObserver | None = None) -> Any:
        """Run every stage in order; raise StageError naming the stage that failed."""
        for stage in self.stages:
            started = time.perf_counter()
            try:
                data = stage.run(data)
            except Exception as exc:
                log.exception("stage %r (%s) failed", stage.name, stage.method)
                raise StageError(stage.name, exc) from exc
            if observe is not None:
                observe(stage.name, time.perf_counter() - started)
        return data

    def predict(self, instances: Any, observe: StageObserver | None = None) -> Any:
        """Validate, run and convert the result into JSON-safe values."""
        result = self.run(self.prepare_input(instances), observe)
        try:
            return to_jsonsafe(result)
        except TypeError as exc:
            raise StageError(self.stages[-1].name, exc) from exc


def _describe(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__} ({value!r:.40})"
