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
  - Loads a fitted stage (a joblib, pickle, skops or ONNX file, or a Python function) in the controller's
    Python and
    reports what the deploy roles record and check - its sha256, the library versions it was made with, the
      feature
    count it expects, the methods it has.
  - The stage is loaded by the stage runtime's own code (C(mlpacker_runtime) imported from O(runtime_source)),
    so what loads here loads in the services, and what a service refuses is refused here.
  - The libraries are imported only when needed (joblib, scikit-learn, skops, onnxruntime); a missing one
    fails the
    module with its name.
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
notes:
  - joblib and pickle files can run arbitrary code when loaded. Only inspect artifacts you trust.
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
cached:
  description: Whether the facts from loading the file came from O(cache_dir) (the file was not loaded).
  returned: success
  type: bool
  sample: false
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlpacker.core.plugins.module_utils.artifacts import (
    code_dir_digest,
    collect_versions,
    describe_object,
    describe_onnx_session,
    detect_format,
    sha256_file,
)
from ansible_collections.mlpacker.core.plugins.module_utils.result_cache import (
    entry_path,
    read_entry,
    write_entry,
)
from ansible_collections.mlpacker.core.plugins.module_utils.stage_loading import (
    MissingLibraryError,
    RuntimeSourceError,
    StageError,
    import_library,
    import_runtime,
    load_object,
    service_config,
)


def load_one(runtime_source, stage, code_dir=None):
    """The stage's object as the runtime loads it; errors name this module's options, not stages[0]."""
    runtime = import_runtime(runtime_source)
    try:
        return load_object(runtime, service_config(runtime, [dict(stage, name="inspected")], code_dir))
    except StageError as exc:
        raise StageError(str(exc).replace("stages[0].artifact", "path").replace("stages[0].", "")) from exc


def inspect_function(module):
    code_dir = module.params["code_dir"]
    if not os.path.isdir(code_dir):
        module.fail_json(msg=f"code_dir: {code_dir} does not exist or is not a directory")
    function = load_one(
        module.params["runtime_source"],
        {"function": module.params["function"], "format": "function"},
        code_dir,
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
        "n_features_in": getattr(function, "n_features_in", None),
        "steps": [],
        "methods": ["call"],
        "untrusted_types": [],
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
    fresh = {
        "sha256": sha256_file(path),
        "format": artifact_format,
        "size": os.path.getsize(path),
        "versions": collect_versions(artifact_format),
    }
    cache_path = None
    if module.params["cache_dir"]:
        cache_path = entry_path(
            module.params["cache_dir"],
            [fresh["sha256"], artifact_format, sorted(module.params["trusted_types"]), fresh["versions"]],
        )
        cached = read_entry(cache_path)
        if cached is not None:
            return dict(cached, cached=True, **fresh)
    facts = load_and_describe(
        module.params["runtime_source"], path, artifact_format, module.params["trusted_types"]
    )
    if cache_path is not None:
        write_cached_facts(module, cache_path, facts)
    return dict(facts, cached=False, **fresh)


def load_and_describe(runtime_source, path, artifact_format, trusted_types):
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
        runtime_source, {"artifact": path, "format": artifact_format, "trusted_types": trusted_types}
    )
    facts = describe_onnx_session(loaded) if artifact_format == "onnx" else describe_object(loaded)
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
        },
        mutually_exclusive=[("path", "function")],
        required_one_of=[("path", "function")],
        required_by={"function": "code_dir"},
        supports_check_mode=True,
    )
    what = module.params["path"] or module.params["function"]
    if not module.params["runtime_source"]:
        module.fail_json(msg="runtime_source: the folder of the stage runtime (mlpacker_runtime) is needed")
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
    except Exception as exc:  # pylint: disable=broad-except
        # Unpickling runs the artifact's own code: any error it raises is the artifact's problem, named here.
        detail = str(exc) or "no detail (is the file truncated, or not in this format?)"
        module.fail_json(msg=f"cannot load {what}: {type(exc).__name__}: {detail}")
    module.exit_json(changed=False, **facts)


if __name__ == "__main__":
    main()
