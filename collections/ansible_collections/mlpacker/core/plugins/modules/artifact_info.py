#!/usr/bin/python
# ruff: noqa: E402 - Ansible modules keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: artifact_info
short_description: Inspect a pipeline stage artifact on the controller
version_added: 0.1.0
description:
  - Loads a fitted stage (a joblib, pickle, skops or ONNX file, or a Python function) in a child process of
    the controller's Python, with a time limit (O(timeout)) and a memory limit (O(memory_mb)), and
    reports what the deploy roles record and check - its sha256, the library versions it was made with, the
      feature
    count it expects, the methods it has.
  - The stage is loaded by the stage runtime's own code (C(mlpacker_runtime) imported from O(runtime_source)),
    so what loads here loads in the services, and what a service refuses is refused here.
  - The libraries are imported only when needed (joblib, scikit-learn, skops, onnxruntime); a missing one
    fails the
    module with its name.
  - With O(sha256) (the spec's pin), the file's sha256 is compared with it before anything else - before the
    cache is read and before the child process is started; a mismatch fails naming both digests and the file
    is never opened for loading.
  - With O(load=false) nothing is loaded - only the sha256, size, format and the controller's library versions
    are reported (C(mlpacker_inspect_artifacts=false)).
  - A function stage's module must be a file under O(code_dir); anything else (the standard library,
    site-packages) is refused before anything is imported.
  - Runs on the controller (use C(delegate_to=localhost)) and changes nothing but its optional cache.
  - With O(cache_dir), what loading a file tells (type, steps, feature count, methods, untrusted types) is
    kept per file content, format, trusted types and installed library versions, so the next run with the same
    artifact skips the import of its libraries and the load. The sha256 is computed on every run.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - mlpacker.core.runtime_source
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  path:
    description:
      - The artifact file.
      - Mutually exclusive with O(function); one of the two is required.
    type: path
  function:
    description:
      - A function stage, C(package.module:callable), imported from O(code_dir).
    type: str
  code_dir:
    description:
      - Directory holding the code of a function stage. Required with O(function).
    type: path
  format:
    description:
      - Artifact format. By default from the extension of O(path) (C(.joblib), C(.pkl), C(.pickle), C(.skops),
        C(.onnx)),
        V(function) with O(function).
    type: str
    choices: [joblib, pickle, skops, onnx, function]
  trusted_types:
    description:
      - skops only. Types to trust beyond skops' defaults; an artifact with other untrusted types is refused.
    type: list
    elements: str
    default: []
  cache_dir:
    description:
      - Controller directory that keeps what loading each artifact file told (not used for function stages).
      - Created when missing. When it cannot be written, the module warns and goes on without it.
    type: path
  sha256:
    description:
      - The sha256 the file must have (the spec's C(stages[].sha256) pin), 64 hex digits. Checked before the
        cache is read and before the file is loaded.
    type: str
  method:
    description:
      - The stage's method, used to probe the input signature (RV(input_signature)) of a scikit-learn object.
        By default the first of predict, transform, predict_proba, decision_function the object has.
    type: str
  load:
    description:
      - V(false) reports the sha256, size, format and versions without loading anything (the other facts are
        V(null) or empty).
    type: bool
    default: true
  timeout:
    description: Seconds the child process that loads the stage may take (C(mlpacker_inspect_timeout_s)).
    type: int
    default: 300
  memory_mb:
    description:
      - Address space, in MiB, that loading the stage may add to the child process (C(RLIMIT_AS) is set to
        what the child maps at the fork plus this; C(mlpacker_inspect_memory_mb)); V(0) sets no limit.
    type: int
    default: 4096
notes:
  - joblib and pickle files can run arbitrary code when loaded. Only inspect artifacts you trust, and pin them
    (O(sha256)) - a limited child process bounds time and memory, it is not a sandbox.
author:
  - MLPacker contributors (@mlpacker)
"""

EXAMPLES = r"""
- name: Inspect every artifact of the plan
  mlpacker.core.artifact_info:
    path: "{{ item.artifact }}"
    format: "{{ item.format }}"
    trusted_types: "{{ item.trusted_types }}"
  loop: "{{ mlpacker_placement.plan.stages | selectattr('artifact') }}"
  delegate_to: localhost
  run_once: true
  register: mlpacker_artifacts

- name: Inspect a function stage
  mlpacker.core.artifact_info:
    function: features.clean:drop_outliers
    code_dir: "{{ playbook_dir }}/code"
  delegate_to: localhost
"""

RETURN = r"""
sha256:
  description: sha256 of the file; for a function stage, over the files of O(code_dir) (relative paths and
    contents).
  returned: success
  type: str
  sample: 3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8550
format:
  description: The artifact format used.
  returned: success
  type: str
  sample: joblib
size:
  description: File size in bytes (for a function stage, the total size of O(code_dir)).
  returned: success
  type: int
  sample: 5321
object_type:
  description: Public class path of the loaded object, the C(module:callable) of a function.
  returned: success
  type: str
  sample: sklearn.pipeline.Pipeline
library:
  description: Distribution that defines the object's class, V(null) when unknown (plain Python, functions).
  returned: success
  type: str
  sample: scikit-learn
library_version:
  description: Installed version of RV(library) in the controller's Python.
  returned: success
  type: str
  sample: 1.5.2
versions:
  description:
    - Installed versions of the libraries the format depends on (scikit-learn, numpy, scipy, joblib, skops,
      onnxruntime as relevant). Recorded in the runtime configuration so hosts can check they match.
  returned: success
  type: dict
  sample: {scikit-learn: 1.5.2, numpy: 2.1.3, scipy: 1.14.1, joblib: 1.4.2}
n_features_in:
  description: The number of input features the stage expects (ONNX - from the input shape), V(null) when
    unknown.
  returned: success
  type: int
  sample: 4
steps:
  description: The steps of a Pipeline, each with C(name) and C(type); empty for other objects.
  returned: success
  type: list
  elements: dict
  sample: [{name: scaler, type: sklearn.preprocessing.StandardScaler}, {name: clf, type: sklearn.svm.SVC}]
methods:
  description: Which of predict, predict_proba, transform, decision_function the object has (V([call]) for
    functions).
  returned: success
  type: list
  elements: str
  sample: [predict, predict_proba]
onnx_inputs:
  description: ONNX - the model's inputs with C(name), C(shape) (V(null) or a name for dynamic dimensions) and
    C(type).
  returned: when format is onnx
  type: list
  elements: dict
  sample: [{name: X, shape: [null, 4], type: tensor(float)}]
onnx_outputs:
  description: ONNX - the names of the model's outputs (the first is used for predict, the second for
    predict_proba).
  returned: when format is onnx
  type: list
  elements: str
  sample: [output_label, output_probability]
untrusted_types:
  description: skops - the types skops does not trust by default (all of them must be in O(trusted_types));
    else V([]).
  returned: success
  type: list
  elements: str
  sample: [sklearn.ensemble._hist_gradient_boosting.binning._BinMapper]
input_signature:
  description:
    - What the stage's input rows hold, as far as the artifact tells - an ONNX model's input tensor, or a
      scikit-learn object's C(n_features_in_) probed with a row of zeros and a row of strings (C(number) per
      column when only the zeros are taken, else C(any)); V(null) when unknown or not loaded.
    - C(source) (V(artifact)) and C(columns), each with C(name) (from C(feature_names_in_), else V(null)) and
      C(type) (V(number), V(string) or V(any)).
  returned: success
  type: dict
  sample: {source: artifact, columns: [{name: null, type: number}, {name: null, type: number}]}
loaded:
  description: Whether the stage was loaded (V(false) with O(load=false)).
  returned: success
  type: bool
  sample: true
cached:
  description: Whether the facts from loading the file came from O(cache_dir) (the file was not loaded).
  returned: success
  type: bool
  sample: false
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlpacker.core.plugins.module_utils.artifact_pins import (
    PinMismatch,
    normalise_sha256,
    verify_pin,
)
from ansible_collections.mlpacker.core.plugins.module_utils.artifacts import (
    code_dir_digest,
    collect_versions,
    describe_object,
    describe_onnx_session,
    detect_format,
)
from ansible_collections.mlpacker.core.plugins.module_utils.function_source import function_source_problem
from ansible_collections.mlpacker.core.plugins.module_utils.input_signature import (
    object_signature,
    onnx_signature,
)
from ansible_collections.mlpacker.core.plugins.module_utils.limited_child import (
    ChildError,
    LimitExceeded,
    run_limited,
)
from ansible_collections.mlpacker.core.plugins.module_utils.result_cache import (
    entry_path,
    read_entry,
    write_entry,
)
from ansible_collections.mlpacker.core.plugins.module_utils.runtime_contract import PREDICTION_METHODS
from ansible_collections.mlpacker.core.plugins.module_utils.stage_loading import (
    MissingLibraryError,
    RuntimeSourceError,
    StageError,
    error_from_child,
    import_library,
    import_runtime,
    load_object,
    service_config,
)

# What is reported of a stage that was not loaded (load=false).
NOT_LOADED = {
    "object_type": None,
    "library": None,
    "library_version": None,
    "n_features_in": None,
    "steps": [],
    "methods": [],
    "untrusted_types": [],
    "input_signature": None,
}


def load_one(runtime_source, stage, code_dir=None):
    """The stage's object as the runtime loads it; errors name this module's options, not stages[0]."""
    runtime = import_runtime(runtime_source)
    try:
        return load_object(runtime, service_config(runtime, [dict(stage, name="inspected")], code_dir))
    except StageError as exc:
        raise StageError(str(exc).replace("stages[0].artifact", "path").replace("stages[0].", "")) from exc


def in_child(module, func, *args):
    """``func(*args)`` in the limited child process; its errors as the exceptions main() reports."""
    try:
        return run_limited(
            func,
            args,
            timeout_s=module.params["timeout"],
            memory_mb=module.params["memory_mb"],
            what=f"inspecting {module.params['path'] or module.params['function']}",
        )
    except ChildError as exc:
        raise error_from_child(exc) from exc


def describe_function(runtime_source, function, code_dir):
    loaded = load_one(runtime_source, {"function": function, "format": "function"}, code_dir)
    return {"n_features_in": getattr(loaded, "n_features_in", None)}


def inspect_function(module):
    code_dir = module.params["code_dir"]
    if not os.path.isdir(code_dir):
        module.fail_json(msg=f"code_dir: {code_dir} does not exist or is not a directory")
    problem = function_source_problem("function", module.params["function"], code_dir)
    if problem:
        module.fail_json(msg=problem)
    facts = {"n_features_in": None}
    if module.params["load"]:
        facts = in_child(
            module, describe_function, module.params["runtime_source"], module.params["function"], code_dir
        )
    sha256, size = code_dir_digest(code_dir)
    return {
        "sha256": sha256,
        "format": "function",
        "size": size,
        "object_type": module.params["function"],
        "library": None,
        "library_version": None,
        "versions": collect_versions("function"),
        "n_features_in": facts["n_features_in"],
        "steps": [],
        "methods": ["call"],
        "untrusted_types": [],
        "input_signature": None,
        "loaded": module.params["load"],
        "cached": False,
    }


def inspect_file(module):
    path = module.params["path"]
    if not os.path.isfile(path):
        module.fail_json(msg=f"path: {path} does not exist or is not a file")
    try:
        artifact_format = detect_format(path, module.params["format"])
    except ValueError as exc:
        module.fail_json(msg=f"format: {exc}")
    if artifact_format == "function":
        module.fail_json(msg=f"format: 'function' needs the function option, not path {path}")
    # The pin first: a file that is not the pinned one is never loaded, nor answered from the cache.
    try:
        sha256 = verify_pin("sha256", path, module.params["sha256"])
    except PinMismatch as exc:
        module.fail_json(msg=str(exc), expected_sha256=exc.expected, sha256=exc.actual)
    fresh = {
        "sha256": sha256,
        "format": artifact_format,
        "size": os.path.getsize(path),
        "versions": collect_versions(artifact_format),
    }
    if not module.params["load"]:
        return dict(NOT_LOADED, loaded=False, cached=False, **fresh)
    cache_path = None
    if module.params["cache_dir"]:
        cache_path = entry_path(
            module.params["cache_dir"],
            [
                fresh["sha256"],
                artifact_format,
                sorted(module.params["trusted_types"]),
                fresh["versions"],
                module.params["method"],
            ],
        )
        cached = read_entry(cache_path)
        if cached is not None and "input_signature" in cached:
            return dict(cached, loaded=True, cached=True, **fresh)
    facts = in_child(
        module,
        load_and_describe,
        module.params["runtime_source"],
        path,
        artifact_format,
        module.params["trusted_types"],
        module.params["method"],
        sha256,
    )
    if cache_path is not None:
        write_cached_facts(module, cache_path, facts)
    return dict(facts, loaded=True, cached=False, **fresh)


def load_and_describe(runtime_source, path, artifact_format, trusted_types, method=None, sha256=None):
    """Runs in the child process: load the artifact (the runtime compares it with ``sha256`` first) and
    describe it, its input signature included."""
    untrusted_types = []
    if artifact_format == "skops":
        skops_io = import_library("skops.io", "skops", f"inspecting {path}")
        untrusted_types = sorted(skops_io.get_untrusted_types(file=path))
        refused = [name for name in untrusted_types if name not in trusted_types]
        if refused:
            raise StageError(
                f"skops artifact {path} contains types that are not trusted: {', '.join(refused)};"
                " add them to the stage's trusted_types after checking them"
            )
    loaded = load_one(
        runtime_source,
        {"artifact": path, "format": artifact_format, "trusted_types": trusted_types, "sha256": sha256},
    )
    if artifact_format == "onnx":
        facts = describe_onnx_session(loaded)
        facts["input_signature"] = onnx_signature(facts["onnx_inputs"])
    else:
        facts = describe_object(loaded)
        probe_method = method or next((name for name in PREDICTION_METHODS if name in facts["methods"]), None)
        facts["input_signature"] = object_signature(loaded, probe_method, facts["n_features_in"])
    facts["untrusted_types"] = untrusted_types
    return facts


def write_cached_facts(module, cache_path, facts):
    try:
        write_entry(cache_path, facts)
    except OSError as exc:
        module.warn(f"cache_dir: cannot write {cache_path} ({exc}); the artifact is loaded again next run")


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path"},
            "function": {"type": "str"},
            "code_dir": {"type": "path"},
            "format": {"type": "str", "choices": ["joblib", "pickle", "skops", "onnx", "function"]},
            "trusted_types": {"type": "list", "elements": "str", "default": []},
            "cache_dir": {"type": "path"},
            "runtime_source": {"type": "path"},
            "sha256": {"type": "str"},
            "method": {"type": "str"},
            "load": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 300},
            "memory_mb": {"type": "int", "default": 4096},
        },
        mutually_exclusive=[("path", "function")],
        required_one_of=[("path", "function")],
        required_by={"function": "code_dir"},
        supports_check_mode=True,
    )
    what = module.params["path"] or module.params["function"]
    if not module.params["runtime_source"]:
        module.fail_json(msg="runtime_source: the folder of the stage runtime (mlpacker_runtime) is needed")
    if module.params["sha256"]:
        try:
            module.params["sha256"] = normalise_sha256(module.params["sha256"])
        except ValueError as exc:
            module.fail_json(msg=f"sha256: {exc}")
        if module.params["function"]:
            module.fail_json(msg="sha256: only artifact files are pinned, not function stages")
    if module.params["timeout"] < 1:
        module.fail_json(msg=f"timeout: {module.params['timeout']} must be at least 1 second")
    if module.params["memory_mb"] < 0:
        module.fail_json(msg=f"memory_mb: {module.params['memory_mb']} must be 0 (no limit) or more")
    try:
        if module.params["function"]:
            facts = inspect_function(module)
        else:
            facts = inspect_file(module)
    except RuntimeSourceError as exc:
        module.fail_json(msg=str(exc))
    except MissingLibraryError as exc:
        module.fail_json(msg=f"cannot inspect {what}: {exc}", missing_library=exc.library)
    except StageError as exc:
        module.fail_json(msg=f"cannot inspect {what}: {exc}")
    except LimitExceeded as exc:
        module.fail_json(msg=f"cannot inspect {what}: {exc}")
    except ChildError as exc:
        # Unpickling runs the artifact's own code: any error it raises is the artifact's problem, named here.
        detail = exc.message or "no detail (is the file truncated, or not in this format?)"
        module.fail_json(msg=f"cannot load {what}: {exc.type_name}: {detail}")
    except OSError as exc:
        module.fail_json(msg=f"cannot read {what}: {exc}")
    module.exit_json(changed=False, **facts)


if __name__ == "__main__":
    main()
