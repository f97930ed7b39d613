"""Run a playbook of MLPacker through ansible-runner, with a private data dir laid out like AWX's.

Layout of the private data dir (what AWX/Tower builds for a job, and what ``ansible-runner run`` reads)::

    PRIVATE_DATA_DIR/
      env/extravars        the spec's top-level keys plus extra vars (written by ansible-runner)
      env/envvars          ANSIBLE_COLLECTIONS_PATH etc.
      inventory/hosts.yml  only when the inventory is given as a mapping
      artifacts/<ident>/   job events, stdout, rc, status

Where the playbooks come from (:func:`find_playbook_source`):

* a **project** (a checkout of the MLPacker repository, or any folder with ``playbooks/deploy.yml`` and
  ``collections/``): used in place, as the run's working directory, the way AWX runs a job from its project
  checkout; ``playbooks/<operation>.yml`` runs, and the project's ``collections/`` comes first in
  ``ANSIBLE_COLLECTIONS_PATH`` (AWX finds the collections of ``collections/requirements.yml`` the same way);
* else the **collection installed with this package** (a wheel carries ``mlpacker.core`` as package data
  under ``mlpacker/_collections``): the collection's playbook ``mlpacker.core.<operation>`` runs from the
  current directory, so ``pip install mlpacker`` is all a user needs.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


# The collection a wheel of this package carries (pyproject.toml: package ``mlpacker._collections``).
PACKAGED_COLLECTIONS = Path(__file__).resolve().parent / "_collections"
COLLECTION_FILE = Path("ansible_collections") / "mlpacker" / "core" / "galaxy.yml"


@dataclass(frozen=True)
class PlaybookSource:
    """Where a run's playbooks and the ``mlpacker.core`` collection come from."""

    run_dir: Path  # the run's working directory (ansible-runner's project_dir)
    collections_dir: Path  # first entry of ANSIBLE_COLLECTIONS_PATH
    is_project: bool  # a project's playbooks/*.yml, else the collection's own playbooks

    def playbook(self, operation: str) -> str:
        """The playbook of an operation (deploy, status, probe, undeploy)."""
        return f"playbooks/{operation}.yml" if self.is_project else f"mlpacker.core.{operation}"


def find_playbook_source(explicit: str | os.PathLike[str] | None = None) -> PlaybookSource:
    """``explicit`` (a project folder), else ``$MLPACKER_PROJECT_DIR``, else the checkout this package
    lives in (``src/mlpacker`` -> repository root), else the current directory when it is a project, else
    the collection packaged with this installation of ``mlpacker``."""
    if explicit is not None or os.environ.get(PROJECT_ENV):
        candidate = Path(explicit if explicit is not None else os.environ[PROJECT_ENV])
        if not (candidate / "playbooks").is_dir():
            raise ProjectError(f"no MLPacker project (a folder with playbooks/) at {candidate}")
        return _project(candidate)
    candidates = [Path(__file__).resolve().parents[2], Path.cwd()]
    for candidate in candidates:
        if (candidate / "playbooks" / "deploy.yml").is_file():
            return _project(candidate)
    if (PACKAGED_COLLECTIONS / COLLECTION_FILE).is_file():
        return PlaybookSource(run_dir=Path.cwd(), collections_dir=PACKAGED_COLLECTIONS, is_project=False)
    tried = ", ".join(str(c) for c in candidates)
    raise ProjectError(
        f"no MLPacker project (a folder with playbooks/deploy.yml) at {tried}, and this installation of "
        f"mlpacker carries no collection ({PACKAGED_COLLECTIONS / COLLECTION_FILE} is missing); "
        f"set {PROJECT_ENV}"
    )


def _project(folder: Path) -> PlaybookSource:
    folder = folder.resolve()
    return PlaybookSource(run_dir=folder, collections_dir=folder / "collections", is_project=True)


def collections_path(collections_dir: Path, environ: Mapping[str, str] | None = None) -> str:
    """``ANSIBLE_COLLECTIONS_PATH`` for a run: ``collections_dir`` first, then what the caller had.

    Collections installed with the ``ansible`` package (community.docker ...) are found anyway: Ansible
    always searches the ``ansible_collections`` package on its Python path.
    """
    env = os.environ if environ is None else environ
    existing = env.get("ANSIBLE_COLLECTIONS_PATH") or env.get("ANSIBLE_COLLECTIONS_PATHS") or ""
    parts = [str(collections_dir)]
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
    playbook: str | None = None,
    *,
    inventory: InventorySource,
    extravars: Mapping[str, Any],
    project_dir: str | os.PathLike[str] | None = None,
    source: PlaybookSource | None = None,
    progress: ProgressCallback | None = None,
    private_data_dir: str | os.PathLike[str] | None = None,
    envvars: Mapping[str, str] | None = None,
    limit: str | None = None,
    verbosity: int = 0,
    timeout: int | None = None,
    show_output: bool = False,
) -> RunResult:
    """Run ``playbook`` (relative to the project; by default the operation's own playbook) and return its
    :class:`RunResult`. ``source`` (else :func:`find_playbook_source` of ``project_dir``) says where the
    playbooks and the collection come from.

    Without ``private_data_dir`` a temporary one is used and removed afterwards (it holds the extra vars,
    which may carry broker credentials); with one, it is kept and ``RunResult.artifact_dir`` points at the
    run's artifacts (job events, stdout).
    """
    import ansible_runner  # imported here: it is slow to import and the CLI's --help must stay fast

    source = source or find_playbook_source(project_dir)
    playbook = playbook or source.playbook(operation)
    if source.is_project and not (source.run_dir / playbook).is_file():
        raise ProjectError(f"playbook not found: {source.run_dir / playbook}")

    keep = private_data_dir is not None
    pdd = Path(private_data_dir) if keep else Path(tempfile.mkdtemp(prefix="mlpacker-run-"))
    try:
        pdd.mkdir(parents=True, exist_ok=True)
        inventory_arg = write_inventory(pdd, inventory)
        env: dict[str, str] = {
            "ANSIBLE_COLLECTIONS_PATH": collections_path(source.collections_dir),
            # ansible-runner starts `ansible-playbook` from PATH: use the one next to this interpreter first,
            # so a virtualenv's CLI works without the virtualenv being activated.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
        }
        env.update(envvars or {})
        runner = ansible_runner.run(
            private_data_dir=str(pdd),
            project_dir=str(source.run_dir),
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
