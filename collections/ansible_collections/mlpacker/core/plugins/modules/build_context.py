#!/usr/bin/python
# ruff: noqa: E402 - Ansible modules keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: build_context
short_description: Lay out a Docker image build context - folders, text files and a hard-linked wheelhouse
version_added: 0.3.0
description:
  - Makes O(path) hold the given folders and text files (Dockerfile, runtime configuration, scripts) with the
    given modes, and O(wheelhouse) as C(wheelhouse/) made of hard links (no second copy of the wheels; a
    plain copy when the two are on different file systems).
  - Compares first and writes only what differs; each file is replaced atomically. Missing parent folders of
    O(path) are created root-owned with mode 0755.
  - One module run instead of a task per folder and file; binary files (artifacts) are shipped with
    M(ansible.builtin.copy) into one of O(directories).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff lists what would be created or rewritten, not the files' content.
  platform:
    support: full
    platforms: posix
options:
  path:
    description: The build context folder.
    type: path
    required: true
  files:
    description:
      - Text files of the context, by path relative to O(path) (their folder must be O(path) or one of
        O(directories)).
      - Each value is a dict with C(content), the file's text, and optionally C(mode), its permissions as an
        octal string (default C(0644)).
    type: dict
    default: {}
  directories:
    description: Folders to create inside O(path) (relative paths).
    type: list
    elements: str
    default: []
  wheelhouse:
    description:
      - A wheelhouse folder to hard-link as C(wheelhouse/) in O(path) when that is missing. Its content is
        named by the wheelhouse id, so an existing C(wheelhouse/) is left as it is.
    type: path
author:
  - MLPacker contributors (@mlpacker)
"""

EXAMPLES = r"""
- name: Lay out the image's build context
  mlpacker.core.build_context:
    path: /opt/mlpacker/iris/iris-scale/releases/3f2a9c1b7d0e
    wheelhouse: /opt/mlpacker/iris/.wheelhouse/cp311-x86_64-d2418f14367bde97
    directories: [artifacts]
    files:
      Dockerfile:
        content: "{{ lookup('ansible.builtin.template', 'Dockerfile.j2') }}"
      config.json:
        content: "{{ runtime_config | to_nice_json }}"
        mode: "0640"
"""

RETURN = r"""
changes:
  description: What was (in check mode, would be) created or rewritten, as C(kind:path).
  returned: success
  type: list
  elements: str
  sample: ["directory:.", "file:Dockerfile", "wheelhouse:wheelhouse"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlpacker.core.plugins.module_utils.build_context import (
    apply_context,
    check_relative,
    plan_context,
)


def file_modes(module):
    files = {}
    for name, spec in module.params["files"].items():
        try:
            check_relative(name)
            # A YAML integer (0640 unquoted) is already the number; a string is octal text.
            mode = spec["mode"] if isinstance(spec["mode"], int) else int(str(spec["mode"]), 8)
        except ValueError as exc:
            module.fail_json(msg=f"files: {name}: {exc}")
        files[name] = {"content": spec["content"], "mode": mode}
    return files


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "files": {"type": "dict", "default": {}},
            "directories": {"type": "list", "elements": "str", "default": []},
            "wheelhouse": {"type": "path"},
        },
        supports_check_mode=True,
    )
    params = module.params
    for name, spec in params["files"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("content"), str):
            module.fail_json(msg=f"files: {name}: needs a 'content' string")
        spec.setdefault("mode", "0644")
    files = file_modes(module)
    try:
        changes = plan_context(params["path"], files, params["directories"], params["wheelhouse"])
    except ValueError as exc:
        module.fail_json(msg=f"directories: {exc}")
    except OSError as exc:
        module.fail_json(msg=f"cannot read the build context {params['path']}: {exc}")
    described = [f"{kind}:{name}" for kind, name in changes]
    result = {"changed": bool(changes), "changes": described}
    if module._diff:
        result["diff"] = {"before": "", "after": "".join(line + "\n" for line in described)}
    if changes and not module.check_mode:
        try:
            apply_context(params["path"], files, params["directories"], params["wheelhouse"], changes)
        except OSError as exc:
            module.fail_json(msg=f"cannot lay out the build context {params['path']}: {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
