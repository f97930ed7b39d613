"""Build ansible-runner private data dirs the way AWX lays out a job, for the tests.

AWX (through ``ansible-runner worker``) runs a job from::

    PRIVATE_DATA_DIR/project/          the project checkout
    PRIVATE_DATA_DIR/inventory/hosts   an executable script printing the inventory as JSON
    PRIVATE_DATA_DIR/env/extravars     template extra vars + survey answers (answers tagged !unsafe)
    PRIVATE_DATA_DIR/env/envvars       environment, incl. the collections path

and no ansible.cfg of its own. The helpers here reproduce that; the tests then call ``ansible_runner.run``
with only ``private_data_dir`` and ``playbook``, as AWX does.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SURVEY_FILE = REPO / "awx" / "survey-deploy.json"
TEMPLATE_EXTRA_VARS_FILE = REPO / "awx" / "deploy-extra-vars.yml"

# What AWX's project checkout would not contain or what a job must not see (no ansible.cfg help).
_PROJECT_IGNORE = shutil.ignore_patterns(
    ".venv",
    ".cache",
    ".git",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
    "ansible.cfg",
    "tests",
    "bench",
)


def survey_defaults() -> dict[str, Any]:
    """Survey answers as a user who accepts every default gives them."""
    survey = json.loads(SURVEY_FILE.read_text())
    return {q["variable"]: q["default"] for q in survey["spec"]}


def _unsafe_yaml(answers: dict[str, Any]) -> str:
    # AWX writes survey answers as !unsafe so that Jinja in an answer is never evaluated.
    lines = []
    for key, value in answers.items():
        if isinstance(value, str):
            lines.append(f"{key}: !unsafe {json.dumps(value)}")
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def make_awx_private_data_dir(
    base: Path,
    *,
    project_src: Path,
    inventory: dict[str, Any],
    survey_answers: dict[str, Any] | None = None,
    extra_vars: dict[str, Any] | None = None,
    collections_dir: Path | None = None,
) -> Path:
    """A private data dir for one job; returns its path.

    ``inventory`` is in the JSON shape of ``ansible-inventory --list``.
    With ``survey_answers`` the template's extra vars (awx/deploy-extra-vars.yml) are added, as AWX
    merges them.
    """
    pdd = base / "awx-job"
    shutil.copytree(project_src, pdd / "project", ignore=_PROJECT_IGNORE, symlinks=True)
    (pdd / "inventory").mkdir(parents=True)
    hosts_script = pdd / "inventory" / "hosts"
    hosts_script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"INVENTORY = {json.dumps(inventory)!r}\n"
        "print(INVENTORY if '--list' in sys.argv else json.dumps({}))\n"
    )
    hosts_script.chmod(hosts_script.stat().st_mode | stat.S_IXUSR)

    (pdd / "env").mkdir()
    extravars_text = ""
    if survey_answers is not None:
        extravars_text += TEMPLATE_EXTRA_VARS_FILE.read_text().replace("---\n", "", 1) + "\n"
        extravars_text += _unsafe_yaml(survey_answers)
    if extra_vars:
        extravars_text += yaml.safe_dump(extra_vars)
    (pdd / "env" / "extravars").write_text(extravars_text or "{}\n")

    # AWX installs collections/requirements.yml into requirements_collections/ (empty here: Galaxy is not
    # reachable, community.docker comes with the ansible package) and puts it first on the path; it does
    # not add the project's collections/ folder: playbooks find mlpacker.core as playbook-adjacent
    # collections.
    requirements_collections = pdd / "requirements_collections"
    requirements_collections.mkdir()
    search = [str(requirements_collections), "~/.ansible/collections", "/usr/share/ansible/collections"]
    if collections_dir is not None:
        search.insert(1, str(collections_dir))
    envvars = {
        "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(search),
        # the ansible-playbook of this virtualenv (AWX runs the one of its execution environment)
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
    }
    (pdd / "env" / "envvars").write_text(yaml.safe_dump(envvars))
    return pdd


def local_inventory(groups: list[str]) -> dict[str, Any]:
    """Every group on this machine (one host, local connection), in ``--list`` JSON shape."""
    inventory: dict[str, Any] = {
        "_meta": {
            "hostvars": {
                "localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
            }
        },
        "all": {"children": ["ungrouped", *groups]},
    }
    for group in groups:
        inventory[group] = {"hosts": ["localhost"]}
    return inventory


def stats_artifact_data(runner: Any) -> dict[str, Any]:
    """set_stats data of a finished ansible-runner run (from its playbook_on_stats event)."""
    for event in runner.events:
        if event.get("event") == "playbook_on_stats":
            return dict(event["event_data"].get("artifact_data") or {})
    return {}
