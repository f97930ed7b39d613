# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Facts about an artifact file and the library versions it was made with."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from typing import Any

from ansible_collections.mlpacker.core.plugins.module_utils.runtime_contract import (
    EXTENSION_FORMATS,
    FORMATS,
    PREDICTION_METHODS,
)

# Distributions whose versions a stage of each format depends on (recorded so hosts install the same).
VERSIONED_LIBRARIES = {
    "joblib": ("scikit-learn", "numpy", "scipy", "joblib"),
    "pickle": ("scikit-learn", "numpy", "scipy"),
    "skops": ("scikit-learn", "numpy", "scipy", "skops"),
    "onnx": ("onnxruntime", "numpy"),
    "function": ("numpy",),
}
# Top-level module -> distribution name, where they differ.
MODULE_DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "skops": "skops",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
}


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def code_dir_digest(code_dir: str, left_out: tuple[str, ...] = ()) -> tuple[str, int]:
    """sha256 and total size over a code tree (relative paths and contents, in sorted order); the files and
    folders named in ``left_out`` at the tree's top are not counted."""
    digest = hashlib.sha256()
    total_size = 0
    for root, dirs, files in os.walk(code_dir):
        top = root == code_dir
        dirs[:] = sorted(name for name in dirs if name != "__pycache__" and not (top and name in left_out))
        for name in sorted(files):
            if name.endswith(".pyc") or (top and name in left_out):
                continue
            full_path = os.path.join(root, name)
            digest.update(os.path.relpath(full_path, code_dir).encode("utf-8") + b"\0")
            digest.update(sha256_file(full_path).encode("ascii"))
            total_size += os.path.getsize(full_path)
    return digest.hexdigest(), total_size


def detect_format(path: str, explicit: str | None = None) -> str:
    """The artifact format: ``explicit`` when given, else from the file extension; ValueError if unknown."""
    if explicit:
        if explicit not in FORMATS:
            raise ValueError("format {!r} is not one of {}".format(explicit, ", ".join(FORMATS)))
        return explicit
    extension = os.path.splitext(path)[1].lower()
    if extension not in EXTENSION_FORMATS:
        raise ValueError(
            "cannot tell the format of {} from its extension {!r} (known: {}); set format".format(
                path, extension, ", ".join(EXTENSION_FORMATS)
            )
        )
    return EXTENSION_FORMATS[extension]


def distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect_versions(artifact_format: str, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the libraries relevant to ``artifact_format`` (missing ones left out)."""
    versions: dict[str, str] = {}
    for name in VERSIONED_LIBRARIES.get(artifact_format, ()) + tuple(extra):
        version = distribution_version(name)
        if version is not None:
            versions[name] = version
    return versions


def library_of(obj: Any) -> str | None:
    """Distribution that defines ``obj``'s class (e.g. scikit-learn for sklearn.pipeline.Pipeline)."""
    top_module = type(obj).__module__.split(".")[0]
    if top_module in ("builtins", "__main__"):
        return None
    return MODULE_DISTRIBUTIONS.get(top_module, top_module)


def object_type(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def public_type_name(obj: Any) -> str:
    # sklearn classes live in private modules (sklearn.pipeline is public, sklearn.linear_model._logistic
    # is not); report the public import path users write.
    cls = type(obj)
    parts = [part for part in cls.__module__.split(".") if not part.startswith("_")]
    return "{}.{}".format(".".join(parts), cls.__qualname__)


def prediction_methods(obj: Any) -> list[str]:
    methods = []
    for name in PREDICTION_METHODS:
        try:
            # sklearn hides methods the fitted estimator cannot run (available_if): hasattr is the real test.
            if callable(getattr(obj, name, None)):
                methods.append(name)
        except Exception:  # pylint: disable=broad-except
            continue
    return methods


def n_features_in(obj: Any) -> int | None:
    value = getattr(obj, "n_features_in_", None)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if hasattr(value, "item"):
        return int(value.item())
    steps = getattr(obj, "steps", None)
    if steps:
        return n_features_in(steps[0][1])
    return None


def pipeline_steps(obj: Any) -> list[dict[str, str]]:
    steps = getattr(obj, "steps", None)
    if not isinstance(steps, list):
        return []
    described = []
    for step in steps:
        if isinstance(step, tuple) and len(step) >= 2:
            described.append({"name": str(step[0]), "type": public_type_name(step[1])})
    return described


def describe_object(obj: Any) -> dict[str, Any]:
    """What artifact_info reports about a loaded Python object (estimator, pipeline or callable)."""
    library = library_of(obj)
    return {
        "object_type": public_type_name(obj),
        "library": library,
        "library_version": distribution_version(library) if library else None,
        "n_features_in": n_features_in(obj),
        "steps": pipeline_steps(obj),
        "methods": prediction_methods(obj),
    }


def describe_onnx_session(session: Any) -> dict[str, Any]:
    """artifact_info facts for an onnxruntime InferenceSession."""
    inputs = session.get_inputs()
    outputs = session.get_outputs()
    features = None
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and isinstance(inputs[0].shape[1], int):
        features = inputs[0].shape[1]
    output_names = [output.name for output in outputs]
    # skl2onnx names a classifier's outputs output_label and output_probability.
    methods = ["predict", "transform"]
    if len(outputs) > 1:
        methods.append("predict_proba")
    return {
        "object_type": "onnxruntime.InferenceSession",
        "library": "onnxruntime",
        "library_version": distribution_version("onnxruntime"),
        "n_features_in": features,
        "steps": [],
        "methods": methods,
        "onnx_inputs": [{"name": item.name, "shape": list(item.shape), "type": item.type} for item in inputs],
        "onnx_outputs": output_names,
    }
