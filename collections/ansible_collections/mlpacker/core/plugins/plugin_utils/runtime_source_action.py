# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Action base for the modules that load stages with the stage runtime (artifact_info, pipeline_reference)."""

from __future__ import annotations

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible_collections.mlpacker.core.plugins.lookup.runtime_source import runtime_source_path


class RuntimeSourceAction(ActionBase):
    """Run the module of the same name; its ``runtime_source`` defaults to this collection's ``runtime/``
    folder (what ``lookup('mlpacker.core.runtime_source')`` returns), so playbooks need not pass it."""

    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        module_args = dict(self._task.args)
        if not module_args.get("runtime_source"):
            try:
                module_args["runtime_source"] = runtime_source_path()
            except AnsibleError as exc:
                result.update(failed=True, msg=f"runtime_source: {exc}")
                return result
        result.update(self._execute_module(module_args=module_args, task_vars=task_vars))
        return result
