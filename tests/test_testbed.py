"""The test bed itself: real SSH, private filesystems and processes, TCP between hosts, the broker,
no route off the bridge, Ansible over SSH, and Docker engines per host."""

from __future__ import annotations

import errno
import json
import shlex
import socket
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.testbed import BASE_IMAGE, Testbed
from tests.testbed.testbed import (
    DOCKER_BIP_PREFIX,
    TestbedError,
    debian_mirror,
    ensure_broker_credentials,
    mqtt_connect,
    tcp_open,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = REPO_ROOT / ".venv" / "bin"

pytestmark = pytest.mark.testbed


def test_ssh_into_each_host_as_root(testbed: Testbed) -> None:
    for name, host in testbed.hosts.items():
        result = testbed.ssh(name, "hostname; hostname -I; id -u; cat /proc/1/comm")
        hostname, addresses, uid, init = result.stdout.split("\n")[:4]
        assert hostname == name
        # A host whose Docker engine an earlier test started also has its docker0 address.
        assert [a for a in addresses.split() if not a.startswith(f"{DOCKER_BIP_PREFIX}.")] == [host.address]
        assert uid == "0"
        assert init == "testbed-init"  # the host's own PID namespace, not the machine's PID 1


def test_ssh_rejects_a_key_it_was_not_given(testbed: Testbed, tmp_path: Path) -> None:
    other_key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    argv = testbed.ssh_argv("edge1", "true")
    argv[argv.index(str(testbed.key_path))] = str(other_key)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 255, result.stderr
    assert "Permission denied" in result.stderr


def test_files_written_on_a_host_stay_on_that_host(testbed: Testbed) -> None:
    probe = f"/opt/mlpacker-testbed-probe/{uuid.uuid4().hex}"
    testbed.ssh("edge1", f"mkdir -p {Path(probe).parent} && echo written-on-edge1 > {probe}")
    try:
        assert testbed.run("edge1", f"cat {probe}").stdout == "written-on-edge1\n"
        assert not Path(probe).exists(), "leaked onto the machine"
        for other in ("edge2", "fog1", "cloud1", "broker1"):
            assert testbed.run(other, f"test -e {probe}", check=False).returncode == 1, other
        # copy-on-write: it lands in edge1's own upper folder only
        upper = testbed.state_dir / "hosts" / "edge1" / "upper"
        assert (upper / probe.lstrip("/")).read_text() == "written-on-edge1\n"
        # and the other hosts cannot peek at it through the machine's filesystem under theirs
        assert testbed.run("edge2", f"ls -A {testbed.state_dir}/hosts").stdout == ""
    finally:
        testbed.run("edge1", f"rm -rf {Path(probe).parent}")


def test_processes_are_private_to_their_host(testbed: Testbed) -> None:
    marker = f"mlpacker-testbed-sleep-{uuid.uuid4().hex[:8]}"
    started = testbed.run(
        "edge1",
        f"setsid python3 -c 'import time; time.sleep(300)' {marker} </dev/null >/dev/null 2>&1 & echo $!",
    )
    pid_on_edge1 = started.stdout.strip()
    pattern = f"'[{marker[0]}]{marker[1:]}'"  # a regex that does not match the pgrep command line itself
    try:
        assert testbed.run("edge1", f"pgrep -f {pattern}").stdout.split() == [pid_on_edge1]
        assert testbed.run("edge2", f"pgrep -f {pattern}", check=False).returncode == 1
        assert subprocess.run(["pgrep", "-f", pattern.strip("'")], capture_output=True).stdout  # same kernel
    finally:
        testbed.run("edge1", f"kill {pid_on_edge1}", check=False)


def test_every_host_reaches_every_other_host_over_tcp(testbed: Testbed) -> None:
    # connect to each other host's sshd and read its banner: real TCP across the bridge
    script = (
        "import socket, sys\n"
        "for address in sys.argv[1:]:\n"
        "    with socket.create_connection((address, 22), timeout=5) as conn:\n"
        "        print(address, conn.recv(64).decode().split('-')[0])\n"
    )
    for name in testbed.hosts:
        others = [host.address for other, host in testbed.hosts.items() if other != name]
        result = testbed.ssh(name, f'python3 -c "{script}" {" ".join(others)}')
        assert result.stdout.split("\n")[:-1] == [f"{address} SSH" for address in others]


def test_hosts_reach_the_broker(testbed: Testbed) -> None:
    assert testbed.broker_running
    assert testbed.groups["broker"] == ["broker1"]
    assert testbed.broker_host == testbed.address("broker1")
    topic = f"mlpacker-testbed/{uuid.uuid4().hex}"
    publishers = ["edge1", "edge2", "fog1", "cloud1"]
    files = testbed.broker_files
    # What a user hands a host for their broker: its CA and the password (the controller's files are hidden
    # from the hosts).
    remote_ca, remote_password = "/tmp/testbed-broker-ca.crt", "/tmp/testbed-broker-password"
    tls = ["-h", testbed.broker_host, "-p", str(testbed.broker_port), "--cafile"]
    login = ["-u", testbed.broker_username, "-P", testbed.broker_password]
    try:
        for name in publishers:
            testbed.run(name, f"cat > {remote_ca}", input=files["ca_file"].read_text())
            testbed.run(name, f"umask 077; cat > {remote_password}", input=testbed.broker_password)
            # retained, so the controller's subscriber gets it without racing the publishers
            testbed.ssh(
                name,
                f"mosquitto_pub -h {testbed.broker_host} -p {testbed.broker_port} --cafile {remote_ca}"
                f' -u {testbed.broker_username} -P "$(cat {remote_password})"'
                f" -q 1 -r -t {topic}/{name} -m from-$(hostname)",
            )
        received = subprocess.run(
            ["mosquitto_sub", *tls, str(files["ca_file"]), *login]
            + ["-t", f"{topic}/#", "-v", "-C", str(len(publishers)), "-W", "20"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert received.returncode == 0, received.stderr
        assert sorted(received.stdout.splitlines()) == sorted(f"{topic}/{n} from-{n}" for n in publishers)
    finally:
        for name in publishers:  # clear the retained messages
            testbed.run(name, f"rm -f {remote_ca} {remote_password}", check=False)
            subprocess.run(
                ["mosquitto_pub", *tls, str(files["ca_file"]), *login, "-r", "-n", "-t", f"{topic}/{name}"],
                capture_output=True,
                timeout=30,
            )


def test_the_broker_is_a_secured_users_broker(testbed: Testbed) -> None:
    # broker1's Mosquitto is the tests' "user's own broker": TLS with the test bed's CA, a password, no
    # anonymous client; the second listener also requires a client certificate of that CA.
    host, files = testbed.broker_host, testbed.broker_files
    ca = {"ca_file": files["ca_file"]}
    user, password = testbed.broker_username, testbed.broker_password
    certificate = {"cert_file": files["client_cert_file"], "key_file": files["client_key_file"]}
    port, cert_port = testbed.broker_port, testbed.broker_cert_port
    assert mqtt_connect(host, port, **ca) == "refused 5"  # anonymous: CONNACK "not authorised"
    assert mqtt_connect(host, port, **ca, username=user, password=password + "-wrong") == "refused 5"
    assert mqtt_connect(host, port, **ca, username=user, password=password) == "accepted"
    assert mqtt_connect(host, cert_port, **ca, username=user, password=password).startswith("no CONNACK")
    assert mqtt_connect(host, cert_port, **ca, **certificate) == "refused 5"
    assert mqtt_connect(host, cert_port, **ca, **certificate, username=user, password=password) == "accepted"
    assert not tcp_open(host, 1883), "a plain MQTT listener on broker1"
    # The controller's credentials: 0600 files in a 0700 folder, hidden from every host.
    folder = files["ca_file"].parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(path.stat().st_mode) for path in files.values()} == {0o600}
    for name in testbed.hosts:
        assert testbed.run(name, f"ls -A {shlex.quote(str(folder))}").stdout == "", name
    # On broker1: no secret in the configuration, the key and password file readable by Mosquitto's user only.
    config = testbed.run("broker1", "cat /etc/mosquitto/mlpacker-testbed/mlpacker-testbed.conf").stdout
    assert "allow_anonymous true" not in config and password not in config, config
    listing = testbed.run(
        "broker1",
        "stat -c '%U:%G %a %n' /etc/mosquitto/mlpacker-testbed/server.key"
        " /etc/mosquitto/mlpacker-testbed/passwd",
    ).stdout.splitlines()
    assert [line.split()[:2] for line in listing] == [["root:mosquitto", "640"]] * 2, listing


def _off_bridge_addresses() -> list[str]:
    # the machine's own uplink gateway-side address, a public resolver, and PyPI's address when resolvable
    addresses = ["192.0.2.1", "8.8.8.8"]
    try:
        addresses.append(socket.getaddrinfo("pypi.org", 443, socket.AF_INET)[0][4][0])
    except OSError:
        pass
    return addresses


def test_hosts_have_no_route_off_the_bridge(testbed: Testbed) -> None:
    script = (
        "import socket, sys\n"
        "for address in sys.argv[1:]:\n"
        "    try:\n"
        "        socket.create_connection((address, 443), timeout=10).close()\n"
        "        print(address, 'connected')\n"
        "    except OSError as error:\n"
        "        print(address, error.errno)\n"
    )
    addresses = _off_bridge_addresses()
    for name in testbed.hosts:
        assert "default" not in testbed.run(name, "ip route").stdout
        result = testbed.run(name, f'python3 -c "{script}" {" ".join(addresses)}')
        # ENETUNREACH is immediate: no packet leaves, nothing waits for a timeout
        assert result.stdout.split("\n")[:-1] == [f"{address} {errno.ENETUNREACH}" for address in addresses]


def test_inventory_lists_every_host_in_its_group(testbed: Testbed) -> None:
    listed = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", str(testbed.inventory_path), "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    inventory = json.loads(listed.stdout)
    for group in ("edge", "fog", "cloud", "broker"):
        assert sorted(inventory[group]["hosts"]) == sorted(testbed.groups[group])
    assert sorted(inventory["edge"]["hosts"]) == ["edge1", "edge2"]
    hostvars = inventory["_meta"]["hostvars"]
    for name, host in testbed.hosts.items():
        assert hostvars[name]["ansible_host"] == host.address
        assert hostvars[name]["ansible_user"] == "root"
        assert hostvars[name]["ansible_ssh_private_key_file"] == str(testbed.key_path)
        assert hostvars[name]["ansible_python_interpreter"] == "/usr/bin/python3"
        assert hostvars[name]["mlpacker_broker"] == testbed.broker_settings()
    # the user's broker as a user gives it: host, port, username, password and the CA file of its TLS listener
    assert set(testbed.broker_settings()) == {"host", "port", "username", "password", "tls"}
    assert testbed.broker_settings()["tls"] == {
        "enabled": True,
        "ca_file": str(testbed.broker_files["ca_file"]),
    }
    assert stat.S_IMODE(Path(testbed.inventory_path).stat().st_mode) == 0o600  # it holds the password


def test_ansible_sees_hosts_without_systemd(testbed: Testbed) -> None:
    # the deploy roles pick supervisord over systemd units from this fact
    result = subprocess.run(
        [str(VENV_BIN / "ansible"), "-i", str(testbed.inventory_path), "edge1,fog1"]
        + ["-m", "ansible.builtin.setup", "-a", "filter=ansible_service_mgr,ansible_hostname"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count('"ansible_service_mgr": "testbed-init"') == 2
    assert '"ansible_hostname": "edge1"' in result.stdout and '"ansible_hostname": "fog1"' in result.stdout


def test_ansible_pings_every_host_over_ssh(testbed: Testbed) -> None:
    result = subprocess.run(
        [str(VENV_BIN / "ansible"), "-i", str(testbed.inventory_path), "all", "-m", "ansible.builtin.ping"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in testbed.hosts:
        assert f"{name} | SUCCESS" in result.stdout


def test_cli_status_reports_the_running_test_bed(testbed: Testbed) -> None:
    # the plain-script form, with Debian's python3 and no virtualenv: the module needs only the stdlib
    result = subprocess.run(
        ["/usr/bin/python3", str(REPO_ROOT / "tests" / "testbed" / "testbed.py"), "status"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MLPACKER_TESTBED_DIR": str(testbed.state_dir)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["up"] is True
    assert {name: h["address"] for name, h in report["hosts"].items()} == testbed.addresses
    assert report["broker"] == {"host": testbed.broker_host, "port": testbed.broker_port, "reachable": True}


def test_cli_refuses_an_unknown_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.testbed", "explode"], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.returncode == 2
    assert "invalid choice: 'explode'" in result.stderr


# --- Docker engines in the hosts ------------------------------------------------------------------------

DOCKER_HOSTS = ["edge1", "edge2", "fog1", "cloud1"]


@pytest.mark.docker
@pytest.mark.slow
def test_each_host_has_its_own_docker_engine_with_the_base_image(testbed_docker: Testbed) -> None:
    engine_ids = set()
    for name in DOCKER_HOSTS:
        info = testbed_docker.ssh(name, "docker info --format '{{.ID}} {{.DockerRootDir}}'").stdout.split()
        assert info[1] == "/var/lib/docker"
        engine_ids.add(info[0])
        images = testbed_docker.ssh(name, "docker images --format '{{.Repository}}:{{.Tag}}'").stdout
        assert BASE_IMAGE in images.split()
    assert len(engine_ids) == len(DOCKER_HOSTS)  # four engines, not one shared
    assert "docker" not in testbed_docker.run("broker1", "ls /run").stdout.split()


@pytest.mark.docker
@pytest.mark.slow
def test_published_container_port_is_reachable_from_other_hosts(testbed_docker: Testbed) -> None:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    body = f"served-by-{name}-on-edge1"
    testbed_docker.ssh(
        "edge1",
        f"docker run -d --name {name} -p 18080:8000 {BASE_IMAGE} "
        f"sh -c 'mkdir /srv/www && echo {body} > /srv/www/index.html && "
        "cd /srv/www && exec python3 -m http.server 8000'",
    )
    fetch = (
        "import sys, time, urllib.request\n"
        "for attempt in range(100):\n"
        "    try:\n"
        "        print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())\n"
        "        break\n"
        "    except OSError:\n"
        "        time.sleep(0.2)\n"
    )
    url = f"http://{testbed_docker.address('edge1')}:18080/"
    try:
        for other in ("fog1", "cloud1"):
            assert testbed_docker.ssh(other, f'python3 -c "{fetch}" {url}').stdout.strip() == body
        # the container is edge1's alone
        assert name not in testbed_docker.run("edge2", "docker ps -a --format '{{.Names}}'").stdout.split()
    finally:
        testbed_docker.run("edge1", f"docker rm -f {name}", check=False)


@pytest.mark.parametrize(
    ("content", "mirror"),
    [
        (
            "Types: deb\nURIs: http://mirror.test/debian\nSuites: bookworm\n\n"
            "Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\n",
            "http://mirror.test/debian",
        ),
        (
            "# a comment\ndeb http://mirror.test/debian-security bookworm-security main\n"
            "deb [arch=amd64 signed-by=/k.gpg] http://mirror.test/debian/ bookworm main\n",
            "http://mirror.test/debian/",
        ),
        ("deb [trusted=yes] file:///srv/debian bookworm main\n", "file:///srv/debian"),
    ],
)
def test_debian_mirror_comes_from_the_apt_sources(tmp_path: Path, content: str, mirror: str) -> None:
    sources = tmp_path / "sources"
    sources.write_text(content)
    assert debian_mirror((tmp_path / "missing", sources)) == mirror


def test_no_debian_mirror_is_a_clear_error(tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    sources.write_text("deb http://mirror.test/debian-security bookworm-security main\n")
    with pytest.raises(TestbedError, match="no Debian mirror found in the apt sources"):
        debian_mirror((sources,))


def test_broker_credentials_are_made_once_and_kept(tmp_path: Path) -> None:
    files = ensure_broker_credentials(tmp_path, "10.231.0.41")
    made = {name: path.read_bytes() for name, path in files.items()}
    assert stat.S_IMODE((tmp_path / "broker").stat().st_mode) == 0o700
    assert {stat.S_IMODE(path.stat().st_mode) for path in files.values()} == {0o600}
    assert ensure_broker_credentials(tmp_path, "10.231.0.41") == files
    assert {name: path.read_bytes() for name, path in files.items()} == made  # a re-run keeps them all
    # A listener certificate for another address is made again, by the same CA; the rest is kept.
    ensure_broker_credentials(tmp_path, "10.231.0.42")
    changed = {name for name, path in files.items() if path.read_bytes() != made[name]}
    assert changed == {"cert_file", "key_file"}
    certificate = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(files["ca_file"]),
            str(files["cert_file"]),
            str(files["client_cert_file"]),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert certificate.returncode == 0, certificate.stdout + certificate.stderr
    names = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(files["cert_file"])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "IP Address:10.231.0.42" in names and "DNS:broker1" in names, names
