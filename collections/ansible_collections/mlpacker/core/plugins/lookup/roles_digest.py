# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: roles_digest
author: MLPacker contributors (@mlpacker)
short_description: Content hash of roles of this collection
version_added: 0.1.0
description:
  - Returns the sha256 of the files of the named roles of the installed C(mlpacker.core) collection (their
    relative paths and contents; C(meta/), C(molecule/) and C(README.md) left out, they change nothing a role
    does).
  - The pipeline role puts the digest of the roles that deploy services into each host's fingerprint, so a
    change to any of them makes every host go through them again.
options:
  _terms:
    description: Names of roles of this collection.
    required: true
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Show the digest of the roles that deploy services
  ansible.builtin.debug:
    msg: "{{ lookup('mlpacker.core.roles_digest', 'service', 'service_container', 'host') }}"
"""

RETURN = r"""
_raw:
  description: One sha256 hex digest over all the named roles.
  type: list
  elements: str
"""

import hashlib
import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible_collections.mlpacker.core.plugins.module_utils.artifacts import code_dir_digest

# plugins/lookup/roles_digest.py -> the collection root
_COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What documents or tests a role, not what it does.
_LEFT_OUT = ("meta", "molecule", "README.md")


def roles_digest(roles, collection_root=_COLLECTION_ROOT):
    """sha256 over each role's name and the digest of its files (artifacts.code_dir_digest: relative paths and
    contents); an error names a missing role."""
    digest = hashlib.sha256()
    for role in roles:
        role_dir = os.path.join(collection_root, "roles", role)
        if not os.path.isdir(role_dir):
            raise AnsibleLookupError(
                f"the mlpacker.core collection at {collection_root} has no role {role!r}"
            )
        role_digest, _size = code_dir_digest(role_dir, left_out=_LEFT_OUT)
        digest.update(f"{role}\0{role_digest}\0".encode())
    return digest.hexdigest()


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if not terms:
            raise AnsibleLookupError("mlpacker.core.roles_digest needs the names of roles")
        return [roles_digest(terms)]
