# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Action plugin for mlpacker.core.pipeline_reference: runtime_source defaults to the collection's runtime."""

from __future__ import annotations

from ansible_collections.mlpacker.core.plugins.plugin_utils.runtime_source_action import RuntimeSourceAction


class ActionModule(RuntimeSourceAction):
    """mlpacker.core.pipeline_reference with runtime_source set when the task does not set it."""
