# ruff: noqa: E402 - Ansible plugins keep DOCUMENTATION, EXAMPLES and RETURN before the imports
# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: pip_index_options
author: MLPacker contributors (@mlpacker)
short_description: Where the controller's isolated pip downloads an MLPacker wheelhouse from
version_added: 0.3.0
description:
  - Returns the pip options (C(--index-url), C(--extra-index-url), C(--find-links)) of the index settings when
    any of them is set; otherwise those the controller's own pip configuration names (from
    C(pip config list)), and nothing else of that configuration.
options:
  _input:
    description: The lines C(pip config list) printed on the controller.
    type: list
    elements: str
    required: true
  index_url:
    description: C(mlpacker_pip_index_url).
    type: str
  extra_index_urls:
    description: C(mlpacker_pip_extra_index_urls).
    type: list
    elements: str
  find_links:
    description: C(mlpacker_pip_find_links).
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Work out where the wheels come from
  ansible.builtin.set_fact:
    index_options: >-
      {{ pip_config.stdout_lines | mlpacker.core.pip_index_options(index_url=mlpacker_pip_index_url,
         extra_index_urls=mlpacker_pip_extra_index_urls, find_links=mlpacker_pip_find_links) }}
"""

RETURN = r"""
_value:
  description: pip options, for example C(--extra-index-url=https://mirror.example/simple).
  type: list
  elements: str
"""

from ansible_collections.mlpacker.core.plugins.module_utils.pip_indexes import index_options


def pip_index_options_filter(config_lines, index_url=None, extra_index_urls=None, find_links=None):
    return index_options(list(config_lines or []), index_url, extra_index_urls, find_links)


class FilterModule:
    def filters(self):
        return {"pip_index_options": pip_index_options_filter}
