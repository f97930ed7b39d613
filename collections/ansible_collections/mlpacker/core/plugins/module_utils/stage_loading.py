# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Load pipeline stages on the controller and run a chain of them (artifact_info, pipeline_reference).

Modules cannot import the runtime package, so this is the controller's own self-contained loader. It
applies stages the way the runtime does: the batch is a 2-D numpy array, ``method`` picks the estimator
method, function stages are called with the batch, ONNX models get float32 input and their first output
(``predict_proba`` takes the second, the probabilities). Heavy libraries are imported lazily, so a
missing one is reported by name (MissingLibraryError) instead of failing the module import.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
from typing import Any

from ansible_collections.mlpacker.core.plugins.module_utils.artifacts import detect_format


class MissingLibraryError(Exception):
    """A library needed to load a stage is not installed in the controller's Python."""

    def __init__(self, library: str, needed_for: str):
        self.library = library
        super().__init__(
            f"the Python library '{library}' is needed for {needed_for}"
            f" but is not installed in the controller's Python ({sys.executable})"
        )


class StageError(Exception):
    """A stage cannot be loaded or run; the message names the stage and the cause."""


def import_library(module: str, distribution: str, needed_for: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingLibraryError(distribution, needed_for) from exc


def load_function(reference: str, code_dir: str | None) -> Any:
    """Import ``package.module:callable`` with ``code_dir`` first on sys.path."""
    module_name, separator, attribute = reference.partition(":")
    if not module_name or not separator or not attribute:
        raise StageError(f"function {reference!r} must look like 'package.module:callable'")
    if code_dir:
        if not os.path.isdir(code_dir):
            raise StageError(f"code_dir {code_dir} does not exist")
        if code_dir not in sys.path:
            sys.path.insert(0, code_dir)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # pylint: disable=broad-except
        # Importing runs the user's module: syntax errors and failing imports are reported alike.
        raise StageError(
            f"cannot import module {module_name!r} from code_dir {code_dir}: {type(exc).__name__}: {exc}"
        ) from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise StageError(f"{module_name!r} has no callable {attribute!r}")
    return function


def load_artifact(path: str, artifact_format: str, trusted_types: list[str] | None = None) -> Any:
    """Load an artifact file: the estimator object, or an onnxruntime InferenceSession for ONNX."""
    if not os.path.isfile(path):
        raise StageError(f"artifact {path} does not exist")
    if artifact_format == "joblib":
        joblib = import_library("joblib", "joblib", f"loading {path}")
        return joblib.load(path)
    if artifact_format == "pickle":
        with open(path, "rb") as handle:
            try:
                return pickle.load(handle)  # noqa: S301 - the user's own artifact, loaded like the runtime does
            except pickle.UnpicklingError as exc:
                # The runtime unpickles .pkl files with pickle too, so this would fail on the hosts as well.
                raise StageError(
                    f"cannot unpickle {path}: {exc}; if it was written by joblib.dump, set format: joblib"
                    " (or name it .joblib)"
                ) from exc
    if artifact_format == "skops":
        skops_io = import_library("skops.io", "skops", f"loading {path}")
        untrusted = [
            name for name in skops_io.get_untrusted_types(file=path) if name not in (trusted_types or [])
        ]
        if untrusted:
            raise StageError(
                f"skops artifact {path} contains types that are not trusted: {', '.join(untrusted)};"
                " add them to the stage's trusted_types after checking them"
            )
        return skops_io.load(path, trusted=list(trusted_types or []) or None)
    if artifact_format == "onnx":
        onnxruntime = import_library("onnxruntime", "onnxruntime", f"loading {path}")
        return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    raise StageError(f"unknown artifact format {artifact_format!r} for {path}")


def load_stage(stage: dict[str, Any], code_dir: str | None = None) -> Any:
    """Load a plan stage (``artifact``/``function``, ``format``, ``trusted_types``)."""
    code_dir = stage.get("code_dir") or code_dir
    if stage.get("function"):
        return load_function(stage["function"], code_dir)
    if code_dir and os.path.isdir(code_dir) and code_dir not in sys.path:
        # Like the runtime: pickled objects may reference helper code shipped in code_dir.
        sys.path.insert(0, code_dir)
    artifact = stage.get("artifact")
    if not artifact:
        raise StageError("stage {!r} has neither artifact nor function".format(stage.get("name")))
    stage_format = stage.get("format") or ""
    if not stage_format:
        try:
            stage_format = detect_format(artifact)
        except ValueError as exc:
            raise StageError(str(exc)) from exc
    try:
        return load_artifact(artifact, stage_format, stage.get("trusted_types"))
    except (StageError, MissingLibraryError):
        raise
    except Exception as exc:  # pylint: disable=broad-except
        # Unpickling runs the artifact's own code: whatever it raises is reported against the stage.
        detail = str(exc) or "no detail (is the file truncated, or not in this format?)"
        raise StageError(
            f"stage {stage.get('name')!r}: cannot load {artifact} as {stage_format}:"
            f" {type(exc).__name__}: {detail}"
        ) from exc


def probabilities_as_rows(output: Any) -> Any:
    # skl2onnx's ZipMap output is a list of {class: probability}; turn it into rows ordered by class.
    if isinstance(output, list) and output and isinstance(output[0], dict):
        return [[row[key] for key in sorted(row)] for row in output]
    return output


def default_method(stage_format: str, is_last: bool) -> str:
    # The spec's rule (spec.default_method): functions are called, the last stage predicts, others transform.
    if stage_format == "function":
        return "call"
    return "predict" if is_last else "transform"


ONNX_INPUT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(string)": "str_",
}


def onnx_output_name(session: Any, method: str) -> str:
    """The output the runtime reads for ``method`` (skl2onnx: output_label, output_probability)."""
    names = [output.name for output in session.get_outputs()]
    if method == "predict":
        return "label" if "label" in names else names[0]
    if method == "predict_proba":
        candidates = [name for name in names if name in ("probabilities", "output_probability")]
        if candidates:
            return candidates[0]
        if len(names) < 2:
            raise StageError(f"the ONNX model has no probability output for method 'predict_proba' ({names})")
        return names[1]
    return names[0]


def run_onnx(session: Any, method: str, batch: Any) -> Any:
    numpy = import_library("numpy", "numpy", "running ONNX stages")
    first_input = session.get_inputs()[0]
    dtype = getattr(numpy, ONNX_INPUT_DTYPES.get(first_input.type, "float32"))
    (output,) = session.run(
        [onnx_output_name(session, method)], {first_input.name: numpy.asarray(batch, dtype=dtype)}
    )
    return probabilities_as_rows(output)


def apply_stage(loaded: Any, stage_format: str, method: str, batch: Any) -> Any:
    numpy = import_library("numpy", "numpy", "running stages")
    if stage_format == "function":
        return loaded(numpy.asarray(batch))
    if stage_format == "onnx":
        return run_onnx(loaded, method, batch)
    bound = getattr(loaded, method, None)
    if not callable(bound):
        raise StageError(f"the {type(loaded).__name__} object has no method {method!r}")
    return bound(numpy.asarray(batch))


def run_chain(stages: list[dict[str, Any]], instances: list[Any], code_dir: str | None = None) -> Any:
    """Run ``instances`` through the stages in order; each stage gets the previous stage's output."""
    batch: Any = instances
    for index, stage in enumerate(stages):
        name = stage.get("name") or f"stages[{index}]"
        loaded = load_stage(stage, code_dir)
        stage_format = stage.get("format") or ("function" if stage.get("function") else "")
        if not stage_format:
            stage_format = detect_format(stage["artifact"])
        method = stage.get("method") or default_method(stage_format, is_last=index == len(stages) - 1)
        try:
            batch = apply_stage(loaded, stage_format, method, batch)
        except (StageError, MissingLibraryError):
            raise
        except Exception as exc:  # pylint: disable=broad-except
            # Any model error (shape mismatch, bad input) is reported against the stage that raised it.
            raise StageError(f"stage {name!r} ({method}) failed: {type(exc).__name__}: {exc}") from exc
    return batch
