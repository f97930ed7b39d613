# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""container_engine: the docker run arguments, the spec hash that decides a restart, readiness polling."""

from __future__ import annotations

import fcntl
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.container_engine import (
    DockerCli,
    DockerError,
    capped_cpus,
    engine_lock,
    no_limit,
    run_argv,
    spec_hash,
    wait_ready,
)

SPEC = {
    "image_id": "sha256:abc",
    "env": {"B": "2", "A": "1"},
    "labels": {"mlpacker.pipeline": "iris"},
    "published_ports": ["8000:8000"],
    "network_mode": "bridge",
    "restart_policy": "unless-stopped",
    "user": "10001:10001",
    "cpus": "0.5",
    "memory": "256m",
    "pids_limit": 1024,
    "read_only": True,
    "tmpfs": ["/tmp"],
    "mounts": ["/opt/mlpacker/iris/iris/releases/r1/secrets:/opt/mlpacker/iris/iris/releases/r1/secrets:ro"],
    "command": [],
    "log_options": {"max-size": "10m"},
}


def test_spec_hash_ignores_key_order_and_follows_every_setting() -> None:
    reordered = dict(reversed(list(SPEC.items())), env={"A": "1", "B": "2"})
    assert spec_hash(reordered) == spec_hash(SPEC)
    for key, value in [
        ("image_id", "sha256:def"),
        ("memory", "128m"),
        ("env", {"A": "1"}),
        ("cpus", "1"),
        ("pids_limit", 512),
        ("mounts", []),
    ]:
        assert spec_hash(dict(SPEC, **{key: value})) != spec_hash(SPEC), key


def test_run_argv_has_limits_non_root_user_and_hardening() -> None:
    argv = run_argv("mlpacker-iris", "img:1", SPEC, {"mlpacker.spec-hash": "h"})
    joined = " ".join(argv)
    assert argv[:3] == ["run", "--detach", "--name"]
    assert "--user 10001:10001" in joined
    assert "--cpus 0.5" in joined
    assert "--memory 256m --memory-swap 256m" in joined
    assert "--pids-limit 1024" in joined
    assert "--publish 8000:8000" in joined
    assert "--read-only" in argv and "--tmpfs /tmp" in joined
    assert "--cap-drop ALL" in joined
    assert "--security-opt no-new-privileges" in joined
    assert "--label mlpacker.spec-hash=h" in joined
    # The credentials are a read-only bind mount, never a layer of the image.
    assert f"--volume {SPEC['mounts'][0]}" in joined
    assert argv.index("img:1") == len(argv) - 1


def test_run_argv_without_limits_passes_none() -> None:
    joined = " ".join(run_argv("n", "img:1", dict(SPEC, cpus="", memory="", pids_limit=0), {}))
    for flag in ("--cpus", "--memory", "--pids-limit"):
        assert flag not in joined
    assert "--cap-drop ALL" in joined and "--read-only" in joined


@pytest.mark.parametrize(
    ("cpus", "available", "expected"),
    [
        ("2", 4, "2"),
        ("0.5", 1, "0.5"),
        ("2", 1, "1"),
        ("3.5", 2, "2"),
        ("", 2, ""),
        ("0", 2, ""),
        ("0.0", 1, ""),
    ],
)
def test_cpus_are_capped_to_the_host(cpus: str, available: int, expected: str) -> None:
    assert capped_cpus(cpus, available) == expected


@pytest.mark.parametrize(
    ("value", "none"), [("", True), ("0", True), ("0m", True), ("10m", False), ("1g", False)]
)
def test_no_limit(value: str, none: bool) -> None:
    assert no_limit(value) is none


def test_run_argv_host_network_publishes_nothing() -> None:
    argv = run_argv("n", "img:1", dict(SPEC, network_mode="host"), {})
    assert "--network host" in " ".join(argv)
    assert "--publish" not in argv


def _run_command(argv: list[str], environ_update: dict[str, str] | None = None) -> tuple[int, str, str]:
    """What AnsibleModule.run_command does, for the real docker CLI."""
    done = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **(environ_update or {})}, check=False
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.docker
def test_cli_errors_name_the_command_and_missing_objects_are_none() -> None:
    if (
        shutil.which("docker") is None
        or subprocess.run(["docker", "info"], capture_output=True, check=False).returncode
    ):
        pytest.skip("missing component docker: no running Docker engine")
    cli = DockerCli(_run_command)
    missing = "mlpacker-test/does-not-exist:0"
    assert cli.inspect("image", missing) is None
    assert cli.ids("container", {"mlpacker.pipeline": "no-such-pipeline-here"}) == []
    with pytest.raises(DockerError, match="docker image rm .*exit 1"):
        cli.run(["image", "rm", missing])


@pytest.fixture()
def ready_server() -> Iterator[int]:
    """A real HTTP server whose /health/ready answers 503 twice, then 200."""
    answers = [503, 503, 200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            code = answers.pop(0) if len(answers) > 1 else answers[0]
            self.send_response(code)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_wait_ready_polls_until_2xx(ready_server: int) -> None:
    assert (
        wait_ready(f"http://127.0.0.1:{ready_server}/health/ready", 10, lambda: True, interval=0.05) is None
    )


def test_wait_ready_stops_when_the_container_exits(ready_server: int) -> None:
    problem = wait_ready("http://127.0.0.1:1/health/ready", 10, lambda: False, interval=0.05)
    assert problem == "the container exited"


def test_wait_ready_times_out() -> None:
    problem = wait_ready("http://127.0.0.1:1/health/ready", 0.2, lambda: True, interval=0.05)
    assert problem is not None and "not ready within" in problem


@pytest.mark.parametrize(
    ("held_exclusive", "other_exclusive", "other_gets_it"),
    [(False, False, True), (False, True, False), (True, False, False), (True, True, False)],
)
def test_engine_lock_lets_builds_share_and_keeps_removals_apart(
    tmp_path: Path, held_exclusive: bool, other_exclusive: bool, other_gets_it: bool
) -> None:
    path = str(tmp_path / "engine.lock")
    with engine_lock(exclusive=held_exclusive, path=path), open(path, encoding="ascii") as other:
        # what a second run (another open file) gets while this one holds the lock
        try:
            fcntl.flock(other, (fcntl.LOCK_EX if other_exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            got_it = True
        except BlockingIOError:
            got_it = False
    assert got_it is other_gets_it
    # released on leaving the block
    with open(path, encoding="ascii") as after:
        fcntl.flock(after, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_engine_lock_without_a_writable_place_goes_on_unlocked(tmp_path: Path) -> None:
    ran = []
    with engine_lock(exclusive=True, path=str(tmp_path / "missing" / "engine.lock")):
        ran.append(True)
    assert ran == [True]


@pytest.fixture(scope="module")
def mutual_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, dict[str, str]]]:
    """A real HTTPS server whose /health/ready answers 200 to clients with a certificate of its CA only."""
    import datetime
    import ssl

    from ansible_collections.mlpacker.core.plugins.module_utils import pki

    folder = tmp_path_factory.mktemp("mtls")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, ca = pki.make_ca("pipeline", 2, now)
    other_key, other = pki.make_ca("other", 2, now)
    server_sans = pki.subject_alt_names("127.0.0.1", "localhost")
    files = {}
    for stem, (key, certificate) in {
        "ca": (ca_key, ca),
        "server": pki.issue_certificate(ca_key, ca, "localhost", server_sans, 2, now, ("server",)),
        "client": pki.issue_certificate(ca_key, ca, "probe", [], 2, now, ("client",)),
        "stranger": pki.issue_certificate(other_key, other, "stranger", [], 2, now, ("client",)),
    }.items():
        (folder / f"{stem}.crt").write_bytes(pki.certificate_pem(certificate))
        (folder / f"{stem}.key").write_bytes(pki.private_key_pem(key))
        files[stem] = str(folder / f"{stem}.crt")
        files[f"{stem}_key"] = str(folder / f"{stem}.key")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files["server"], files["server_key"])
    context.load_verify_locations(cafile=files["ca"])
    context.verify_mode = ssl.CERT_REQUIRED
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], files
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("client", "ready"),
    [("client", True), (None, False), ("stranger", False)],
    ids=["pipeline-client-certificate", "no-certificate", "another-cas-certificate"],
)
def test_readiness_presents_the_client_certificate(
    mutual_tls_server: tuple[int, dict[str, str]], client: str | None, ready: bool
) -> None:
    port, files = mutual_tls_server
    problem = wait_ready(
        f"https://127.0.0.1:{port}/health/ready",
        0.3,
        lambda: True,
        interval=0.05,
        ca_file=files["ca"],
        client_cert=files[client] if client else None,
        client_key=files[f"{client}_key"] if client else None,
    )
    if ready:
        assert problem is None
    else:
        assert problem is not None and "was not ready within" in problem
