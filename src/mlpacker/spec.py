"""Load a pipeline spec (a YAML file or a mapping) into the extra vars a playbook run receives.

A spec file is what ``ansible-playbook ... -e @pipeline.yml`` reads: a YAML mapping whose top level holds
``mlpacker_pipeline`` (the pipeline) and optionally other playbook variables such as ``mlpacker_broker``.
Every top-level key becomes an extra var, exactly as ``-e @file`` would make it.

Only the shape needed to start a run is checked here (the file loads, ``mlpacker_pipeline`` is a mapping);
the full validation belongs to the collection's ``mlpacker.core.pipeline_plan`` module, so that the
ansible-playbook, AWX and Python paths all report the same errors.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlpacker.errors import SpecError

PIPELINE_KEY = "mlpacker_pipeline"


@dataclass(frozen=True)
class PipelineSpec:
    """A loaded spec: the extra vars to pass, and where they came from (for messages)."""

    extravars: dict[str, Any]
    source: str
    path: Path | None = field(default=None)

    @property
    def pipeline(self) -> dict[str, Any]:
        """The ``mlpacker_pipeline`` mapping."""
        return self.extravars[PIPELINE_KEY]

    @property
    def name(self) -> str | None:
        """The pipeline's name, when the spec has one (validated later by the playbook)."""
        name = self.pipeline.get("name")
        return name if isinstance(name, str) else None


# A spec file path, a mapping (the file's content or the bare pipeline), or an already loaded spec.
PipelineSource = str | Path | Mapping[str, Any] | PipelineSpec


def load_spec(source: PipelineSource) -> PipelineSpec:
    """Load a spec from a YAML file path or from a mapping (an already loaded spec is returned as it is).

    A mapping may be the file's content (``{"mlpacker_pipeline": {...}, ...}``) or the bare pipeline
    (``{"name": ..., "stages": [...]}``), which is wrapped under ``mlpacker_pipeline``.

    Raises :class:`SpecError` naming the file when the YAML does not parse, is not a mapping, or has no
    ``mlpacker_pipeline`` mapping.
    """
    if isinstance(source, PipelineSpec):
        return source
    if isinstance(source, Mapping):
        data: dict[str, Any] = copy.deepcopy(dict(source))
        if PIPELINE_KEY not in data:
            data = {PIPELINE_KEY: data}
        _check_top_level(data, "<dict>")
        return PipelineSpec(extravars=data, source="<dict>")

    path = Path(source)
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("pipeline spec file not found", source=label) from None
    except OSError as exc:
        raise SpecError(f"cannot read the pipeline spec file: {exc.strerror or exc}", source=label) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # The YAML error text carries the line and column, which is what the user needs.
        raise SpecError(f"not valid YAML: {exc}", source=label) from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise SpecError(
            f"the file must hold a YAML mapping with a top-level '{PIPELINE_KEY}' key, it is {kind}",
            source=label,
        )
    _check_top_level(data, label)
    return PipelineSpec(extravars=data, source=label, path=path.resolve())


def _check_top_level(data: dict[str, Any], label: str) -> None:
    for key in data:
        if not isinstance(key, str):
            raise SpecError(
                f"top-level key {key!r} is not a string (extra var names are strings)", source=label
            )
    if PIPELINE_KEY not in data:
        raise SpecError(f"missing the top-level '{PIPELINE_KEY}' mapping", source=label, field=PIPELINE_KEY)
    pipeline = data[PIPELINE_KEY]
    if not isinstance(pipeline, dict):
        kind = "empty" if pipeline is None else f"a {type(pipeline).__name__}"
        raise SpecError(f"'{PIPELINE_KEY}' must be a mapping, it is {kind}", source=label, field=PIPELINE_KEY)
