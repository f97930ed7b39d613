"""Run a playbook of this project through ansible-runner, with a private data dir laid out like AWX's.

Layout of the private data dir (what AWX/Tower builds for a job, and what ``ansible-runner run`` reads)::

    PRIVATE_DATA_DIR/
      env/extravars        the spec's top-level keys plus extra vars (written by ansible-runner)
      env/envvars          ANSIBLE_COLLECTIONS_PATH etc.
      inventory/hosts.yml  only when the inventory is given as a mapping
      artifacts/<ident>/   job events, stdout, rc, status

The project (``project_dir``, the folder holding ``playbooks/`` and ``collections/``) is used in place, as
the run's working directory, the way AWX runs a job from its project checkout. The repository's own
collection (``collections/ansible_collections/mlpacker/core``) is found through ``ANSIBLE_COLLECTIONS_PATH``
pointing at the project's ``collections/`` folder; AWX finds the collections of
``collections/requirements.yml`` the same way after a project sync.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from mlpacker.errors import InventoryError, ProjectError
from mlpacker.events import ProgressEvent, progress_from_event, result_from_events
from mlpacker.results import RunResult

ProgressCallback = Callable[[ProgressEvent], None]
InventorySource = str | os.PathLike[str] | Mapping[str, Any]

PROJECT_ENV = "MLPACKER_PROJECT_DIR"
_STDOUT_TAIL_LINES = 25
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def find_project_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The Ansible project holding ``playbooks/``: ``explicit``, else ``$MLPACKER_PROJECT_DIR``, else the
    checkout this package lives in (``src/mlpacker`` -> repository root), else the current directory."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates = [Path(explicit)]
    elif os.environ.get(PROJECT_ENV):
        candidates = [Path(os.environ[PROJECT_ENV])]
    else:
        candidates = [Path(__file__).resolve().parents[2], Path.cwd()]
    for candidate in candidates:
        if (candidate / "playbooks").is_dir():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise ProjectError(f"no MLPacker project (a folder with playbooks/) at {tried}; set {PROJECT_ENV}")


def collections_path(project_dir: Path, environ: Mapping[str, str] | None = None) -> str:
    """``ANSIBLE_COLLECTIONS_PATH`` for a run: the project's ``collections/`` first, then what the caller had.

    Collections installed with the ``ansible`` package (community.docker ...) are found anyway: Ansible
    always searches the ``ansible_collections`` package on its Python path.
    """
    env = os.environ if environ is None else environ
    existing = env.get("ANSIBLE_COLLECTIONS_PATH") or env.get("ANSIBLE_COLLECTIONS_PATHS") or ""
    parts = [str(project_dir / "collections")]
    parts += [p for p in existing.split(os.pathsep) if p and p not in parts]
    if not existing:
        parts += [str(Path.home() / ".ansible" / "collections"), "/usr/share/ansible/collections"]
    return os.pathsep.join(parts)


def write_inventory(private_data_dir: Path, inventory: InventorySource) -> str:
    """The ``-i`` argument for a run: an existing inventory path as given, or a mapping rendered to
    ``inventory/hosts.yml`` (YAML inventory shape: ``{"all": {"children": {"edge": {"hosts": ...}}}}``)."""
    if isinstance(inventory, Mapping):
        inventory_dir = private_data_dir / "inventory"
        inventory_dir.mkdir(parents=True, exist_ok=True)
        hosts_file = inventory_dir / "hosts.yml"
        # A mapping of groups without the 'all' root is accepted too: Ansible reads top-level keys as groups.
        hosts_file.write_text(yaml.safe_dump(dict(inventory), sort_keys=False), encoding="utf-8")
        return str(hosts_file)
    path = Path(os.fspath(inventory))
    if not path.exists():
        raise InventoryError(f"inventory not found: {path}")
    return str(path.resolve())


def _make_event_handler(progress: ProgressCallback | None) -> Callable[[dict[str, Any]], bool]:
    warned = False

    def handle(event: dict[str, Any]) -> bool:
        nonlocal warned
        if progress is not None:
            update = progress_from_event(event)
            if update is not None:
                try:
                    progress(update)
                except Exception as exc:  # a broken display must not kill a deployment half-way
                    if not warned:
                        warnings.warn(f"progress callback raised {exc!r}; ignoring it", stacklevel=1)
                        warned = True
        return True  # keep the event: the result is built from the stored events

    return handle


def run_playbook(
    operation: str,
    playbook: str,
    *,
    inventory: InventorySource,
    extravars: Mapping[str, Any],
    project_dir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    private_data_dir: str | os.PathLike[str] | None = None,
    envvars: Mapping[str, str] | None = None,
    limit: str | None = None,
    verbosity: int = 0,
    timeout: int | None = None,
    show_output: bool = False,
) -> RunResult:
    """Run ``playbook`` (relative to the project) and return its :class:`RunResult`.

    Without ``private_data_dir`` a temporary one is used and removed afterwards (it holds the extra vars,
    which may carry broker credentials); with one, it is kept and ``RunResult.artifact_dir`` points at the
    run's artifacts (job events, stdout).
    """
    import ansible_runner  # imported here: it is slow to import and the CLI's --help must stay fast

    project = find_project_dir(project_dir)
    if not (project / playbook).is_file():
        raise ProjectError(f"playbook not found: {project / playbook}")

    keep = private_data_dir is not None
    pdd = Path(private_data_dir) if keep else Path(tempfile.mkdtemp(prefix="mlpacker-run-"))
    try:
        pdd.mkdir(parents=True, exist_ok=True)
        inventory_arg = write_inventory(pdd, inventory)
        env: dict[str, str] = {
            "ANSIBLE_COLLECTIONS_PATH": collections_path(project),
            # ansible-runner starts `ansible-playbook` from PATH: use the one next to this interpreter first,
            # so a virtualenv's CLI works without the virtualenv being activated.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
        }
        env.update(envvars or {})
        runner = ansible_runner.run(
            private_data_dir=str(pdd),
            project_dir=str(project),
            playbook=playbook,
            inventory=inventory_arg,
            extravars=dict(extravars),
            envvars=env,
            limit=limit,
            verbosity=verbosity or None,
            timeout=timeout,
            quiet=not show_output,
            event_handler=_make_event_handler(progress),
        )
        events = list(runner.events)
        stdout_tail = ""
        if runner.status != "successful":
            try:
                lines = _ANSI_ESCAPE.sub("", runner.stdout.read()).splitlines()
                stdout_tail = "\n".join(lines[-_STDOUT_TAIL_LINES:])
            except (OSError, AttributeError):
                stdout_tail = ""
        return result_from_events(
            operation,
            events,
            runner_status=str(runner.status),
            rc=runner.rc,
            stdout_tail=stdout_tail,
            artifact_dir=str(runner.config.artifact_dir) if keep else None,
        )
    finally:
        if not keep:
            shutil.rmtree(pdd, ignore_errors=True)
