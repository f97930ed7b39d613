#!/usr/bin/python
# ruff: noqa: E402 - Ansible modules keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: pipeline_reference
short_description: Compute a pipeline's reference predictions on the controller
version_added: 0.1.0
description:
  - Runs instances through the pipeline's stages in the controller's Python with the stage runtime's own code
    (C(mlpacker_runtime) imported from O(runtime_source)) - its configuration check, loading, chain, input
    check and JSON conversion, as one service that runs every stage does - and returns the predictions. The
    deploy smoke test sends the same instances to the deployed pipeline (M(mlpacker.core.pipeline_probe)) and
    compares.
  - Outputs are converted as a service converts them - numpy arrays and scalars, pandas DataFrames and Series,
    scipy sparse matrices, strings; NaN and infinities become V(null).
  - When O(instances) is not given, generates O(n_samples) rows of random normal floats (rounded to 4
    decimals,
    deterministic for a O(seed)) with the first stage's feature count. If that count is unknown (a function
      stage,
    an estimator without C(n_features_in_)) the module fails and asks for C(mlpacker_smoke_instances).
  - The stages are loaded and run in a child process with a time limit (O(timeout)) and a memory limit
    (O(memory_mb)). Before it starts, each artifact is compared with its pin (a stage's C(sha256), the spec's
    C(stages[].sha256)); a mismatch fails naming the stage and both digests, and nothing is loaded.
  - Runs on the controller (use C(delegate_to=localhost) and C(run_once=true)) and changes nothing but its
    optional cache.
  - With O(cache_dir), the result is kept per stage description, artifact content (sha256), function code,
    input rows, installed library versions and the runtime's code, so a re-run with the same inputs skips
    loading the stages.
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
  stages:
    description:
      - The stages in order, as in the plan of M(mlpacker.core.pipeline_plan) (C(plan.stages)).
      - Each uses C(artifact) or C(function), C(format), C(method), C(trusted_types), C(name) and optionally
        C(code_dir) and C(sha256) (a pin); other keys are ignored. The runtime fills in what is not given
        (the format from the artifact's extension, the method - V(call) for functions, V(predict) for the
        last stage, else V(transform)).
    type: list
    elements: dict
    required: true
  code_dir:
    description:
      - Code directory for function stages that do not set their own C(code_dir) (the plan's C(code_dir)).
    type: path
  instances:
    description:
      - The input rows. When not given, rows are generated (see O(n_samples) and O(seed)).
    type: list
    elements: raw
  n_samples:
    description: How many rows to generate when O(instances) is not given.
    type: int
    default: 5
  seed:
    description: Random seed for the generated rows.
    type: int
    default: 0
  cache_dir:
    description:
      - Controller directory that keeps computed results. Created when missing. When it cannot be written,
        the module warns and goes on without it.
    type: path
  timeout:
    description:
      - Seconds the child process that loads and runs the stages may take (C(mlpacker_inspect_timeout_s)).
    type: int
    default: 300
  memory_mb:
    description:
      - Address space, in MiB, that loading and running the stages may add to the child process
        (C(RLIMIT_AS) is set to what the child maps at the fork plus this;
        C(mlpacker_inspect_memory_mb)); V(0) sets no limit.
    type: int
    default: 4096
requirements:
  - numpy, and the libraries the stages need (scikit-learn, joblib, skops, onnxruntime) in the controller's
    Python.
  - The stage runtime's source (O(runtime_source)); it ships inside this collection.
author:
  - MLPacker contributors (@mlpacker)
"""

EXAMPLES = r"""
- name: Compute reference outputs for the smoke test
  mlpacker.core.pipeline_reference:
    stages: "{{ mlpacker_placement.plan.stages }}"
    code_dir: "{{ mlpacker_placement.plan.code_dir | default(omit, true) }}"
    instances: "{{ mlpacker_smoke_instances | default(omit) }}"
  delegate_to: localhost
  run_once: true
  register: mlpacker_reference
"""

RETURN = r"""
instances:
  description: The input rows used (given or generated).
  returned: success
  type: list
  elements: raw
  sample: [[0.1257, -0.1321, 0.6404, 0.1049]]
predictions:
  description: The pipeline's output for RV(instances), JSON-safe as a service answers it (numpy arrays,
    DataFrames and sparse matrices as lists, numpy scalars as numbers, NaN as V(null)).
  returned: success
  type: list
  elements: raw
  sample: [1]
cached:
  description: Whether the result came from O(cache_dir) (no stage was loaded).
  returned: success
  type: bool
  sample: false
"""

import os
import sys

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlpacker.core.plugins.module_utils.artifact_pins import (
    PinMismatch,
    normalise_sha256,
    verify_pin,
)
from ansible_collections.mlpacker.core.plugins.module_utils.artifacts import (
    VERSIONED_LIBRARIES,
    code_dir_digest,
    collect_versions,
    n_features_in,
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
from ansible_collections.mlpacker.core.plugins.module_utils.stage_loading import (
    RUNTIME_PACKAGE,
    MissingLibraryError,
    RuntimeSourceError,
    StageError,
    error_from_child,
    import_library,
    import_runtime,
    load_chain,
    predict,
    service_config,
)


class UnknownFeatureCount(StageError):
    """No rows were given and the first stage does not tell how many features a row has."""


def check_stages(stages):
    """Messages for stages that name neither an artifact nor a function."""
    problems = []
    for index, stage in enumerate(stages):
        if bool(stage.get("artifact")) == bool(stage.get("function")):
            problems.append(
                f"stages[{index}] ({stage.get('name')}): needs exactly one of artifact or function"
            )
    return problems


def pinned_digests(stages):
    """Each artifact stage with ``sha256`` set to its file's digest (the runtime compares the file with it
    again right before loading), after comparing it with the stage's pin: PinMismatch naming the stage."""
    checked = []
    for index, stage in enumerate(stages):
        stage = dict(stage)
        if stage.get("artifact"):
            pin = normalise_sha256(stage["sha256"]) if stage.get("sha256") else None
            what = f"stages[{index}] ({stage.get('name')}).sha256"
            stage["sha256"] = verify_pin(what, stage["artifact"], pin)
        checked.append(stage)
    return checked


def first_stage_features(chain):
    """The feature count the service checks requests against; else what the first stage's object tells."""
    first = chain.stages[0]
    if first.expected_features:
        return first.expected_features
    target = getattr(first.run, "__self__", first.run)  # the object behind a bound method
    if first.format == "function":
        return getattr(target, "n_features_in", None)
    return n_features_in(target)


def generate_instances(n_features, n_samples, seed):
    numpy = import_library("numpy", "numpy", "generating smoke test instances")
    return numpy.random.default_rng(seed).normal(size=(n_samples, n_features)).round(4).tolist()


def reference(params):
    """The rows and what one service running every stage answers for them (StageError, MissingLibraryError,
    RuntimeSourceError)."""
    runtime = import_runtime(params["runtime_source"])
    stages = params["stages"]
    chain = load_chain(runtime, service_config(runtime, stages, params["code_dir"]))
    instances = params["instances"]
    if not instances:
        features = first_stage_features(chain)
        if not features:
            raise UnknownFeatureCount(
                f"cannot generate smoke test instances: the feature count of the first stage"
                f" {stages[0].get('name')!r} is unknown; set mlpacker_smoke_instances (a list of input rows)"
            )
        instances = generate_instances(features, params["n_samples"], params["seed"])
    return {"instances": instances, "predictions": predict(runtime, chain, instances)}


def cache_key(params):
    """Everything the result depends on: the stages as described, each artifact's content, the function code,
    the rows asked for, and the controller's Python and library versions."""
    stages = []
    code_dirs = set()
    for stage in params["stages"]:
        described = dict(stage)
        if stage.get("artifact"):
            described["artifact_sha256"] = stage["sha256"]
        if stage.get("function"):
            code_dirs.add(stage.get("code_dir") or params["code_dir"])
        stages.append(described)
    formats = sorted({stage.get("format") or "function" for stage in params["stages"]})
    libraries = sorted({name for fmt in formats for name in VERSIONED_LIBRARIES.get(fmt, ("numpy",))})
    package = os.path.join(params["runtime_source"], RUNTIME_PACKAGE)
    return {
        "stages": stages,
        "code": {p: code_dir_digest(p)[0] for p in sorted(code_dirs - {None}) if os.path.isdir(p)},
        # the runtime's code by content (never its path): it loads, runs and converts
        "runtime": code_dir_digest(package)[0] if os.path.isdir(package) else None,
        "rows": [params["instances"], params["n_samples"], params["seed"]],
        "python": list(sys.version_info[:3]),
        "versions": collect_versions("function", tuple(libraries)),
    }


def main():
    module = AnsibleModule(
        argument_spec={
            "stages": {"type": "list", "elements": "dict", "required": True},
            "code_dir": {"type": "path"},
            "instances": {"type": "list", "elements": "raw"},
            "n_samples": {"type": "int", "default": 5},
            "seed": {"type": "int", "default": 0},
            "cache_dir": {"type": "path"},
            "runtime_source": {"type": "path"},
            "timeout": {"type": "int", "default": 300},
            "memory_mb": {"type": "int", "default": 4096},
        },
        supports_check_mode=True,
    )
    stages = module.params["stages"]
    if not module.params["runtime_source"]:
        module.fail_json(msg="runtime_source: the folder of the stage runtime (mlpacker_runtime) is needed")
    if not stages:
        module.fail_json(msg="stages: at least one stage is needed")
    problems = check_stages(stages)
    if problems:
        module.fail_json(msg="; ".join(problems))
    if module.params["n_samples"] < 1:
        module.fail_json(msg=f"n_samples: {module.params['n_samples']} must be at least 1")
    if module.params["timeout"] < 1 or module.params["memory_mb"] < 0:
        module.fail_json(
            msg=f"timeout ({module.params['timeout']}) must be at least 1 and memory_mb"
            f" ({module.params['memory_mb']}) 0 (no limit) or more"
        )
    # The pins first: nothing is loaded (nor answered from the cache) for a file that is not the pinned one.
    try:
        module.params["stages"] = pinned_digests(stages)
    except PinMismatch as exc:
        module.fail_json(msg=f"cannot compute reference predictions: {exc}")
    except ValueError as exc:
        module.fail_json(msg=f"stages: a sha256 pin is not valid: {exc}")
    except OSError as exc:
        module.fail_json(msg=f"cannot read a stage's artifact: {exc}")
    cache_path = None
    if module.params["cache_dir"]:
        try:
            cache_path = entry_path(module.params["cache_dir"], cache_key(module.params))
        except OSError as exc:
            module.fail_json(msg=f"cannot read a stage's artifact or code: {exc}")
        cached = read_entry(cache_path)
        if cached is not None and {"instances", "predictions"} <= set(cached):
            module.exit_json(changed=False, cached=True, **cached)
    try:
        try:
            result = run_limited(
                reference,
                (module.params,),
                timeout_s=module.params["timeout"],
                memory_mb=module.params["memory_mb"],
                what="loading and running the stages",
            )
        except ChildError as exc:
            if exc.type_name == "UnknownFeatureCount":
                raise UnknownFeatureCount(exc.message) from exc
            raise error_from_child(exc) from exc
    except RuntimeSourceError as exc:
        module.fail_json(msg=str(exc))
    except MissingLibraryError as exc:
        module.fail_json(msg=f"cannot compute reference predictions: {exc}", missing_library=exc.library)
    except UnknownFeatureCount as exc:
        module.fail_json(msg=str(exc))
    except (StageError, LimitExceeded) as exc:
        module.fail_json(msg=f"cannot compute reference predictions: {exc}")
    except ChildError as exc:
        # Loading runs the artifacts' own code: what it raises is named, not a traceback.
        module.fail_json(msg=f"cannot compute reference predictions: {exc.type_name}: {exc.message}")
    if cache_path is not None:
        try:
            write_entry(cache_path, result)
        except OSError as exc:
            module.warn(f"cache_dir: cannot write {cache_path} ({exc}); the stages are loaded again next run")
    module.exit_json(changed=False, cached=False, **result)


if __name__ == "__main__":
    main()
