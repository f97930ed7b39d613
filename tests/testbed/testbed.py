#!/usr/bin/env python3
"""A real edge/fog/cloud test bed on one machine: hosts in network namespaces, reached over SSH.

Each host (``edge1``, ``edge2``, ``fog1``, ``cloud1`` and the broker host ``broker1``) has:

- its own network namespace with one address on the bridge ``mlpbr0`` (10.231.0.0/24) and no default
  route, so it reaches the other hosts and the controller but no registry;
- its own PID, UTS, IPC and mount namespaces: a private whole filesystem (an overlay over the machine's
  ``/`` with a per-host upper folder), its own ``/run``, ``/tmp``, ``/proc`` and hostname;
- its own ``sshd`` (root login with a key the test bed makes), and on request its own Docker engine
  with the local base image ``mlpacker-base:bookworm`` loaded into it.

``broker1`` also runs Mosquitto (unless asked not to), reachable from every host and the controller: the
tests' "user's own broker", secured as a user's broker would be (TLS with the test bed's own CA, a password,
no anonymous client): 8883 with the password, 8884 with the password and a client certificate. Its
credentials are made once (kept in ``<state>/broker``, re-made only when missing or near expiry) with the
collection's PKI and Mosquitto password helpers, hidden from the hosts; the inventory's
``mlpacker_broker`` names them. Only the standard library is used, plus ``cryptography`` (Debian's
python3-cryptography, an ansible-core dependency in the virtualenv) to make those credentials at bring-up;
so the module also runs as a plain script (``python3 tests/testbed/testbed.py up``) and as
``python -m tests.testbed``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import fcntl
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = "/var/lib/mlpacker-testbed"
STATE_DIR_ENV = "MLPACKER_TESTBED_DIR"
TMPFS_ENV = "MLPACKER_TESTBED_TMPFS"  # "0": the hosts' files go to the state dir's disk instead of a tmpfs
TMPFS_SIZE_ENV = "MLPACKER_TESTBED_TMPFS_SIZE"
BRIDGE = "mlpbr0"
SUBNET_PREFIX = "10.231.0"  # /24, picked to be unlikely to clash with docker's or a cloud's ranges
BRIDGE_ADDRESS = f"{SUBNET_PREFIX}.1"
DOCKER_BIP_PREFIX = "10.232"  # per-host docker0 gets 10.232.<index>.1/24, distinct across hosts
IPTABLES_COMMENT = "mlpacker-testbed"
INIT_MARKER = "mlpacker-testbed-init"
BROKER_PORT = 8883  # broker1's TLS listener: password, no anonymous client
BROKER_CERT_PORT = 8884  # broker1's TLS listener that also requires a client certificate of its CA
BROKER_USERNAME = "mlpacker-testbed"
BROKER_CONF_DIR = "/etc/mosquitto/mlpacker-testbed"  # in broker1
BROKER_CREDENTIALS = "broker"  # <state>/broker: the broker's CA, certificates, keys and password (0600, 0700)
SSH_PORT = 22
BASE_IMAGE = "mlpacker-base:bookworm"
REPO_ROOT = Path(__file__).resolve().parents[2]
# The collection's own helpers (loaded by file: they need only the standard library and cryptography).
MODULE_UTILS = (
    REPO_ROOT / "collections" / "ansible_collections" / "mlpacker" / "core" / "plugins" / "module_utils"
)
IMAGE_CACHE_DIR = REPO_ROOT / ".cache"
BASE_IMAGE_TARBALL = IMAGE_CACHE_DIR / "mlpacker-base-bookworm.docker.tar"
# The machine's own apt sources name the Debian mirror the base image is made from (the first URIs/deb line).
APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# name -> (inventory group, last octet); docker engines only on the deployment groups
HOST_LAYOUT: dict[str, tuple[str, int]] = {
    "edge1": ("edge", 11),
    "edge2": ("edge", 12),
    "fog1": ("fog", 21),
    "cloud1": ("cloud", 31),
    "broker1": ("broker", 41),
}
DOCKER_GROUPS = ("edge", "fog", "cloud")
GROUPS = ("edge", "fog", "cloud", "broker")
SSH_COMMON_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"


class TestbedError(RuntimeError):
    """The test bed could not be brought up, used or torn down; the message says which step and host."""

    __test__ = False  # not a pytest test class despite its name


# ---------------------------------------------------------------------------------------------------------
# model


@dataclasses.dataclass
class Host:
    name: str
    group: str
    address: str
    init_pid: int = 0  # the host's PID 1, as seen from the controller; 0 when not running
    docker: bool = False

    @property
    def veth(self) -> str:
        return f"mlpv-{self.name}"[:15]


@dataclasses.dataclass
class Testbed:
    __test__ = False  # not a pytest test class despite its name

    state_dir: Path
    hosts: dict[str, Host]
    key_path: Path
    inventory_path: Path
    broker_host: str
    broker_port: int
    broker_running: bool
    broker_pid: int = 0
    bridge: str = BRIDGE
    bridge_address: str = BRIDGE_ADDRESS
    broker_cert_port: int = BROKER_CERT_PORT
    broker_username: str = BROKER_USERNAME

    @property
    def docker(self) -> bool:
        return any(host.docker for host in self.hosts.values())

    @property
    def groups(self) -> dict[str, list[str]]:
        return {group: [h.name for h in self.hosts.values() if h.group == group] for group in GROUPS}

    @property
    def addresses(self) -> dict[str, str]:
        return {name: host.address for name, host in self.hosts.items()}

    def address(self, name: str) -> str:
        return self.host(name).address

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise TestbedError(
                f"host {name!r} is not in the test bed (hosts: {', '.join(self.hosts)})"
            ) from None

    def run(
        self,
        host: str,
        cmd: str,
        *,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside ``host`` (all its namespaces, its root) and return the result."""
        argv = host_argv(self.host(host).init_pid, ["/bin/sh", "-c", cmd])
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise TestbedError(
                f"command on {host} failed with exit code {result.returncode}: {cmd}\n"
                f"stdout: {result.stdout.strip()}\nstderr: {result.stderr.strip()}"
            )
        return result

    def ssh_argv(self, host: str, cmd: str) -> list[str]:
        """An ``ssh`` command line that runs ``cmd`` on ``host`` as root with the test bed's key."""
        return [
            "ssh",
            *SSH_COMMON_ARGS.split(),
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            "-i",
            str(self.key_path),
            f"root@{self.address(host)}",
            cmd,
        ]

    def ssh(
        self, host: str, cmd: str, *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` on ``host`` over real SSH (the ``ssh`` binary and the test bed's key)."""
        result = subprocess.run(self.ssh_argv(host, cmd), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise TestbedError(
                f"ssh {host} failed with exit code {result.returncode}: {cmd}\n"
                f"stdout: {result.stdout.strip()}\nstderr: {result.stderr.strip()}"
            )
        return result

    @property
    def broker_address(self) -> str:
        """``host:port`` of the broker host's Mosquitto (its TLS listener with a password)."""
        return f"{self.broker_host}:{self.broker_port}"

    @property
    def broker_files(self) -> dict[str, Path]:
        """The controller's files of broker1's Mosquitto (see ``broker_credential_files``)."""
        return broker_credential_files(self.state_dir)

    @property
    def broker_password(self) -> str:
        return self.broker_files["password"].read_text().strip()

    def broker_settings(self, *, client_certificate: bool = False) -> dict[str, Any]:
        """``mlpacker_broker`` for broker1's Mosquitto, as a user gives their own broker: host, port,
        username, password and TLS with the CA file (and, with ``client_certificate``, the listener that
        requires one: the client certificate and key files)."""
        files = self.broker_files
        tls: dict[str, Any] = {"enabled": True, "ca_file": str(files["ca_file"])}
        if client_certificate:
            tls.update(cert_file=str(files["client_cert_file"]), key_file=str(files["client_key_file"]))
        return {
            "host": self.broker_host,
            "port": self.broker_cert_port if client_certificate else self.broker_port,
            "username": self.broker_username,
            "password": self.broker_password,
            "tls": tls,
        }

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["key_path"] = str(self.key_path)
        data["inventory_path"] = str(self.inventory_path)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Testbed:
        return cls(
            state_dir=Path(data["state_dir"]),
            hosts={name: Host(**host) for name, host in data["hosts"].items()},
            key_path=Path(data["key_path"]),
            inventory_path=Path(data["inventory_path"]),
            broker_host=data["broker_host"],
            broker_port=int(data["broker_port"]),
            broker_running=bool(data["broker_running"]),
            broker_pid=int(data.get("broker_pid", 0)),
            bridge=data.get("bridge", BRIDGE),
            bridge_address=data.get("bridge_address", BRIDGE_ADDRESS),
            broker_cert_port=int(data.get("broker_cert_port", BROKER_CERT_PORT)),
            broker_username=data.get("broker_username", BROKER_USERNAME),
        )


# ---------------------------------------------------------------------------------------------------------
# small helpers


def state_dir_from_env() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def sh(argv: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def host_argv(init_pid: int, argv: list[str]) -> list[str]:
    """Enter every namespace of a host and its root, with a clean environment like a login would have."""
    if init_pid <= 0:
        raise TestbedError("the host is not running (no init pid); bring the test bed up first")
    return [
        "nsenter",
        "-t",
        str(init_pid),
        "--net",
        "--mount",
        "--uts",
        "--ipc",
        "--pid",
        "--root",
        "--wd",  # the target's cwd: '/' of the host (--wd=/ would resolve '/' outside the host's root)
        "--",
        "/usr/bin/env",
        "-i",
        f"PATH={HOST_PATH}",
        "HOME=/root",
        "LANG=C.UTF-8",
        *argv,
    ]


def tcp_open(address: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _mqtt_string(value: str) -> bytes:
    data = value.encode("utf-8")
    return len(data).to_bytes(2, "big") + data


def _mqtt_remaining_length(length: int) -> bytes:
    encoded = bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(encoded)


def mqtt_connect(
    host: str,
    port: int,
    *,
    ca_file: str | Path,
    username: str | None = None,
    password: str | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    timeout: float = 10,
) -> str:
    """What a TLS listener of Mosquitto answers one MQTT 3.1.1 CONNECT (standard library only): ``accepted``,
    ``refused <return code>`` (CONNACK 4: bad user name or password, 5: not authorised), or ``no CONNACK:
    <why>`` (a TLS alert, e.g. a listener that requires a client certificate; a closed connection). The broker
    is verified against ``ca_file`` and by ``host``: a broker certificate that fails that raises
    ``ssl.SSLCertVerificationError`` (not a refusal of the client)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert_file:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    flags = 0x02  # clean session
    payload = _mqtt_string(f"mlpacker-testbed-{os.getpid()}-{time.monotonic_ns()}")
    if username is not None:
        flags |= 0x80
        payload += _mqtt_string(username)
        if password is not None:
            flags |= 0x40
            payload += _mqtt_string(password)
    body = _mqtt_string("MQTT") + bytes([4, flags]) + (30).to_bytes(2, "big") + payload
    packet = b"\x10" + _mqtt_remaining_length(len(body)) + body
    answer = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(packet)
                while len(answer) < 4:
                    chunk = tls.recv(4 - len(answer))
                    if not chunk:
                        break
                    answer += chunk
                if answer == b"\x20\x02\x00\x00":
                    tls.sendall(b"\xe0\x00")  # DISCONNECT
    except ssl.SSLCertVerificationError:
        raise
    except (ssl.SSLError, OSError) as error:
        return f"no CONNACK: {error}"
    if len(answer) < 4 or answer[:2] != b"\x20\x02":
        return f"no CONNACK: {answer!r}"
    return "accepted" if answer[3] == 0 else f"refused {answer[3]}"


def wait_until(what: str, predicate: Any, timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TestbedError(f"timed out after {timeout:.0f}s waiting for {what}")


def pid_alive(pid: int) -> bool:
    return pid > 0 and Path(f"/proc/{pid}").exists()


@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True, timeout: float = 1800) -> Iterator[None]:
    """An exclusive flock, so two sessions never build over each other (the bed is machine-wide)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not blocking or time.monotonic() > deadline:
                    raise TestbedError(f"{path} is locked: another session is using the test bed") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def debian_mirror(sources: tuple[Path, ...] = APT_SOURCES) -> str:
    """The Debian archive this machine's apt uses (deb822 ``URIs:`` or a one-line ``deb`` entry; security
    archives skipped), for debootstrap: a mirror is the machine's setting, not the test bed's."""
    for path in sources:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            words = line.split("#", 1)[0].split()
            if words[:1] == ["URIs:"]:
                uris = words[1:]
            elif words[:1] == ["deb"]:
                # deb [arch=amd64 signed-by=...] URI SUITE COMPONENTS...
                rest = words[1:]
                while rest and rest[0].startswith("[") and not rest[0].endswith("]"):
                    rest = [rest[0] + " " + rest[1], *rest[2:]] if len(rest) > 1 else []
                uris = rest[1:2] if rest[:1] and rest[0].startswith("[") else rest[:1]
            else:
                continue
            for uri in uris:
                if not uri.rstrip("/").endswith("-security"):
                    return uri
    raise TestbedError(f"no Debian mirror found in the apt sources ({', '.join(map(str, sources))})")


def require_root_and_tools(docker: bool = False) -> None:
    if os.geteuid() != 0:
        raise TestbedError("the test bed needs root (network namespaces, mounts, iptables)")
    needed = ["ip", "iptables", "nsenter", "unshare", "chroot", "ssh-keygen", "/usr/sbin/sshd", "mosquitto"]
    if docker:
        needed += ["docker", "dockerd"]
        if not BASE_IMAGE_TARBALL.exists():
            needed.append("debootstrap")
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        raise TestbedError(f"missing tools for the test bed: {', '.join(missing)}")


# ---------------------------------------------------------------------------------------------------------
# the host's PID 1 and its boot script

# PID 1 of every host: reaps orphans (daemons that double-fork end up here) and runs sshd in the
# foreground; SIGTERM stops everything in the host. Named "testbed-init" so Ansible's fact
# ansible_service_mgr says "testbed-init": "init" would make Ansible guess "systemd" from the
# /sbin/init -> systemd symlink of the machine's filesystem, and no systemd runs in the hosts.
HOST_INIT = textwrap.dedent(
    """
    import ctypes, os, signal, subprocess, sys, time
    ctypes.CDLL(None).prctl(15, b"testbed-init", 0, 0, 0)  # PR_SET_NAME: what /proc/1/comm reads
    def stop(signum, frame):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(-1, sig)
            except ProcessLookupError:
                pass
            time.sleep(0.5)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-o", "PidFile=/run/sshd.pid"])
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(1)
    """
)


# Paths MLPacker deployments write on a host (see docs/architecture.md, "On each host").
DEPLOYMENT_PATHS = ("/opt/mlpacker", "/etc/mlpacker", "/var/log/mlpacker", "/var/lib/mlpacker")


def boot_script(bed: Testbed, host: Host) -> str:
    """Shell run as PID 1 of the new namespaces: mount the host's filesystem, then exec its init."""
    host_dir = bed.state_dir / "hosts" / host.name
    root = host_dir / "root"
    etc_hosts = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n" + "".join(
        f"{h.address} {h.name}\n" for h in bed.hosts.values()
    )
    public_key = Path(f"{bed.key_path}.pub").read_text().strip()
    lines = [
        "set -eu",
        f"R={root}",
        "# deployments on the machine write these paths of the lower '/': opaque folders in the host's",
        "# upper layer hide them, so local and test-bed deployments never see (or corrupt) each other's",
        "# files; unlike a mount, an opaque folder can still be removed by an undeploy",
        f"for p in {' '.join(DEPLOYMENT_PATHS)}; do",
        f'  U="{host_dir}/upper$p"',
        '  [ -d "$U" ] || rm -f "$U"',  # a whiteout left by an earlier undeploy
        '  mkdir -p "$U"',
        "  /usr/bin/python3 -c"
        ' \'import os, sys; os.setxattr(sys.argv[1], "trusted.overlay.opaque", b"y")\' "$U"',
        "done",
        f'mount -t overlay overlay -o lowerdir=/,upperdir={host_dir}/upper,workdir={host_dir}/work "$R"',
        'mount --rbind /dev "$R/dev"',
        'mount -t tmpfs -o mode=1777,size=256m tmpfs "$R/dev/shm"',
        'mount --rbind /sys "$R/sys"',
        'mount -t proc proc "$R/proc"',
        'mount -t tmpfs -o mode=755 tmpfs "$R/run"',
        'mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"',
        "# the other hosts' upper folders are under the lower '/': hide them from this host",
        f'mkdir -p "$R{bed.state_dir}/hosts"',
        f'mount -t tmpfs -o ro,size=4k tmpfs "$R{bed.state_dir}/hosts"',
        "# and the controller's credentials of broker1's Mosquitto (a deploy ships what a host needs)",
        f'mkdir -p "$R{bed.state_dir}/{BROKER_CREDENTIALS}"',
        f'mount -t tmpfs -o ro,size=4k tmpfs "$R{bed.state_dir}/{BROKER_CREDENTIALS}"',
        "# copy the user database up now, so users the machine adds or removes later stay out of it",
        "for f in passwd group shadow gshadow; do",
        '  cp -a "$R/etc/$f" "$R/etc/$f.tb" && mv -f "$R/etc/$f.tb" "$R/etc/$f"',
        "done",
        'mkdir -p -m 755 "$R/run/sshd"',
        f"hostname {host.name}",
        f'echo {host.name} > "$R/etc/hostname"',
        f"cat > \"$R/etc/hosts\" <<'EOF'\n{etc_hosts}EOF",
        "# the key goes into the host's own copy of root's home: the machine's file is never touched",
        'mkdir -p "$R/root/.ssh"',
        'chmod 700 "$R/root/.ssh"',
        f"echo '{public_key}' >> \"$R/root/.ssh/authorized_keys\"",
        'chmod 600 "$R/root/.ssh/authorized_keys"',
        f"exec chroot \"$R\" /usr/bin/python3 -c '{HOST_INIT}' {INIT_MARKER} {host.name} {bed.state_dir}",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# teardown (also of leftovers of a crashed or half-torn-down run)


def _netns_pids(name: str) -> list[int]:
    if not Path(f"/var/run/netns/{name}").exists():
        return []
    result = sh(["ip", "netns", "pids", name], check=False)
    return [int(pid) for pid in result.stdout.split() if pid.isdigit()]


def _marked_init_pids(state_dir: Path) -> dict[int, str]:
    """Init processes of this state dir's hosts, found by their marker (also when the netns is gone)."""
    found: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if INIT_MARKER.encode() in args:
            index = args.index(INIT_MARKER.encode())
            if len(args) > index + 2 and args[index + 2].decode() == str(state_dir):
                found[int(proc.name)] = args[index + 1].decode()
    return found


# `unshare` processes this Python started (each the parent of a host's init): reaped on teardown
_boot_processes: list[subprocess.Popen[bytes]] = []


def _reap_boot_processes() -> None:
    for process in list(_boot_processes):
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
            _boot_processes.remove(process)


def _kill_host_processes(state_dir: Path, names: list[str]) -> None:
    # Killing a host's PID 1 makes the kernel kill everything in its PID namespace (sshd, dockerd,
    # containerd, containers, deployed services); the netns pids catch anything that entered only the netns.
    victims = set(_marked_init_pids(state_dir))
    for name in names:
        victims.update(_netns_pids(name))
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        alive = [pid for pid in victims if pid_alive(pid) and not _is_zombie(pid)]
        alive += [pid for name in names for pid in _netns_pids(name)]
        if not alive:
            _reap_boot_processes()
            return
        time.sleep(0.1)
    raise TestbedError(f"host processes did not stop: {sorted(set(alive))}")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _remove_iptables_rules(bridge: str) -> None:
    for chain in ("FORWARD", "DOCKER-USER"):
        rule = ["-i", bridge, "-o", bridge, "-m", "comment", "--comment", IPTABLES_COMMENT, "-j", "ACCEPT"]
        while sh(["iptables", "-D", chain, *rule], check=False).returncode == 0:
            pass


def _remove_cgroups(names: list[str]) -> None:
    # per-host docker engines put their containers under /<cgroup controller>/mlpacker-tb-<host>/
    cgroup_root = Path("/sys/fs/cgroup")
    if not cgroup_root.is_dir():
        return
    for controller in cgroup_root.iterdir():
        for name in names:
            top = controller / f"mlpacker-tb-{name}"
            if not top.is_dir():
                continue
            for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if path.is_dir():
                    with contextlib.suppress(OSError):
                        path.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


def _unmount_under(path: Path) -> None:
    # The hosts' own mounts live in their private mount namespaces and vanish with them; on the machine
    # side there is the hosts' tmpfs and whatever a crashed run left: lazily unmount so rm never walks in.
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as mountinfo:
        targets = [
            line.split()[4]
            for line in mountinfo
            if line.split()[4].startswith(prefix) or line.split()[4] == str(path)
        ]
    for target in sorted(targets, key=len, reverse=True):
        sh(["umount", "-l", target], check=False)


def teardown(state_dir: Path | None = None) -> list[str]:
    """Stop and remove everything the test bed made; tolerant of missing pieces. Returns what was done."""
    state_dir = (state_dir or state_dir_from_env()).resolve()  # as the init markers spell it
    done: list[str] = []
    names = list(HOST_LAYOUT)
    bed = load(state_dir)
    if bed is not None:
        names = sorted(set(names) | set(bed.hosts))
    _kill_host_processes(state_dir, names)
    done.append("stopped host processes")
    _remove_iptables_rules(BRIDGE)
    for name in names:
        if Path(f"/var/run/netns/{name}").exists():
            sh(["ip", "netns", "del", name], check=False)
            done.append(f"deleted netns {name}")
        veth = Host(name, "", "").veth
        if sh(["ip", "link", "show", veth], check=False).returncode == 0:
            sh(["ip", "link", "del", veth], check=False)
    if sh(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
        sh(["ip", "link", "del", BRIDGE])
        done.append(f"deleted bridge {BRIDGE}")
    _remove_cgroups(names)
    hosts_dir = state_dir / "hosts"
    if hosts_dir.exists():
        _unmount_under(hosts_dir)
        shutil.rmtree(hosts_dir)
        done.append(f"removed {hosts_dir}")
    for leftover in ("state.json", "inventory.yml"):
        with contextlib.suppress(FileNotFoundError):
            (state_dir / leftover).unlink()
    return done


# ---------------------------------------------------------------------------------------------------------
# bring-up


def load(state_dir: Path | None = None) -> Testbed | None:
    state_file = (state_dir or state_dir_from_env()) / "state.json"
    if not state_file.exists():
        return None
    return Testbed.from_json(json.loads(state_file.read_text()))


def save(bed: Testbed) -> None:
    state_file = bed.state_dir / "state.json"
    state_file.write_text(json.dumps(bed.to_json(), indent=2) + "\n")


def _ensure_key(state_dir: Path) -> Path:
    key = state_dir / "id_ed25519"
    if not (key.exists() and Path(f"{key}.pub").exists()):
        for stale in (key, Path(f"{key}.pub")):
            stale.unlink(missing_ok=True)
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mlpacker-testbed", "-f", str(key)])
    return key


def _setup_network(bed: Testbed) -> None:
    sh(["ip", "link", "add", BRIDGE, "type", "bridge"])
    sh(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE])
    sh(["ip", "link", "set", BRIDGE, "up"])
    # Docker's install drops forwarded traffic (FORWARD policy DROP with br_netfilter): let our bridge
    # talk to itself. In FORWARD so it also holds when the machine's dockerd starts later.
    rule = ["-i", BRIDGE, "-o", BRIDGE, "-m", "comment", "--comment", IPTABLES_COMMENT, "-j", "ACCEPT"]
    sh(["iptables", "-I", "FORWARD", "1", *rule])
    if sh(["iptables", "-n", "-L", "DOCKER-USER"], check=False).returncode == 0:
        sh(["iptables", "-I", "DOCKER-USER", "1", *rule])
    for host in bed.hosts.values():
        sh(["ip", "netns", "add", host.name])
        sh(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.name])
        sh(["ip", "link", "set", host.veth, "master", BRIDGE, "up"])
        inside = ["ip", "-n", host.name]
        sh([*inside, "addr", "add", f"{host.address}/24", "dev", "eth0"])
        sh([*inside, "link", "set", "eth0", "up"])
        sh([*inside, "link", "set", "lo", "up"])
        # no default route on purpose: the hosts are offline like many real edge devices


def _mount_hosts_dir(hosts_dir: Path) -> None:
    """Put the hosts' upper folders and Docker data roots on a tmpfs (unless disabled).

    Deleting a few hundred MB of image layers per host from this machine's disk takes close to a
    minute; unmounting a tmpfs is instant. The size is a cap: memory is only used as files are written.
    """
    hosts_dir.mkdir(parents=True, exist_ok=True)
    if os.environ.get(TMPFS_ENV, "1") == "0":
        return
    size = os.environ.get(TMPFS_SIZE_ENV, "12g")
    sh(["mount", "-t", "tmpfs", "-o", f"size={size},mode=755", "mlpacker-testbed", str(hosts_dir)])


def _boot_host(bed: Testbed, host: Host) -> subprocess.Popen[bytes]:
    host_dir = bed.state_dir / "hosts" / host.name
    for sub in ("upper", "work", "root"):
        (host_dir / sub).mkdir(parents=True, exist_ok=True)
    script = host_dir / "boot.sh"
    script.write_text(boot_script(bed, host))
    log = open(host_dir / "boot.log", "ab")  # noqa: SIM115 - handed to the long-lived child
    argv = [
        "nsenter",
        f"--net=/var/run/netns/{host.name}",
        "unshare",
        "--mount",
        "--pid",
        "--uts",
        "--ipc",
        "--fork",
        "--propagation",
        "private",
        "/bin/sh",
        str(script),
    ]
    with log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    _boot_processes.append(process)
    return process


def _find_init_pid(state_dir: Path, name: str) -> int:
    for pid, host_name in _marked_init_pids(state_dir).items():
        if host_name == name:
            return pid
    return 0


def _collection_module(name: str) -> Any:
    """A module of the collection's module_utils, loaded from its file."""
    spec = importlib.util.spec_from_file_location(f"_mlpacker_testbed_{name}", MODULE_UTILS / f"{name}.py")
    if spec is None or spec.loader is None:
        raise TestbedError(f"cannot load {MODULE_UTILS / name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def broker_credential_files(state_dir: Path) -> dict[str, Path]:
    """The controller's files of broker1's Mosquitto, in ``<state>/broker``: its CA (``ca_file``, ``ca_key``),
    its listener certificate (``cert_file``, ``key_file``), a client certificate (``client_cert_file``,
    ``client_key_file``) and the password of ``BROKER_USERNAME`` (``password``)."""
    folder = state_dir / BROKER_CREDENTIALS
    return {
        "ca_file": folder / "ca.crt",
        "ca_key": folder / "ca.key",
        "cert_file": folder / "server.crt",
        "key_file": folder / "server.key",
        "client_cert_file": folder / "client.crt",
        "client_key_file": folder / "client.key",
        "password": folder / "password",
    }


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def ensure_broker_credentials(state_dir: Path, address: str, name: str = "broker1") -> dict[str, Path]:
    """Make broker1's credentials when missing, damaged or near expiry, else keep them (like the SSH key):
    a CA, a listener certificate for ``address`` and ``name``, a client certificate and a password, with
    the collection's PKI (``cryptography``). Returns their paths."""
    pki = _collection_module("pki")
    if not pki.HAS_CRYPTOGRAPHY:
        raise TestbedError(
            "broker1's credentials need the Python package cryptography (Debian: python3-cryptography)"
        )
    files = broker_credential_files(state_dir)
    files["ca_file"].parent.mkdir(mode=0o700, exist_ok=True)
    os.chmod(files["ca_file"].parent, 0o700)
    now = datetime.datetime.now(datetime.timezone.utc)

    def read(path: Path) -> bytes | None:
        return path.read_bytes() if path.is_file() else None

    if pki.ca_renewal_reason(read(files["ca_file"]), read(files["ca_key"]), now) is not None:
        ca_key, ca_cert = pki.make_ca(
            "MLPacker test bed broker CA", 3650, now, organization="MLPacker test bed"
        )
        _write_private(files["ca_key"], pki.private_key_pem(ca_key))
        _write_private(files["ca_file"], pki.certificate_pem(ca_cert))
    ca_cert = pki.load_certificate(files["ca_file"].read_bytes())
    ca_key = pki.load_private_key(files["ca_key"].read_bytes())
    leaves = [
        ("cert_file", "key_file", name, pki.subject_alt_names(address, name), ["server"]),
        ("client_cert_file", "client_key_file", f"{BROKER_USERNAME}-client", [], ["client"]),
    ]
    for cert_name, key_name, common_name, sans, purposes in leaves:
        reason = pki.leaf_renewal_reason(read(files[cert_name]), read(files[key_name]), ca_cert, sans, now)
        if reason is not None:
            key, cert = pki.issue_certificate(
                ca_key, ca_cert, common_name, sans, 825, now, purposes, organization="MLPacker test bed"
            )
            _write_private(files[key_name], pki.private_key_pem(key))
            _write_private(files[cert_name], pki.certificate_pem(cert))
    if not (read(files["password"]) or b"").strip():
        _write_private(files["password"], (secrets.token_urlsafe(24) + "\n").encode())
    return files


def broker_config(bed: Testbed) -> str:
    """broker1's mosquitto.conf: two TLS listeners, each with the password file and no anonymous client;
    the second one also requires a client certificate signed by the test bed's broker CA."""
    lines = [
        "# the test bed's own Mosquitto: the tests' \"user's broker\" (not MLPacker's managed one)",
        "per_listener_settings true",
        "persistence false",
    ]
    for port, client_certificate in ((bed.broker_port, False), (bed.broker_cert_port, True)):
        lines += [
            f"listener {port} 0.0.0.0",
            "allow_anonymous false",
            f"password_file {BROKER_CONF_DIR}/passwd",
            f"cafile {BROKER_CONF_DIR}/ca.crt",
            f"certfile {BROKER_CONF_DIR}/server.crt",
            f"keyfile {BROKER_CONF_DIR}/server.key",
        ]
        if client_certificate:
            lines.append("require_certificate true")
    return "\n".join(lines) + "\n"


def _start_broker(bed: Testbed) -> None:
    broker = bed.hosts["broker1"]
    files = bed.broker_files
    mqtt_credentials = _collection_module("mqtt_credentials")
    shipped = {
        "ca.crt": files["ca_file"].read_text(),
        "server.crt": files["cert_file"].read_text(),
        "server.key": files["key_file"].read_text(),
        "passwd": f"{bed.broker_username}:{mqtt_credentials.password_hash(bed.broker_password)}\n",
        "mlpacker-testbed.conf": broker_config(bed),
    }
    # Mosquitto started as root reads its files as the user "mosquitto": 0640 root:mosquitto.
    bed.run(broker.name, f"install -d -m 0750 -o root -g mosquitto {BROKER_CONF_DIR}")
    for filename, content in shipped.items():
        path = f"{BROKER_CONF_DIR}/{filename}"
        bed.run(
            broker.name,
            f"umask 077; cat > {path}.new && chown root:mosquitto {path}.new && chmod 0640 {path}.new"
            f" && mv {path}.new {path}",
            input=content,
        )
    started = bed.run(
        broker.name,
        f"setsid mosquitto -c {BROKER_CONF_DIR}/mlpacker-testbed.conf"
        " </dev/null >/var/log/mosquitto-testbed.log 2>&1 & echo $!",
    )
    bed.broker_pid = int(started.stdout.strip())  # the pid inside broker1's PID namespace
    for port in (bed.broker_port, bed.broker_cert_port):
        wait_until(
            f"mosquitto on {broker.address}:{port} (see /var/log/mosquitto-testbed.log on broker1)",
            lambda port=port: tcp_open(broker.address, port),
            15,
        )


def broker_accepts_the_test_bed(bed: Testbed) -> bool:
    """Both listeners of broker1's Mosquitto accept the test bed's user (the second one with the client
    certificate) over TLS verified against the test bed's broker CA."""
    files = bed.broker_files
    common = {"ca_file": files["ca_file"], "username": bed.broker_username, "password": bed.broker_password}
    try:
        return (
            mqtt_connect(bed.broker_host, bed.broker_port, **common, timeout=2) == "accepted"
            and mqtt_connect(
                bed.broker_host,
                bed.broker_cert_port,
                **common,
                cert_file=files["client_cert_file"],
                key_file=files["client_key_file"],
                timeout=2,
            )
            == "accepted"
        )
    except ssl.SSLCertVerificationError:
        return False  # not the test bed's broker (or its certificate changed under it)


def up(
    *,
    docker: bool = False,
    broker: bool = True,
    state_dir: Path | None = None,
    inventory_path: Path | None = None,
) -> Testbed:
    """Bring the test bed up from scratch (after tearing down any leftovers) and return it."""
    require_root_and_tools(docker)
    state_dir = (state_dir or state_dir_from_env()).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    teardown(state_dir)
    key = _ensure_key(state_dir)
    if broker:
        ensure_broker_credentials(state_dir, f"{SUBNET_PREFIX}.{HOST_LAYOUT['broker1'][1]}")
    _mount_hosts_dir(state_dir / "hosts")
    bed = Testbed(
        state_dir=state_dir,
        hosts={
            name: Host(name, group, f"{SUBNET_PREFIX}.{octet}")
            for name, (group, octet) in HOST_LAYOUT.items()
        },
        key_path=key,
        inventory_path=inventory_path or state_dir / "inventory.yml",
        broker_host=f"{SUBNET_PREFIX}.{HOST_LAYOUT['broker1'][1]}",
        broker_port=BROKER_PORT,
        broker_running=False,
    )
    try:
        _setup_network(bed)
        booting = {name: _boot_host(bed, host) for name, host in bed.hosts.items()}
        for name, host in bed.hosts.items():
            process = booting[name]

            def started(name: str = name, process: subprocess.Popen[bytes] = process) -> bool:
                if process.poll() is not None:
                    log = (bed.state_dir / "hosts" / name / "boot.log").read_text(errors="replace")
                    raise TestbedError(f"host {name} failed to boot:\n{log[-2000:]}")
                return _find_init_pid(state_dir, name) > 0

            wait_until(f"host {name} to boot", started, 30)
            host.init_pid = _find_init_pid(state_dir, name)
        for host in bed.hosts.values():
            wait_until(
                f"sshd on {host.name} ({host.address}:22)", lambda a=host.address: tcp_open(a, SSH_PORT), 30
            )
        if broker:
            _start_broker(bed)
            bed.broker_running = True
        save(bed)
        write_inventory(bed, bed.inventory_path)
        if docker:
            enable_docker(bed)
    except BaseException:
        with contextlib.suppress(Exception):
            teardown(state_dir)
        raise
    return bed


# ---------------------------------------------------------------------------------------------------------
# docker: the machine's engine (to build the base image) and one engine per host


def ensure_main_dockerd(timeout: float = 60) -> None:
    """Start the machine's own dockerd when it is not running (it stays running: other work uses it)."""
    if sh(["docker", "info"], check=False, timeout=30).returncode == 0:
        return
    with file_lock(IMAGE_CACHE_DIR / "dockerd-start.lock", timeout=timeout):
        if sh(["docker", "info"], check=False, timeout=30).returncode == 0:
            return
        with open("/var/log/dockerd.log", "ab") as log:
            subprocess.Popen(
                ["dockerd"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        wait_until(
            "the machine's dockerd (see /var/log/dockerd.log)",
            lambda: sh(["docker", "info"], check=False, timeout=30).returncode == 0,
            timeout,
            interval=0.5,
        )


def build_base_image(force: bool = False) -> Path:
    """Make ``mlpacker-base:bookworm`` in the machine's engine (debootstrap + docker import).

    The ``docker save`` of it is cached in ``.cache/`` and reused: when present, it is only loaded.
    Returns the cached tarball.
    """
    IMAGE_CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with file_lock(IMAGE_CACHE_DIR / "mlpacker-base.lock"):
        ensure_main_dockerd()
        if BASE_IMAGE_TARBALL.exists() and not force:
            if sh(["docker", "image", "inspect", BASE_IMAGE], check=False).returncode != 0:
                sh(["docker", "load", "-i", str(BASE_IMAGE_TARBALL)], timeout=600)
            return BASE_IMAGE_TARBALL
        with tempfile.TemporaryDirectory(dir=IMAGE_CACHE_DIR, prefix="rootfs-") as work:
            rootfs = Path(work) / "rootfs"
            sh(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=python3,python3-venv,python3-pip,ca-certificates",
                    "bookworm",
                    str(rootfs),
                    debian_mirror(),
                ],
                timeout=1200,
            )
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            imported = subprocess.run(
                ["docker", "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True, text=True
            )
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.wait() != 0 or imported.returncode != 0:
                raise TestbedError(
                    f"docker import of the debootstrap rootfs failed: {imported.stderr.strip()}"
                )
            partial = BASE_IMAGE_TARBALL.with_suffix(".part")
            sh(["docker", "save", "-o", str(partial), BASE_IMAGE], timeout=600)
            partial.rename(BASE_IMAGE_TARBALL)
        return BASE_IMAGE_TARBALL


def base_image_tarball() -> Path:
    """The cached base image (built first when missing; only then is the machine's engine needed)."""
    if BASE_IMAGE_TARBALL.exists():
        return BASE_IMAGE_TARBALL
    return build_base_image()


def _docker_info_ok(bed: Testbed, host: str) -> bool:
    return bed.run(host, "docker info --format '{{.ServerVersion}}'", check=False, timeout=30).returncode == 0


def _start_host_docker(bed: Testbed, host: Host, index: int, tarball: Path) -> None:
    host_dir = bed.state_dir / "hosts" / host.name
    data_root = host_dir / "docker"
    data_root.mkdir(parents=True, exist_ok=True)
    # overlay2 cannot sit on the overlay root: bind a real folder from the host's own mount namespace
    bind = ["nsenter", "-t", str(host.init_pid), "--mount", "--"]
    target = host_dir / "root" / "var" / "lib" / "docker"
    sh([*bind, "mkdir", "-p", str(target)])
    if sh([*bind, "mountpoint", "-q", str(target)], check=False).returncode != 0:
        sh([*bind, "mount", "--bind", str(data_root), str(target)])
    if not _docker_info_ok(bed, host.name):
        # the machine's /etc/docker/key.json would give every engine the machine's engine ID
        bed.run(host.name, "rm -f /etc/docker/key.json")
        bed.run(
            host.name,
            "setsid dockerd --data-root /var/lib/docker"
            f" --bip {DOCKER_BIP_PREFIX}.{index}.1/24"
            " --exec-opt native.cgroupdriver=cgroupfs"
            f" --cgroup-parent /mlpacker-tb-{host.name}"
            " </dev/null >/var/log/dockerd.log 2>&1 &",
        )
        try:
            wait_until(f"dockerd on {host.name}", lambda: _docker_info_ok(bed, host.name), 60, interval=0.5)
        except TestbedError:
            log = bed.run(host.name, "tail -n 20 /var/log/dockerd.log", check=False).stdout
            raise TestbedError(f"dockerd on {host.name} did not start:\n{log}") from None
    if bed.run(host.name, f"docker image inspect {BASE_IMAGE}", check=False).returncode != 0:
        # stream the image in: the cache folder need not be visible inside the host
        with open(tarball, "rb") as image:
            loaded = subprocess.run(
                host_argv(host.init_pid, ["docker", "load"]), stdin=image, capture_output=True, timeout=600
            )
        if loaded.returncode != 0:
            raise TestbedError(f"docker load on {host.name} failed: {loaded.stderr.decode(errors='replace')}")
    host.docker = True


def enable_docker(bed: Testbed) -> Testbed:
    """Start a Docker engine with the base image in every edge/fog/cloud host (idempotent)."""
    require_root_and_tools(docker=True)
    tarball = base_image_tarball()
    errors: list[str] = []
    targets = [h for h in bed.hosts.values() if h.group in DOCKER_GROUPS]

    def start(host: Host, index: int) -> None:
        try:
            _start_host_docker(bed, host, index, tarball)
        except Exception as error:  # noqa: BLE001 - collected and raised together below
            errors.append(f"{host.name}: {error}")

    threads = [threading.Thread(target=start, args=(host, HOST_LAYOUT[host.name][1])) for host in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    save(bed)
    write_inventory(bed, bed.inventory_path)
    if errors:
        raise TestbedError("docker engines failed to start:\n" + "\n".join(errors))
    return bed


# ---------------------------------------------------------------------------------------------------------
# inventory and status


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a valid YAML double-quoted scalar


def _yaml(data: dict[str, Any], indent: int = 0) -> str:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            if value:
                lines.append(f"{' ' * indent}{key}:\n{_yaml(value, indent + 2)}")
            else:
                lines.append(f"{' ' * indent}{key}: {{}}")
        else:
            lines.append(f"{' ' * indent}{key}: {_yaml_scalar(value)}")
    return "\n".join(lines)


def inventory_data(bed: Testbed) -> dict[str, Any]:
    connection = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(bed.key_path),
        "ansible_ssh_common_args": SSH_COMMON_ARGS,
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    children: dict[str, Any] = {}
    for group, names in bed.groups.items():
        children[group] = {
            "hosts": {
                name: {
                    "ansible_host": bed.address(name),
                    **connection,
                    "testbed_docker": bed.hosts[name].docker,
                }
                for name in names
            }
        }
    all_vars: dict[str, Any] = {
        "testbed_broker_host": bed.broker_host,
        "testbed_broker_port": bed.broker_port,
    }
    if bed.broker_running:
        # the test bed's own Mosquitto is the pipelines' broker (the user's own: TLS with its CA, a password);
        # without it, roles manage one on broker1
        all_vars["mlpacker_broker"] = bed.broker_settings()
    return {"all": {"vars": all_vars, "children": children}}


def write_inventory(bed: Testbed, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# written by tests/testbed (mlpacker test bed); regenerated on every bring-up\n"
    # 0600: it holds broker1's password
    _write_private(path, (header + _yaml(inventory_data(bed)) + "\n").encode())
    return path


def _answers(probe: Any, attempts: int = 3) -> bool:
    # On a loaded 2-core machine one probe can miss (a slow accept, a busy dockerd); a few tries
    # a second apart tell "slow" from "down" without hiding a host that stays down.
    for attempt in range(attempts):
        if attempt:
            time.sleep(1)
        try:
            if probe():
                return True
        except subprocess.TimeoutExpired:
            continue
    return False


def status(state_dir: Path | None = None) -> dict[str, Any]:
    bed = load(state_dir)
    if bed is None:
        return {"up": False, "hosts": {}}
    hosts: dict[str, Any] = {}
    for host in bed.hosts.values():
        running = pid_alive(host.init_pid) and _find_init_pid(bed.state_dir, host.name) == host.init_pid
        entry: dict[str, Any] = {
            "group": host.group,
            "address": host.address,
            "init_pid": host.init_pid,
            "running": running,
            "ssh": running and _answers(lambda h=host: tcp_open(h.address, SSH_PORT, timeout=2)),
        }
        if host.docker:
            entry["docker"] = running and _answers(lambda h=host: _docker_info_ok(bed, h.name))
        hosts[host.name] = entry
    broker_ok = None
    if bed.broker_running:
        broker_ok = _answers(lambda: broker_accepts_the_test_bed(bed))
    healthy = all(h["running"] and h["ssh"] and h.get("docker", True) for h in hosts.values())
    return {
        "up": healthy and broker_ok is not False,
        "hosts": hosts,
        "broker": {"host": bed.broker_host, "port": bed.broker_port, "reachable": broker_ok},
        "inventory": str(bed.inventory_path),
        "ssh_key": str(bed.key_path),
    }


# ---------------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up_cmd = commands.add_parser("up", help="bring the test bed up (tearing down leftovers first)")
    up_cmd.add_argument(
        "--docker", action="store_true", help="also a Docker engine with the base image per host"
    )
    up_cmd.add_argument("--no-broker", action="store_true", help="leave broker1 without Mosquitto")
    up_cmd.add_argument("--inventory", type=Path, help="where to write the inventory (default: state dir)")
    commands.add_parser("down", help="tear everything down")
    commands.add_parser("status", help="print the state as JSON; exit 1 when not healthy")
    inv_cmd = commands.add_parser("inventory", help="write the Ansible inventory of the running test bed")
    inv_cmd.add_argument("path", type=Path, nargs="?", help="default: print it")
    commands.add_parser("build-image", help=f"build (or load from the cache) {BASE_IMAGE}")
    args = parser.parse_args(argv)
    state_dir = state_dir_from_env()
    try:
        if args.command == "up":
            started = time.monotonic()
            with file_lock(state_dir / "lock", blocking=False):
                bed = up(docker=args.docker, broker=not args.no_broker, inventory_path=args.inventory)
            print(f"test bed up in {time.monotonic() - started:.1f}s; inventory: {bed.inventory_path}")
            for host in bed.hosts.values():
                print(f"  {host.name:8} {host.group:7} {host.address}  docker={host.docker}")
            print(
                f"  broker   {bed.broker_host}:{bed.broker_port} (TLS, password),"
                f" :{bed.broker_cert_port} (+ client certificate) running={bed.broker_running};"
                f" credentials: {bed.broker_files['ca_file'].parent}"
            )
            print(f"  ssh -i {bed.key_path} {SSH_COMMON_ARGS} root@{bed.address('edge1')}")
        elif args.command == "down":
            with file_lock(state_dir / "lock", blocking=False):
                for step in teardown(state_dir):
                    print(step)
        elif args.command == "status":
            report = status(state_dir)
            print(json.dumps(report, indent=2))
            return 0 if report["up"] else 1
        elif args.command == "inventory":
            bed = load(state_dir)
            if bed is None:
                raise TestbedError(f"the test bed is not up (no {state_dir / 'state.json'})")
            if args.path:
                print(write_inventory(bed, args.path))
            else:
                print(_yaml(inventory_data(bed)))
        elif args.command == "build-image":
            print(build_base_image())
    except TestbedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
