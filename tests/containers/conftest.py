"""Fixtures for the container suite: the machine's real Docker engine with the test bed's base image, and
the checks of a secured container (its credentials mounted read-only at run time, never in its image).

Everything a test makes carries the label ``mlpacker.pipeline=<a name unique to the test>``, and every test
undeploys its pipeline at the end (also on failure), so no container is left running.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.outcomes import skip_missing

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "mlpacker-base:bookworm"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def labelled(kind: str, pipeline: str) -> list[str]:
    """Ids of containers/images/volumes labelled with ``pipeline``."""
    command = {
        "container": ["ps", "-a", "-q", "--no-trunc"],
        "image": ["images", "-q", "--no-trunc"],
        "volume": ["volume", "ls", "-q"],
    }[kind]
    out = docker(*command, "--filter", f"label=mlpacker.pipeline={pipeline}").stdout
    return sorted(set(out.split()))


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """The machine's Docker engine with the local base image (started / built when missing)."""
    if shutil.which("docker") is None:
        skip_missing("docker", "the docker CLI is not installed")
    sys.path.insert(0, str(REPO_ROOT))
    from tests.testbed import testbed

    testbed.ensure_main_dockerd()
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        testbed.build_base_image()


@pytest.fixture(scope="session")
def container_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Controller settings of every container deploy of the session: one cache (the wheelhouse is built once
    per target, as for a user's second pipeline), records, a runtime snapshot, and the test bed's local base
    image (no registry is reachable here)."""
    from tests.deploy.helpers import controller_settings

    folder = tmp_path_factory.mktemp("containers")
    settings = controller_settings(folder)
    # The session's own credentials folder (not the user's ~/.mlpacker/credentials): the tests read the
    # generated secrets from it, and nothing is left in the home folder.
    return {
        **settings,
        "mlpacker_container_base_image": BASE_IMAGE,
        "mlpacker_credentials_dir": str(folder / "credentials"),
    }


@pytest.fixture(scope="session")
def credentials_dir(container_settings: dict[str, str]) -> Path:
    """The controller's folder of the session's generated credentials (CA, keys, tokens, MQTT passwords)."""
    return Path(container_settings["mlpacker_credentials_dir"])


# --- secrets stay out of images (issue #12) ---------------------------------------------------------------

Shell = Callable[..., subprocess.CompletedProcess[str]]
"""Runs a shell command where the containers are, ``shell(command, stdin=None)``: this machine or a test-bed
host; never raises on a non-zero exit."""


def local_shell(
    command: str, stdin: str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", command], input=stdin, capture_output=True, text=True, check=False, timeout=timeout
    )


def shell_on(bed: Any, host: str) -> Shell:
    def shell(
        command: str, stdin: str | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return bed.run(host, command, check=False, input=stdin, timeout=timeout)

    return shell


def checked(shell: Shell, command: str, stdin: str | None = None) -> str:
    result = shell(command, stdin)
    assert result.returncode == 0, f"{command}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def pipeline_secrets(credentials_dir: Path | str, pipeline: str) -> dict[str, str]:
    """Every secret value the controller made for ``pipeline`` (and the managed brokers' keys), by a name that
    does not reveal it: each token line, each MQTT password, the share-group salt, and the body lines of each
    private key but its first (which starts with the same ASN.1 prefix in every key of a kind)."""
    secrets: dict[str, str] = {}
    root = Path(credentials_dir)
    for folder in (root / pipeline, root / "_broker"):
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            name = str(path.relative_to(root))
            text = path.read_text()
            if path.suffix == ".key":
                body = [line for line in text.splitlines() if line and not line.startswith("-----")]
                secrets.update({f"{name} line {index}": line for index, line in enumerate(body) if index})
            elif path.name in ("token", "share_group.salt") or path.suffix == ".password":
                lines = [line.strip() for line in text.splitlines() if line.strip()]
                secrets.update({f"{name} line {index}": line for index, line in enumerate(lines)})
    assert any(name.endswith(".key line 1") for name in secrets), f"no private key under {root / pipeline}"
    assert all(len(value) >= 16 for value in secrets.values()), "a secret too short to search for"
    return secrets


def found_in(text: str, secrets: dict[str, str]) -> list[str]:
    """Names (never values) of the secrets that occur in ``text``."""
    return sorted(name for name, value in secrets.items() if value in text)


def release_of(container: dict[str, Any]) -> str:
    """The release folder of a service container: where its ``config.json`` is (the command's --config)."""
    command = container["Config"]["Cmd"]
    config = command[command.index("--config") + 1]
    assert config.endswith("/config.json"), command
    return config.rsplit("/", 1)[0]


def output_matches(shell: Shell, source: str, patterns: dict[str, str]) -> dict[str, int]:
    """How often each pattern occurs in the output of the shell command ``source``, by name. The patterns
    reach grep in a file, so no secret is ever on a command line."""
    pattern_file = checked(shell, "mktemp").strip()
    try:
        checked(shell, f"cat > {pattern_file}", "\n".join(patterns.values()) + "\n")
        # -a: binary tars; -o: one line per occurrence; exit 1 when nothing is found.
        result = shell(f"{source} | grep -aoF -f {pattern_file}")
        assert result.returncode in (0, 1), f"{source} | grep: {result.stderr}"
    finally:
        shell(f"rm -f {pattern_file}")
    found = result.stdout.splitlines()
    return {name: found.count(value) for name, value in patterns.items()}


def image_layer_matches(shell: Shell, image: str, patterns: dict[str, str]) -> dict[str, int]:
    """How often each pattern occurs in ``docker save <image>`` (every layer's files, including ones that a
    later layer deletes, and the image's configuration), by name."""
    return output_matches(shell, f"docker save {image}", patterns)


def assert_container_keeps_its_secrets_out_of_the_image(
    shell: Shell, container_name: str, secrets: dict[str, str]
) -> dict[str, Any]:
    """A secured service container's credentials are in ``<release>/secrets`` on its host (root:10001, 0750
    and 0640), bind-mounted read-only at the same path (``docker inspect`` and the kernel's mount table in the
    container agree), and named by the ``config.json`` of the image; the image holds none of them: not in its
    history or configuration, not in its release folder (config.json but no secrets/), not in config.json,
    not in any byte of any layer (``docker save``). Returns the image's config.json."""
    container = json.loads(checked(shell, f"docker inspect {container_name}"))[0]
    image = container["Image"]
    release = release_of(container)
    secrets_dir = f"{release}/secrets"

    # The running container: the secrets folder is a read-only bind mount of the host's, at the same path.
    mounts = [mount for mount in container["Mounts"] if mount["Destination"] == secrets_dir]
    assert len(mounts) == 1, (container_name, container["Mounts"])
    assert mounts[0]["Type"] == "bind" and mounts[0]["Source"] == secrets_dir, mounts
    assert mounts[0]["RW"] is False, (container_name, mounts)
    mount_table = checked(shell, f"docker exec {container_name} cat /proc/self/mounts")
    # (In a test-bed host, whose root is an overlay folder of the machine's, the kernel names the mount point
    # by its path on the machine: it ends with the container's path.)
    options = [line.split()[3] for line in mount_table.splitlines() if line.split()[1].endswith(secrets_dir)]
    assert len(options) == 1, (container_name, secrets_dir, mount_table)
    assert "ro" in options[0].split(","), (container_name, options)

    # On the host: root-owned, readable by the container's user (group 10001) only.
    listing = checked(shell, f"stat -c '%u:%g %a %n' {secrets_dir} {secrets_dir}/*").splitlines()
    assert listing[0] == f"0:10001 750 {secrets_dir}", listing
    assert len(listing) > 1 and all(line.startswith("0:10001 640 ") for line in listing[1:]), listing
    shipped = {line.rsplit("/", 1)[1] for line in listing[1:]}

    # config.json of the image: read from the image itself, the credential files it names are in the mounted
    # folder, and it holds no secret value.
    config_text = checked(
        shell, f"docker run --rm --network none --entrypoint cat {image} {release}/config.json"
    )
    config = json.loads(config_text)
    named = [
        config["security"]["tls"]["cert_file"],
        config["security"]["tls"]["key_file"],
        config["security"]["auth"]["token_file"],
    ]
    password_file = (config.get("stream") or {}).get("broker", {}).get("password_file")
    named += [password_file] if password_file else []
    assert all(path and path.startswith(secrets_dir + "/") for path in named), named
    assert {path.rsplit("/", 1)[1] for path in named} <= shipped, (named, shipped)
    assert found_in(config_text, secrets) == [], f"config.json of {image} holds a secret"
    broker = (config.get("stream") or {}).get("broker") or {}
    assert broker.get("password") is None, f"config.json of {image} holds the broker password"

    # The image's release folder: config.json and the artifacts, no secrets folder, no credential file.
    files = checked(shell, f"docker run --rm --network none --entrypoint find {image} {release}").split()
    assert f"{release}/config.json" in files, files
    assert not [path for path in files if path.startswith(secrets_dir)], files
    assert not {path.rsplit("/", 1)[1] for path in files} & shipped, (files, shipped)

    # History and configuration of the image.
    history = checked(shell, f"docker history --no-trunc --format '{{{{.CreatedBy}}}}' {image}")
    assert "config.json" in history, history  # the listing is of this image's build steps
    assert found_in(history, secrets) == [], f"docker history of {image} mentions a secret"
    inspected = checked(shell, f"docker image inspect {image}")
    assert found_in(inspected, secrets) == [], f"docker image inspect {image} mentions a secret"

    # Every byte of every layer. The token file's path (in config.json only) must be found: the saved layers
    # are searchable (an engine whose save compresses them would make the search pass blindly).
    control = {"config.json's token_file": config["security"]["auth"]["token_file"]}
    matches = image_layer_matches(shell, image, {**control, **secrets})
    assert matches.pop("config.json's token_file") > 0, (
        f"docker save {image}: config.json not found in a layer"
    )
    assert [name for name, count in matches.items() if count] == [], f"a layer of {image} holds a secret"
    return config


def listen_addresses(shell: Shell, port: int) -> set[str]:
    """The addresses TCP port ``port`` listens on where ``shell`` runs (``ss -ltnH``; a wildcard shows as
    ``0.0.0.0``, ``*`` or ``[::]``)."""
    found = set()
    for line in checked(shell, "ss -ltnH").splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "LISTEN":
            address, _, bound = fields[3].rpartition(":")
            if bound == str(port):
                found.add(address.split("%")[0])
    return found


# --- REST access checks on a container (issue #12) --------------------------------------------------------


def assert_requires_the_token(
    url: str,
    credentials: dict[str, Any],
    method: str = "POST",
    instances: list[list[float]] | None = None,
) -> None:
    """``url`` (trusting only the pipeline CA) answers 401 with ``WWW-Authenticate: Bearer`` and a JSON
    error to a request without a token, with a wrong token and with the token but not as a bearer; 200 to
    the record's token (a POST sends ``instances``, the rows this service takes); plain HTTP gets no
    answer."""
    from tests.deploy.helpers import read_first_line

    body = {"json": {"instances": instances}} if method == "POST" else {}
    token = read_first_line(credentials["token_file"])
    for headers in ({}, {"Authorization": f"Bearer {token}x"}, {"Authorization": token}):
        refused = requests.request(
            method, url, headers=headers, verify=credentials["ca_file"], timeout=15, **body
        )
        assert refused.status_code == 401, (url, headers.keys(), refused.status_code, refused.text)
        assert refused.headers.get("WWW-Authenticate", "").startswith("Bearer"), refused.headers
        assert "error" in refused.json(), refused.text
    answered = requests.request(
        method,
        url,
        headers={"Authorization": f"Bearer {token}"},
        verify=credentials["ca_file"],
        timeout=15,
        **body,
    )
    assert answered.status_code == 200, (url, answered.status_code, answered.text)
    assert url.startswith("https://"), url
    try:
        plain = requests.request(method, "http://" + url.removeprefix("https://"), timeout=15, **body)
    except requests.ConnectionError:
        return
    assert plain.status_code != 200, f"{url} answered plain HTTP: {plain.status_code} {plain.text}"
