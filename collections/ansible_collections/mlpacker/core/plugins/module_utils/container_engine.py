# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The Docker engine through its CLI, for the ``container_*`` modules.

Why the CLI and not the Docker SDK or community.docker's API modules: hosts are offline, their system Python
has neither ``docker`` nor ``requests``, and ``docker_image_build`` needs the buildx plugin that Debian's
``docker.io`` lacks. The ``docker`` CLI is on every host that has an engine, so nothing has to be installed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import socket
import time
import urllib.error
from collections.abc import Callable, Iterator
from typing import Any

from ansible.module_utils.urls import open_url

# What a container is made from; its hash, stored as a label, tells whether a running container is current.
RUN_SPEC_KEYS = (
    "image_id",
    "env",
    "labels",
    "published_ports",
    "network_mode",
    "restart_policy",
    "user",
    "cpus",
    "memory",
    "pids_limit",
    "read_only",
    "tmpfs",
    "mounts",
    "command",
    "log_options",
)
SPEC_HASH_LABEL = "mlpacker.spec-hash"
# One lock per host for MLPacker's image builds and removals on its engine (see engine_lock).
ENGINE_LOCK_FILE = "/run/mlpacker-docker.lock"


@contextlib.contextmanager
def engine_lock(exclusive: bool, path: str = ENGINE_LOCK_FILE) -> Iterator[None]:
    """Builds hold the lock shared, image removals exclusive, so the two never overlap on one engine.

    Why: removing an image also removes its untagged parent layers, and the classic builder reuses such layers
    as cache without holding them; a build running beside another pipeline's undeploy then fails with
    "unknown parent image ID". Builds still run side by side. Where the lock file cannot be opened (read-only
    /run), the work goes on unlocked, as it did before.
    """
    try:
        handle = open(path, "a", encoding="ascii")  # noqa: SIM115 (closed below, after the work)
    except OSError:
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        handle.close()


class DockerError(Exception):
    """A docker command failed; the message names the command and what it printed."""


class DockerCli:
    """Run ``docker`` through ``module.run_command`` (no shell) and parse its JSON answers."""

    def __init__(self, run_command: Callable[..., tuple[int, str, str]], binary: str = "docker") -> None:
        self._run_command = run_command
        self.binary = binary

    def run(
        self, args: list[str], check: bool = True, env: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        kwargs: dict[str, Any] = {}
        if env:
            kwargs["environ_update"] = env
        rc, out, err = self._run_command([self.binary, *args], **kwargs)
        if check and rc != 0:
            raise DockerError(
                f"'docker {' '.join(args[:3])}' failed (exit {rc}): {(err or out).strip()[-2000:]}"
            )
        return rc, out, err

    def inspect(self, kind: str, ref: str) -> dict[str, Any] | None:
        """``docker <kind> inspect`` of one object, or None when it does not exist."""
        rc, out, _err = self.run([kind, "inspect", ref], check=False)
        if rc != 0:
            return None
        found = json.loads(out or "[]")
        return found[0] if found else None

    def ids(self, kind: str, labels: dict[str, str]) -> list[str]:
        """Ids of the containers, images or volumes carrying every one of ``labels``."""
        filters: list[str] = []
        for key, value in sorted(labels.items()):
            filters += ["--filter", f"label={key}={value}"]
        if kind == "container":
            args = ["ps", "--all", "--quiet", "--no-trunc", *filters]
        elif kind == "image":
            args = ["images", "--quiet", "--no-trunc", *filters]
        elif kind == "volume":
            args = ["volume", "ls", "--quiet", *filters]
        else:
            raise ValueError(f"unknown docker object kind {kind!r}")
        _rc, out, _err = self.run(args)
        return sorted({line.strip() for line in out.splitlines() if line.strip()})

    def has_buildx(self) -> bool:
        return self.run(["buildx", "version"], check=False)[0] == 0

    def logs(self, name: str, lines: int) -> str:
        rc, out, err = self.run(["logs", "--tail", str(lines), name], check=False)
        return (out + err).strip() if rc == 0 else ""


def spec_hash(spec: dict[str, Any]) -> str:
    """sha256 over the parts of a run spec that define the container (key order does not matter)."""
    relevant = {key: spec.get(key) for key in RUN_SPEC_KEYS}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def run_argv(name: str, image: str, spec: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """``docker run`` arguments for ``spec`` (keys as in RUN_SPEC_KEYS, without image_id)."""
    argv = ["run", "--detach", "--name", name, "--restart", spec["restart_policy"]]
    for key, value in sorted(labels.items()):
        argv += ["--label", f"{key}={value}"]
    for key, value in sorted(spec["env"].items()):
        argv += ["--env", f"{key}={value}"]
    if spec["network_mode"] == "host":
        argv += ["--network", "host"]
    else:
        argv += ["--network", spec["network_mode"]]
        for mapping in spec["published_ports"]:
            argv += ["--publish", mapping]
    if spec.get("user"):
        argv += ["--user", spec["user"]]
    if spec.get("cpus"):
        argv += ["--cpus", str(spec["cpus"])]
    if spec.get("memory"):
        # no swap beyond the limit: an edge device that swaps is as good as down
        argv += ["--memory", str(spec["memory"]), "--memory-swap", str(spec["memory"])]
    if spec.get("pids_limit"):
        argv += ["--pids-limit", str(spec["pids_limit"])]
    if spec.get("read_only"):
        argv += ["--read-only"]
    for path in spec.get("tmpfs") or []:
        argv += ["--tmpfs", path]
    for mount in spec.get("mounts") or []:
        # host folder:container path[:ro] - the service's credentials, kept out of every image layer
        argv += ["--volume", mount]
    argv += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    argv += ["--log-driver", "json-file"]
    for key, value in sorted((spec.get("log_options") or {}).items()):
        argv += ["--log-opt", f"{key}={value}"]
    argv.append(image)
    argv += list(spec.get("command") or [])
    return argv


def no_limit(value: str) -> bool:
    """Empty, or zero in any spelling (0, 0.0, 0m): docker's "no limit"."""
    return not value or not value.rstrip("bkmgBKMG").replace(".", "").strip("0")


def capped_cpus(cpus: str, available: int) -> str:
    """``cpus`` (docker --cpus) as the run spec holds it: "" for no limit, at most the ``available`` CPUs
    (docker refuses a limit above what the host has; a default of 2 must not fail a one-CPU edge device)."""
    if no_limit(cpus):
        return ""
    return cpus if float(cpus) <= available else str(available)


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (for a canary, which runs beside the serving container)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def is_ready(
    url: str,
    timeout: float = 3.0,
    ca_file: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> bool:
    try:
        with open_url(
            url,
            timeout=timeout,
            validate_certs=True,
            ca_path=ca_file,
            client_cert=client_cert,
            client_key=client_key,
        ) as answer:
            return 200 <= answer.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_ready(
    url: str,
    timeout: float,
    still_running: Callable[[], bool],
    interval: float = 0.5,
    ca_file: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> str | None:
    """Poll ``url`` until it answers 2xx; return None when ready, else why not (exited or timed out).

    An https ``url`` is verified against ``ca_file`` (the pipeline CA); ``client_cert`` and ``client_key`` are
    presented to a service that requires a client certificate (mutual TLS)."""
    deadline = time.monotonic() + timeout
    while True:
        if is_ready(url, ca_file=ca_file, client_cert=client_cert, client_key=client_key):
            return None
        if not still_running():
            return "the container exited"
        if time.monotonic() >= deadline:
            return f"{url} was not ready within {timeout:g}s"
        time.sleep(interval)
