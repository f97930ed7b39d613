"""Typed results of a playbook run (deploy, status, probe, undeploy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

RunStatus = Literal["successful", "failed", "unreachable"]

# Exit codes of the CLI, also available to API users through RunResult.exit_code.
EXIT_OK = 0
EXIT_FAILED = 4
EXIT_BAD_SPEC = 2
EXIT_UNREACHABLE = 3

# set_stats keys the playbooks publish (contract with playbooks/*.yml).
ENTRY_POINTS_KEY = "mlpacker_entry_points"
DEPLOYMENT_KEY = "mlpacker_deployment"
STATUS_KEY = "mlpacker_status"
PROBE_KEY = "mlpacker_probe"


@dataclass(frozen=True)
class HostStats:
    """Task counts of one host, as in Ansible's PLAY RECAP."""

    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass(frozen=True)
class Failure:
    """A task that failed (or a host that could not be reached): where, which task, and why.

    ``host`` and ``task`` are None when Ansible stopped before running any task (e.g. a syntax error);
    ``message`` then holds the end of Ansible's output.
    """

    host: str | None
    task: str | None
    action: str | None
    message: str
    unreachable: bool = False
    role: str | None = None
    play: str | None = None

    def describe(self) -> str:
        """One line for humans: ``host edge1, task 'X': message``."""
        where = []
        if self.host:
            where.append(f"host {self.host}")
        if self.task:
            where.append(f"task '{self.task}'")
        prefix = ("unreachable: " if self.unreachable else "") + (", ".join(where) + ": " if where else "")
        return prefix + self.message


@dataclass
class RunResult:
    """The outcome of one playbook run.

    ``status`` is ``successful``, ``failed`` or ``unreachable`` (a host could not be reached; this wins over
    ``failed`` because it is the thing to fix first). ``hosts`` holds per-host task stats, ``failures`` every
    failed task not ignored by the playbook, ``stats_data`` everything the playbook published with
    ``ansible.builtin.set_stats`` (entry points, deployment record, status or probe results), ``plan`` the
    placement plan the run's ``mlpacker.core.pipeline_plan`` task returned (None when it did not run).
    """

    operation: str
    status: RunStatus
    rc: int | None
    runner_status: str
    hosts: dict[str, HostStats] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    stats_data: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    artifact_dir: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "successful"

    @property
    def failure(self) -> Failure | None:
        """The first failure (the one that stopped the run), if any."""
        return self.failures[0] if self.failures else None

    @property
    def entry_points(self) -> Any:
        """Entry points of the pipeline (REST URLs / stream topics and broker), or None.

        What the playbook published with set_stats (``mlpacker_entry_points``); for a successful run of a
        playbook that does not publish them, the entry points its planning task returned.
        """
        if ENTRY_POINTS_KEY in self.stats_data:
            return self.stats_data[ENTRY_POINTS_KEY]
        if self.ok and self.plan is not None:
            return self.plan.get("entry_points")
        return None

    @property
    def deployment(self) -> dict[str, Any] | None:
        """The deployment record the deploy published, or None."""
        return self.stats_data.get(DEPLOYMENT_KEY)

    @property
    def credentials(self) -> dict[str, Any] | None:
        """Where the deployment's credentials are on the controller (``ca_file``, ``token_file``, ``mqtt``,
        and with mutual TLS on the entry service ``client_cert_file`` and ``client_key_file``: paths to 0600
        files, never the secrets), or None (an insecure deploy, or no deployment record)."""
        if self.deployment is not None:
            return self.deployment.get("credentials")
        # status.yml publishes them from the controller's record
        return self.stats_data.get("mlpacker_credentials")

    @property
    def client_commands(self) -> list[str]:
        """Working ``curl`` / ``mosquitto_pub`` and ``mosquitto_sub`` lines for the deployed pipeline."""
        if self.deployment is not None:
            return list(self.deployment.get("client_commands") or [])
        return list(self.stats_data.get("mlpacker_client_commands") or [])

    @property
    def service_status(self) -> Any:
        """What ``playbooks/status.yml`` published under ``mlpacker_status``, or None."""
        return self.stats_data.get(STATUS_KEY)

    @property
    def probe(self) -> Any:
        """What ``playbooks/probe.yml`` published under ``mlpacker_probe``, or None."""
        return self.stats_data.get(PROBE_KEY)

    @property
    def spec_error(self) -> bool:
        """True when the run failed in the pipeline spec validation task."""
        from mlpacker.events import is_validation_failure

        return any(is_validation_failure(f) for f in self.failures)

    @property
    def exit_code(self) -> int:
        """0 success, 2 bad spec, 3 unreachable host, 4 failed task (see ``mlpacker --help``)."""
        if self.status == "successful":
            return EXIT_OK
        if self.spec_error:
            return EXIT_BAD_SPEC
        if self.status == "unreachable":
            return EXIT_UNREACHABLE
        return EXIT_FAILED
