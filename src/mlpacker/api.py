"""Deploy, inspect, probe and remove pipelines from Python.

Each call runs one playbook of the project through ansible-runner (see :mod:`mlpacker.runner`) and returns a
:class:`mlpacker.results.RunResult`::

    import mlpacker

    result = mlpacker.deploy("examples/iris/pipelines/rest-atomic.yml", "inventories/local",
                             progress=lambda ev: print(ev.kind, ev.host or "", ev.label))
    if result.ok:
        print(result.entry_points)          # published by the playbook with set_stats
    else:
        print(result.status, result.failure.describe())

Arguments shared by every call:

* ``pipeline``: a spec file path (YAML with a top-level ``mlpacker_pipeline``) or a mapping (the file's
  content, or the bare pipeline mapping). A spec that does not load raises
  :class:`mlpacker.errors.SpecError` before
  anything runs; a spec the collection rejects comes back as a failed result with ``spec_error`` True.
* ``inventory``: an inventory path (file or folder), or a mapping in Ansible's YAML inventory shape, which is
  written to the run's private data dir.
* ``broker``: ``mlpacker_broker`` (the MQTT broker for stream mode: ``{"host": ..., "port": ...}``);
  ``state_dir``: ``mlpacker_state_dir`` (where deployment records live on the controller);
  ``extravars``: more extra vars, applied last.
* ``progress``: called with a :class:`mlpacker.events.ProgressEvent` for every task start and host outcome.
* ``project_dir``, ``private_data_dir``, ``envvars``, ``limit``, ``verbosity``, ``timeout``, ``show_output``:
  passed to :func:`mlpacker.runner.run_playbook`.

Failures during the run (a failed task, an unreachable host) are not raised: inspect ``result.status``,
``result.failure`` and ``result.exit_code``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlpacker.runner import InventorySource, ProgressCallback, find_playbook_source, run_playbook
from mlpacker.spec import PipelineSource, load_spec

WORKING_DIR_VAR = "mlpacker_working_dir"


def build_extravars(
    pipeline: PipelineSource,
    *,
    broker: Mapping[str, Any] | str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    extravars: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The extra vars of a run: the spec's top-level keys, then broker/state dir, then ``extravars``."""
    spec = load_spec(pipeline)
    merged = dict(spec.extravars)
    if broker is not None:
        merged["mlpacker_broker"] = dict(broker) if isinstance(broker, Mapping) else broker
    if state_dir is not None:
        merged["mlpacker_state_dir"] = os.path.abspath(os.fspath(state_dir))
    merged.update(extravars or {})
    return merged


def _run(
    operation: str,
    pipeline: PipelineSource,
    inventory: InventorySource,
    *,
    broker: Mapping[str, Any] | str | None,
    state_dir: str | os.PathLike[str] | None,
    extravars: Mapping[str, Any] | None,
    progress: ProgressCallback | None,
    project_dir: str | os.PathLike[str] | None = None,
    **run_options: Any,
):
    spec = load_spec(pipeline)  # once: a pipe such as <(...) can be read only once
    variables = build_extravars(spec, broker=broker, state_dir=state_dir, extravars=extravars)
    source = find_playbook_source(project_dir)
    if not source.is_project:
        # The collection's own playbooks live inside the installed package, so their folder means nothing to
        # the user: a relative base_dir (and artifact path) resolves against the spec file's folder instead.
        variables.setdefault(WORKING_DIR_VAR, str(spec.path.parent if spec.path else Path.cwd()))
    return run_playbook(
        operation,
        inventory=inventory,
        extravars=variables,
        source=source,
        progress=progress,
        **run_options,
    )


def deploy(
    pipeline: PipelineSource,
    inventory: InventorySource,
    *,
    broker: Mapping[str, Any] | str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    extravars: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    **run_options: Any,
):
    """Deploy the pipeline (the ``deploy`` playbook); ``result.entry_points`` holds where to send data."""
    return _run(
        "deploy",
        pipeline,
        inventory,
        broker=broker,
        state_dir=state_dir,
        extravars=extravars,
        progress=progress,
        **run_options,
    )


def status(
    pipeline: PipelineSource,
    inventory: InventorySource,
    *,
    broker: Mapping[str, Any] | str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    extravars: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    **run_options: Any,
):
    """Report the deployed services' state (the ``status`` playbook); see ``result.service_status``."""
    return _run(
        "status",
        pipeline,
        inventory,
        broker=broker,
        state_dir=state_dir,
        extravars=extravars,
        progress=progress,
        **run_options,
    )


def probe(
    pipeline: PipelineSource,
    inventory: InventorySource,
    *,
    broker: Mapping[str, Any] | str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    extravars: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    **run_options: Any,
):
    """Check every entry point answers (the ``probe`` playbook); see ``result.probe``."""
    return _run(
        "probe",
        pipeline,
        inventory,
        broker=broker,
        state_dir=state_dir,
        extravars=extravars,
        progress=progress,
        **run_options,
    )


def undeploy(
    pipeline: PipelineSource,
    inventory: InventorySource,
    *,
    broker: Mapping[str, Any] | str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    extravars: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    **run_options: Any,
):
    """Stop and remove the pipeline's services (the ``undeploy`` playbook)."""
    return _run(
        "undeploy",
        pipeline,
        inventory,
        broker=broker,
        state_dir=state_dir,
        extravars=extravars,
        progress=progress,
        **run_options,
    )
