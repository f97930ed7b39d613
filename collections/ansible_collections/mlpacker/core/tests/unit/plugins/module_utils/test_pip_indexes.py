# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Where the controller's isolated pip downloads from: the settings when any is set, else the index
locations of the controller's pip configuration (``pip config list``), nothing else of it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.pip_indexes import (
    configured_indexes,
    index_options,
)

CONFIG = [
    "global.cert='/etc/ssl/certs/ca-certificates.crt'",
    "global.constraint='/etc/pip/constraints.txt'",
    "global.index-url='https://mirror.invalid/simple'",
    "global.extra-index-url='file:///srv/pypi/simple file:///srv/more/simple'",
    "global.find-links='/srv/wheels'",
    "install.index-url='https://install-only.invalid/simple'",
    ":env:.find-links='/srv/wheels /srv/other'",
    ":env:.default-timeout='180'",
    "download.index-url='https://download.invalid/simple'",
]


def test_the_configuration_gives_its_index_locations_only() -> None:
    assert configured_indexes(CONFIG) == {
        # download's section wins over global's; install's is not pip download's.
        "index_url": "https://download.invalid/simple",
        "extra_index_urls": ["file:///srv/pypi/simple", "file:///srv/more/simple"],
        "find_links": ["/srv/wheels", "/srv/other"],
    }
    assert index_options(CONFIG) == [
        "--index-url=https://download.invalid/simple",
        "--extra-index-url=file:///srv/pypi/simple",
        "--extra-index-url=file:///srv/more/simple",
        "--find-links=/srv/wheels",
        "--find-links=/srv/other",
    ]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"index_url": "https://private.invalid/simple"}, ["--index-url=https://private.invalid/simple"]),
        ({"extra_index_urls": []}, []),  # pip's default index, whatever the configuration says
        ({"find_links": ["/opt/w"]}, ["--find-links=/opt/w"]),
        (
            {"index_url": "", "extra_index_urls": ["file:///a/simple"], "find_links": []},
            ["--extra-index-url=file:///a/simple"],
        ),
    ],
)
def test_any_setting_replaces_the_configuration(settings: dict, expected: list[str]) -> None:
    assert index_options(CONFIG, **settings) == expected


@pytest.mark.parametrize("lines", [[], ["not a config line"], ["global.timeout='60'"]])
def test_no_configured_index_is_pips_default(lines: list[str]) -> None:
    assert index_options(lines) == []


def test_reads_what_pip_config_list_prints(tmp_path) -> None:
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nextra-index-url = file:///srv/a/simple\n    file:///srv/b/simple\n")
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        env={"PIP_CONFIG_FILE": str(config), "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout.splitlines()
    assert index_options(listed) == [
        "--extra-index-url=file:///srv/a/simple",
        "--extra-index-url=file:///srv/b/simple",
    ]
