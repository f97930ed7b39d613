# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Load and run pipeline stages on the controller with the stage runtime's own code (artifact_info,
pipeline_reference).

The controller computes what a deployed service computes: the modules import ``mlpacker_runtime`` from
``runtime_source`` (the collection's ``runtime/`` folder), build the runtime configuration a service of
those stages gets and validate it with the runtime's ``build_config``, load the stages with its ``loading``,
run them with its ``Chain`` and convert the output with its ``to_jsonsafe``. Only the controller's part is
here: importing the runtime from a path, naming a library the controller's Python lacks, and turning the
runtime's errors into messages.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from types import SimpleNamespace
from typing import Any

from ansible_collections.mlpacker.core.plugins.module_utils.runtime_contract import STAGE_KEYS

RUNTIME_PACKAGE = "mlpacker_runtime"
# Module and distribution each format loads with, imported first so a missing one is named.
FORMAT_LIBRARIES = {
    "joblib": ("joblib", "joblib"),
    "skops": ("skops.io", "skops"),
    "onnx": ("onnxruntime", "onnxruntime"),
}


class MissingLibraryError(Exception):
    """A library needed to load a stage is not installed in the controller's Python."""

    def __init__(self, library: str, needed_for: str, message: str | None = None):
        self.library = library
        super().__init__(
            message
            or f"the Python library '{library}' is needed for {needed_for}"
            f" but is not installed in the controller's Python ({sys.executable})"
        )


class StageError(Exception):
    """A stage cannot be loaded or run; the message names the stage (or its field) and the cause."""


class RuntimeSourceError(Exception):
    """The stage runtime cannot be imported from runtime_source."""


def import_library(module: str, distribution: str, needed_for: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingLibraryError(distribution, needed_for) from exc


def import_runtime(runtime_source: str) -> SimpleNamespace:
    """The runtime's ``config``, ``loading`` and ``chain`` modules, imported from ``runtime_source`` (the
    folder holding ``mlpacker_runtime/``)."""
    package_dir = os.path.join(runtime_source, RUNTIME_PACKAGE)
    if not os.path.isfile(os.path.join(package_dir, "__init__.py")):
        raise RuntimeSourceError(
            f"runtime_source: {runtime_source} holds no {RUNTIME_PACKAGE} package"
            f" ({os.path.join(package_dir, '__init__.py')} is missing)"
        )
    import_library("numpy", "numpy", "the stage runtime")
    if runtime_source not in sys.path:
        sys.path.insert(0, runtime_source)
    try:
        modules = {
            name: importlib.import_module(f"{RUNTIME_PACKAGE}.{name}")
            for name in ("config", "loading", "chain")
        }
    except Exception as exc:  # pylint: disable=broad-except
        # A broken or foreign runtime tree: whatever its import raises is reported against runtime_source.
        raise RuntimeSourceError(
            f"runtime_source: cannot import {RUNTIME_PACKAGE} from {runtime_source}:"
            f" {type(exc).__name__}: {exc}"
        ) from exc
    loaded_from = os.path.dirname(os.path.realpath(sys.modules[RUNTIME_PACKAGE].__file__))
    if loaded_from != os.path.realpath(package_dir):
        raise RuntimeSourceError(
            f"runtime_source: {RUNTIME_PACKAGE} is already imported from {loaded_from},"
            f" not from {runtime_source}"
        )
    # The runtime logs for a service's log; a module reports in its result, so nothing goes to stderr.
    runtime_log = logging.getLogger(RUNTIME_PACKAGE)
    if not any(isinstance(handler, logging.NullHandler) for handler in runtime_log.handlers):
        runtime_log.addHandler(logging.NullHandler())
    return SimpleNamespace(**modules)


def service_config(
    runtime: SimpleNamespace, stages: list[dict[str, Any]], code_dir: str | None = None
) -> dict:
    """The validated runtime configuration of one service that runs ``stages`` in order, as the pipeline role
    writes it but without the recorded versions the hosts check. A stage's ``sha256`` (the digest the caller
    computed, or pinned, before loading) is kept: the runtime refuses an artifact without one and compares the
    file with it right before loading.

    A stage may set its own ``code_dir``: it is put on ``sys.path`` (the runtime has one ``code_dir``, which
    is ``code_dir`` or else the first stage's).
    """
    raw_stages = []
    for index, stage in enumerate(stages):
        entry = {key: stage[key] for key in STAGE_KEYS if stage.get(key) not in (None, "")}
        entry.setdefault("name", f"stages[{index}]")
        if stage.get("sha256"):
            entry["sha256"] = stage["sha256"]
        raw_stages.append(entry)
        own_code_dir = stage.get("code_dir")
        if own_code_dir:
            if not os.path.isdir(own_code_dir):
                raise StageError(f"stages[{index}].code_dir: directory not found: {own_code_dir}")
            code_dir = code_dir or own_code_dir
            if own_code_dir not in sys.path:
                sys.path.insert(0, own_code_dir)
    raw = {"pipeline": "controller", "service": "controller", "code_dir": code_dir, "stages": raw_stages}
    try:
        return runtime.config.build_config(raw)
    except runtime.config.ConfigError as exc:
        raise StageError("; ".join(exc.problems)) from exc


def check_libraries(config: dict[str, Any]) -> None:
    """Raise MissingLibraryError naming the first library a stage's format needs that cannot be imported."""
    for stage in config["stages"]:
        if stage["format"] in FORMAT_LIBRARIES:
            module, distribution = FORMAT_LIBRARIES[stage["format"]]
            import_library(module, distribution, f"loading {stage['artifact']} ({stage['format']})")


def load_object(runtime: SimpleNamespace, config: dict[str, Any], index: int = 0) -> Any:
    """Stage ``index``'s object as the runtime loads it, before a method is bound: the fitted object, the
    ONNX InferenceSession or the function."""
    check_libraries({"stages": [config["stages"][index]]})
    try:
        return runtime.loading.load_object(config, index)
    except runtime.loading.StageLoadError as exc:
        raise StageError(str(exc)) from exc


def load_chain(runtime: SimpleNamespace, config: dict[str, Any]) -> Any:
    """The runtime's Chain of every stage of ``config``, loaded by the runtime."""
    check_libraries(config)
    try:
        return runtime.chain.Chain(runtime.loading.load_stages(config))
    except runtime.loading.StageLoadError as exc:
        raise StageError(str(exc)) from exc


def predict(runtime: SimpleNamespace, chain: Any, instances: Any) -> Any:
    """What a service running ``chain`` answers for ``instances``: the runtime's JSON-safe predictions."""
    try:
        return chain.predict(instances)
    except runtime.chain.InputError as exc:
        raise StageError(f"the instances do not fit the first stage: {exc}") from exc
    except runtime.chain.StageError as exc:
        cause = exc.__cause__
        methods = {stage.name: stage.method for stage in chain.stages}
        raise StageError(
            f"stage {exc.stage!r} ({methods.get(exc.stage)}) failed: {type(cause).__name__}: {cause}"
        ) from exc


def error_from_child(error: Any) -> Exception:
    """The exception a module handles for a ``limited_child.ChildError`` (the child's exceptions come back as
    type name and message): MissingLibraryError, RuntimeSourceError, StageError, or ``error`` itself (an
    exception the artifact's own code raised while loading)."""
    if error.type_name == "MissingLibraryError":
        return MissingLibraryError(error.library or "?", "", message=error.message)
    if error.type_name == "RuntimeSourceError":
        return RuntimeSourceError(error.message)
    if error.type_name in ("StageError", "UnknownFeatureCount"):
        return StageError(error.message)
    return error
