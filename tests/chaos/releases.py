"""What the chaos suite's rollout cases share: the release each host runs, and a new release to deploy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.deploy.helpers import write_vars_file


def releases_running(bed: Any, pipeline: str, hosts: tuple[str, ...]) -> dict[str, list[str]]:
    """Per host, the release each of the pipeline's services runs ('current')."""
    script = f"for link in /opt/mlpacker/{pipeline}/*/current; do readlink -f $link; done"
    return {host: sorted(bed.run(host, script).stdout.split()) for host in hosts}


def new_release_vars(folder: Path, pipeline: str) -> Path:
    """Extra vars that make a new release of every service (other request limits: another config.json)."""
    return write_vars_file(
        folder / f"{pipeline}-v2.yml", {"mlpacker_request_limits": {"max_instances": 5000}}
    )
