# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Where the controller's isolated pip downloads wheels from: the index settings, or, when none is set, the
package indexes the controller's own pip configuration names - and nothing else of that configuration.

The controller's ``pip download`` runs with ``--isolated`` and ``PIP_CONFIG_FILE=/dev/null``: no
constraint, ``--pre``, ``--no-binary``, proxy or other option of a pip.conf or a ``PIP_*`` variable applies.
Only the places wheels come from are carried over, as explicit ``--index-url``, ``--extra-index-url`` and
``--find-links`` options the deploy shows, so a controller that reaches packages through a mirror keeps
working.
"""

from __future__ import annotations

# pip download reads these sections of its configuration; later ones win for a single value (index-url).
SECTIONS = ("global", "download", ":env:")
KEYS = ("index-url", "extra-index-url", "find-links")


def configured_indexes(config_lines):
    """``pip config list`` lines -> ``index_url`` (str or None), ``extra_index_urls``, ``find_links``."""
    found = {key: {} for key in KEYS}
    for line in config_lines:
        name, sep, value = line.partition("=")
        if not sep or "." not in name:
            continue
        section, key = name.rsplit(".", 1)
        if section not in SECTIONS or key not in KEYS:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        # pip prints a value given on several lines with its newlines escaped ("a\nb").
        found[key][section] = value.replace("\\n", " ").split()
    index_url = None
    for section in SECTIONS:
        if found["index-url"].get(section):
            index_url = found["index-url"][section][-1]
    return {
        "index_url": index_url,
        "extra_index_urls": _merged(found["extra-index-url"]),
        "find_links": _merged(found["find-links"]),
    }


def _merged(by_section):
    merged = []
    for section in SECTIONS:
        for value in by_section.get(section, []):
            if value not in merged:
                merged.append(value)
    return merged


def index_options(config_lines, index_url=None, extra_index_urls=None, find_links=None):
    """pip options naming where wheels come from. The settings when any is set (not None); else what the
    controller's pip configuration (``config_lines``) names."""
    if index_url is None and extra_index_urls is None and find_links is None:
        chosen = configured_indexes(config_lines)
    else:
        chosen = {
            "index_url": index_url or None,
            "extra_index_urls": list(extra_index_urls or []),
            "find_links": list(find_links or []),
        }
    options = [f"--index-url={chosen['index_url']}"] if chosen["index_url"] else []
    options += [f"--extra-index-url={url}" for url in chosen["extra_index_urls"]]
    options += [f"--find-links={link}" for link in chosen["find_links"]]
    return options
