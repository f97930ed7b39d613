"""Stage loaders: joblib/pickle, skops (explicit trusted types), ONNX (optional) and plain Python functions.

Every loader returns a ``Stage``: a name and a callable taking the previous stage's output. Integrity
(sha256) and library versions are checked before anything is unpickled.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pickle
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mlpacker_runtime.input_signature import InputSignature

log = logging.getLogger("mlpacker_runtime.loading")


class StageLoadError(Exception):
    """A stage could not be loaded; the message starts with the config field it concerns."""


@dataclass
class Stage:
    name: str
    method: str
    format: str
    run: Callable[[Any], Any]
    expected_features: int | None = None
    sha256: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    artifact: str | None = None
    function: str | None = None
    input_signature: InputSignature | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "method": self.method,
            "artifact": self.artifact,
            "function": self.function,
            "sha256": self.sha256,
            "expected_features": self.expected_features,
            "versions_recorded": self.versions,
        }


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_version(dist: str) -> str | None:
    if dist.lower() == "python":
        return platform.python_version()
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_versions(field_prefix: str, recorded: dict[str, str], *, allow_mismatch: bool) -> list[str]:
    """Compare versions recorded at packaging with the installed ones.

    Returns the mismatch messages; raises StageLoadError unless mismatches are allowed.
    """
    mismatches = []
    for dist, wanted in sorted(recorded.items()):
        have = installed_version(dist)
        if have != wanted:
            mismatches.append(
                f"{field_prefix}.versions.{dist}: packaged with {dist} {wanted}, "
                f"installed {dist} {have if have is not None else '(not installed)'}"
            )
    if mismatches and not allow_mismatch:
        raise StageLoadError("; ".join(mismatches) + " (set allow_version_mismatch: true to run anyway)")
    for message in mismatches:
        log.warning("version mismatch allowed by allow_version_mismatch: %s", message)
    return mismatches


def load_object(config: dict[str, Any], index: int) -> Any:
    """Check and load stage ``index`` of a validated config, before any method is bound.

    Returns the fitted object, the ONNX InferenceSession or the function. The file, its sha256 and the
    recorded library versions are checked first. The controller's artifact_info inspects this object.
    """
    spec = config["stages"][index]
    field_prefix = f"stages[{index}]"
    fmt = spec["format"]
    artifact = spec["artifact"]
    if fmt != "function":
        path = Path(artifact)
        if not path.is_file():
            raise StageLoadError(f"{field_prefix}.artifact: file not found: {artifact}")
        # No digest, no load: an artifact is only unpickled once its content is the one recorded (or pinned
        # in the spec) at packaging time.
        if not spec["sha256"]:
            raise StageLoadError(
                f"{field_prefix}.sha256: no sha256 recorded for {artifact}; refusing to load an artifact"
                " whose content cannot be checked (the deploy roles record it; set it when writing a"
                " config by hand)"
            )
        actual = file_sha256(path)
        if actual != spec["sha256"]:
            raise StageLoadError(
                f"{field_prefix}.sha256: artifact {artifact} has sha256 {actual}, "
                f"recorded {spec['sha256']} (file changed or corrupted)"
            )
    # Versions are checked before unpickling: an incompatible library can fail in obscure ways while loading.
    check_versions(field_prefix, spec["versions"], allow_mismatch=config["allow_version_mismatch"])
    reader = {
        "joblib": _read_joblib,
        "pickle": _read_pickle,
        "skops": _read_skops,
        "onnx": _read_onnx,
        "function": _read_function,
    }[fmt]
    return reader(config, spec, field_prefix)


def load_stage(config: dict[str, Any], index: int) -> Stage:
    spec = config["stages"][index]
    field_prefix = f"stages[{index}]"
    obj = load_object(config, index)
    if spec["format"] == "onnx":
        runner = _OnnxRunner(obj, spec["method"], field_prefix)
        stage = Stage(
            name=spec["name"],
            method=spec["method"],
            format="onnx",
            run=runner,
            expected_features=runner.expected_features,
        )
    else:
        stage = _object_stage(obj, spec, field_prefix)
    stage.sha256 = spec["sha256"]
    stage.versions = dict(spec["versions"])
    stage.artifact = spec["artifact"]
    stage.function = spec["function"]
    stage.input_signature = InputSignature.from_config(spec.get("input_signature"))
    if (
        stage.input_signature is not None
        and stage.expected_features is not None
        and stage.input_signature.features != stage.expected_features
    ):
        raise StageLoadError(
            f"{field_prefix}.input_signature: {stage.input_signature.features} columns, but the stage takes "
            f"{stage.expected_features} features"
        )
    log.info(
        "loaded stage %s (%s, method %s) from %s",
        stage.name,
        spec["format"],
        stage.method,
        spec["artifact"] or spec["function"],
    )
    return stage


def load_stages(config: dict[str, Any]) -> list[Stage]:
    return [load_stage(config, index) for index in range(len(config["stages"]))]


def _bind_method(obj: Any, spec: dict[str, Any], field_prefix: str) -> Callable[[Any], Any]:
    method = spec["method"]
    if method == "call":
        if not callable(obj):
            raise StageLoadError(f"{field_prefix}.method: a {type(obj).__name__} object is not callable")
        return obj
    bound = getattr(obj, method, None)
    if not callable(bound):
        raise StageLoadError(f"{field_prefix}.method: a {type(obj).__name__} object has no method {method!r}")
    return bound


def _expected_features(obj: Any) -> int | None:
    count = getattr(obj, "n_features_in_", None)
    return int(count) if isinstance(count, (int, np.integer)) else None


def _object_stage(obj: Any, spec: dict[str, Any], field_prefix: str) -> Stage:
    return Stage(
        name=spec["name"],
        method=spec["method"],
        format=spec["format"],
        run=_bind_method(obj, spec, field_prefix),
        expected_features=_expected_features(obj),
    )


def _ensure_code_dir_on_path(config: dict[str, Any]) -> None:
    # Pickled objects may reference helper code shipped with the pipeline, so it must be importable.
    code_dir = config.get("code_dir")
    if code_dir and code_dir not in sys.path:
        sys.path.insert(0, code_dir)


def _read_joblib(config: dict[str, Any], spec: dict[str, Any], field_prefix: str) -> Any:
    import joblib

    _ensure_code_dir_on_path(config)
    try:
        obj = joblib.load(spec["artifact"])
    except Exception as exc:
        raise StageLoadError(
            f"{field_prefix}.artifact: cannot load {spec['artifact']} with joblib: {exc}"
        ) from exc
    return obj


def _read_pickle(config: dict[str, Any], spec: dict[str, Any], field_prefix: str) -> Any:
    _ensure_code_dir_on_path(config)
    try:
        with open(spec["artifact"], "rb") as handle:
            obj = pickle.load(handle)
    except pickle.UnpicklingError as exc:
        raise StageLoadError(
            f"{field_prefix}.artifact: cannot unpickle {spec['artifact']}: {exc}; if it was written by"
            " joblib.dump, set format: joblib (or name it .joblib)"
        ) from exc
    except Exception as exc:
        raise StageLoadError(f"{field_prefix}.artifact: cannot unpickle {spec['artifact']}: {exc}") from exc
    return obj


def _read_skops(config: dict[str, Any], spec: dict[str, Any], field_prefix: str) -> Any:
    try:
        import skops.io as sio
    except ImportError as exc:
        raise StageLoadError(
            f"{field_prefix}.format: 'skops' needs the skops package (pip install 'mlpacker-runtime[skops]')"
        ) from exc
    _ensure_code_dir_on_path(config)
    trusted = list(spec["trusted_types"])
    try:
        untrusted = sio.get_untrusted_types(file=spec["artifact"])
    except Exception as exc:
        raise StageLoadError(
            f"{field_prefix}.artifact: {spec['artifact']} is not a readable skops file: {exc}"
        ) from exc
    missing = sorted(set(untrusted) - set(trusted))
    if missing:
        raise StageLoadError(
            f"{field_prefix}.trusted_types: {spec['artifact']} contains untrusted types {missing}; "
            "review them and add them to trusted_types to load this file"
        )
    try:
        obj = sio.load(spec["artifact"], trusted=trusted)
    except Exception as exc:
        raise StageLoadError(
            f"{field_prefix}.artifact: cannot load {spec['artifact']} with skops: {exc}"
        ) from exc
    return obj


class _OnnxRunner:
    """Runs an onnxruntime session and picks the output matching the configured method."""

    def __init__(self, session: Any, method: str, field_prefix: str):
        self.session = session
        first_input = session.get_inputs()[0]
        self.input_name = first_input.name
        self.input_dtype = {
            "tensor(float)": np.float32,
            "tensor(double)": np.float64,
            "tensor(int64)": np.int64,
            "tensor(int32)": np.int32,
            "tensor(string)": np.str_,
        }.get(first_input.type, np.float32)
        shape = first_input.shape
        self.expected_features = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        names = [output.name for output in session.get_outputs()]
        if method == "predict":
            self.output_name = "label" if "label" in names else names[0]
        elif method == "predict_proba":
            candidates = [name for name in names if name in ("probabilities", "output_probability")]
            if not candidates and len(names) < 2:
                raise StageLoadError(f"{field_prefix}.method: ONNX model has no probability output ({names})")
            self.output_name = candidates[0] if candidates else names[1]
        else:
            self.output_name = names[0]

    def __call__(self, data: Any) -> Any:
        array = np.asarray(data, dtype=self.input_dtype)
        (result,) = self.session.run([self.output_name], {self.input_name: array})
        if isinstance(result, list) and result and isinstance(result[0], dict):
            # skl2onnx's ZipMap output: one {class: probability} dict per row; keep the class order.
            keys = sorted(result[0])
            return np.asarray([[row[key] for key in keys] for row in result])
        return result


def _read_onnx(config: dict[str, Any], spec: dict[str, Any], field_prefix: str) -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise StageLoadError(
            f"{field_prefix}.format: 'onnx' needs onnxruntime, which is not installed "
            "(pip install 'mlpacker-runtime[onnx]')"
        ) from exc
    try:
        session = onnxruntime.InferenceSession(spec["artifact"], providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise StageLoadError(
            f"{field_prefix}.artifact: cannot load ONNX model {spec['artifact']}: {exc}"
        ) from exc
    return session


def _inside(path: str | Path, folder: str | Path) -> bool:
    real_path, real_folder = os.path.realpath(path), os.path.realpath(folder)
    return real_path == real_folder or real_path.startswith(real_folder.rstrip(os.sep) + os.sep)


def function_module_file(code_dir: str, module_name: str) -> Path | None:
    """The file of ``module_name`` (dotted) under ``code_dir``: ``a/b.py`` or ``a/b/__init__.py``; None when
    code_dir holds neither (inside code_dir after symlinks)."""
    base = Path(code_dir).joinpath(*module_name.split("."))
    for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if candidate.is_file() and _inside(candidate, code_dir):
            return candidate
    return None


def _module_from_code_dir(code_dir: str, module_name: str, field_prefix: str) -> Any:
    """Import ``module_name`` only when it (and each parent package) is a file under ``code_dir``: never the
    standard library, site-packages or a module already imported from elsewhere (``subprocess``)."""
    refused = (
        f"{field_prefix}.function: module {module_name!r} is not a file under code_dir {code_dir};"
        " function stages may only use the pipeline's own code (not the standard library or installed"
        " packages)"
    )
    if function_module_file(code_dir, module_name) is None:
        raise StageLoadError(refused)
    parts = module_name.split(".")
    for depth in range(1, len(parts)):
        loaded = sys.modules.get(".".join(parts[:depth]))
        if loaded is not None and not _from_code_dir(loaded, code_dir):
            raise StageLoadError(refused)
    loaded = sys.modules.get(module_name)
    if loaded is not None and not _from_code_dir(loaded, code_dir):
        raise StageLoadError(refused)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise StageLoadError(
            f"{field_prefix}.function: cannot import module {module_name!r} from {code_dir}: {exc}"
        ) from exc
    if not _from_code_dir(module, code_dir):
        raise StageLoadError(refused)
    return module


def _from_code_dir(module: Any, code_dir: str) -> bool:
    location = getattr(module, "__file__", None)
    if location:
        return _inside(location, code_dir)
    # A namespace package (a folder without __init__.py): every folder it spans must be under code_dir.
    paths = list(getattr(module, "__path__", []) or [])
    return bool(paths) and all(_inside(path, code_dir) for path in paths)


def _read_function(config: dict[str, Any], spec: dict[str, Any], field_prefix: str) -> Any:
    code_dir = config["code_dir"]
    if not code_dir or not Path(code_dir).is_dir():
        raise StageLoadError(f"code_dir: directory not found: {code_dir}")
    _ensure_code_dir_on_path(config)
    module_name, _colon, attr = spec["function"].partition(":")
    module = _module_from_code_dir(code_dir, module_name, field_prefix)
    obj = getattr(module, attr, None)
    if obj is None:
        raise StageLoadError(f"{field_prefix}.function: module {module_name!r} has no attribute {attr!r}")
    return obj
