# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations


class ModuleDocFragment:
    # The option of the modules that load stages with the stage runtime (artifact_info, pipeline_reference).
    DOCUMENTATION = r"""
options:
  runtime_source:
    description:
      - The folder on the controller holding the stage runtime's C(mlpacker_runtime) package (the pipeline
        role passes C(mlpacker_runtime_source)). The module fails, naming it, when the runtime cannot be
        imported from there.
      - When not given, the action plugin sets the C(runtime/) folder of this collection (what the
        C(mlpacker.core.runtime_source) lookup returns).
    type: path
"""
