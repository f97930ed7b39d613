# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: runtime_source
author: MLPacker contributors (@mlpacker)
short_description: Path of the stage runtime source that ships inside this collection
version_added: 0.1.0
description:
  - Returns the absolute path, on the controller, of the C(runtime/) folder of the installed
    C(mlpacker.core) collection (the C(mlpacker_runtime) package and its C(pyproject.toml)).
  - The pipeline role builds the runtime wheel it ships to every host from this folder, so the
    collection works from wherever it is installed, not only inside the MLPacker repository.
  - Takes no terms.
"""

EXAMPLES = r"""
- name: Show where the runtime comes from
  ansible.builtin.debug:
    msg: "{{ lookup('mlpacker.core.runtime_source') }}"
"""

RETURN = r"""
_raw:
  description: One absolute path, the folder holding C(pyproject.toml) and C(mlpacker_runtime/).
  type: list
  elements: path
"""

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

# plugins/lookup/runtime_source.py -> the collection root
_COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def runtime_source_path(collection_root=_COLLECTION_ROOT):
    """The runtime folder of the collection at ``collection_root``; an error names what is missing."""
    path = os.path.join(collection_root, "runtime")
    for required in ("pyproject.toml", os.path.join("mlpacker_runtime", "__init__.py")):
        missing = os.path.join(path, required)
        if not os.path.isfile(missing):
            raise AnsibleLookupError(
                f"the mlpacker.core collection at {collection_root} has no stage runtime ({missing} is "
                "missing); reinstall the collection or set mlpacker_runtime_source"
            )
    return path


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if terms:
            raise AnsibleLookupError(f"mlpacker.core.runtime_source takes no terms, got {terms!r}")
        return [runtime_source_path()]
