#!/usr/bin/python
# ruff: noqa: E402 - Ansible modules keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: wheelhouse_digests
short_description: The sha256 of every file in an MLPacker wheelhouse archive
version_added: 0.3.0
description:
  - Reads a wheelhouse archive (a tar of one flat folder of wheels, made by the controller) and returns the
    sha256 of each of its files in C(sha256sum)'s format, which hosts check their unpacked copy against
    (C(sha256sum --check --strict)) before they install from it.
  - Keeps the result beside the archive (O(archive) with C(.sha256) appended, written whole) and reads it from
    there while it is newer than the archive, so a large archive is read once.
  - Runs where the archive is (the controller, C(delegate_to=localhost)).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The digests are kept beside the archive in check mode too (a cache, not a change of a host).
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  archive:
    description: The wheelhouse archive (C(.tar)).
    type: path
    required: true
author:
  - MLPacker contributors (@mlpacker)
"""

EXAMPLES = r"""
- name: Take the digests of the wheelhouse archive's files
  mlpacker.core.wheelhouse_digests:
    archive: ~/.mlpacker/cache/wheelhouse/cp311-x86_64-0123456789abcdef.tar
  delegate_to: localhost
  register: digests
"""

RETURN = r"""
digests:
  description: One C(<sha256>  <name>) line per file of the archive, sorted by name.
  returned: success
  type: str
  sample: "0263829989b6fd954f72baaf2fc64bc2e2f01d692d4de72986ea808f6e99813f  numpy-2.2.6-cp311-...whl\n"
path:
  description: The file that keeps them (O(archive) with C(.sha256) appended).
  returned: success
  type: str
"""

import os
import tarfile
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlpacker.core.plugins.module_utils.wheelhouse import archive_digests


def kept_digests(archive, path):
    """The kept digests when they are newer than the archive, else None."""
    try:
        if os.stat(path).st_mtime_ns >= os.stat(archive).st_mtime_ns:
            with open(path, encoding="utf-8") as kept:
                return kept.read()
    except FileNotFoundError:
        return None
    return None


def keep(path, text):
    handle, temporary = tempfile.mkstemp(prefix=".digests.", dir=os.path.dirname(path))
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def main():
    module = AnsibleModule(
        argument_spec={"archive": {"type": "path", "required": True}}, supports_check_mode=True
    )
    archive = module.params["archive"]
    path = archive + ".sha256"
    try:
        digests = kept_digests(archive, path)
        if digests is None:
            digests = archive_digests(archive)
            keep(path, digests)
    except (OSError, tarfile.TarError, ValueError) as exc:
        module.fail_json(msg=f"cannot take the digests of the wheelhouse archive {archive}: {exc}")
    if not digests:
        module.fail_json(msg=f"the wheelhouse archive {archive} holds no file")
    # A cache on the controller, not a change of the managed host: reported unchanged.
    module.exit_json(changed=False, digests=digests, path=path)


if __name__ == "__main__":
    main()
