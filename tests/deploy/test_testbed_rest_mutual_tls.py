"""Mutual TLS on a REST pipeline's entry services (issue #12, docs/security.md), deployed with the real
playbooks over SSH to the test bed (scale on edge1 and edge2, reduce on fog1, classify on cloud1; offline
hosts without systemd: the supervisord path).

One distributed deployment with ``mlpacker_security: {mutual_tls: true, client_ca_file: <a CA of the test's
own clients>}``, shared by the tests of this module, in order: the deploy's own health gates and smoke test
got through (they present the pipeline's client certificate); a client without a certificate, or with one of
another CA, fails the TLS handshake of each entry service; the pipeline's client certificate and one of the
user's CA get in, with the token (200) and without it (401); the hops between stages keep the token alone;
the record's credentials and curl lines (one per entry point, each run on the controller as a user pastes
it); the probe certificate on each entry host is root's alone; status.yml gets through; the re-run changes
nothing on any host. The fixture undeploys and checks that nothing is left on any host.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.deploy.helpers import (
    IRIS_SAMPLES,
    assert_rerun_changes_nothing,
    in_process_predictions,
    iris_spec,
    leftovers_on_testbed_host,
    read_first_line,
    run_as_pasted,
    run_playbook,
    write_vars_file,
)

pytestmark = [pytest.mark.slow, pytest.mark.testbed]

NAME = "tb-rest-mtls"
# Each test-bed host has its own network namespace; the other test-bed deploys use 8300 (test_testbed.py),
# 8400 (tests/containers) and a random block of 20000-39999 (tests/api), and the test-bed tests run one after
# the other in one process.
SERVICE_PORT = 8500
FLEET = ("edge1", "edge2", "fog1", "cloud1")
ENTRY_HOSTS = ("edge1", "edge2")  # the `edge` group: the first stage's hosts, each an entry point
HOPS = (("fog1", 1), ("cloud1", 2))  # the next stages' hosts and their port offsets


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def write_client(
    folder: Path, stem: str, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> tuple[str, str]:
    """A client certificate (clientAuth) signed by ``ca``, written as ``<stem>.crt`` and ``<stem>.key``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(stem))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    return str(cert_file), str(key_file)


class Deployment:
    def __init__(
        self,
        bed: Any,
        root: Path,
        spec_file: Path,
        controller_file: Path,
        controller: dict[str, str],
        port: int,
    ):
        self.bed = bed
        self.inventory = Path(bed.inventory_path)
        self.root = root
        self.spec_file = spec_file
        self.controller_file = controller_file
        self.controller = controller
        self.base_port = port
        self.first_run: Any = None
        # The user's own clients: their CA (given as client_ca_file) and one client of it.
        self.partners_cert: tuple[str, str] = ("", "")
        # Another CA's client: the entry service must refuse it.
        self.stranger_cert: tuple[str, str] = ("", "")
        self.partners_ca_pem = b""
        self.models: dict[str, Path] = {}

    def play(self, playbook: str) -> Any:
        return run_playbook(playbook, self.inventory, [self.spec_file, self.controller_file])

    def url(self, host: str, offset: int = 0, path: str = "/predict") -> str:
        return f"https://{self.bed.address(host)}:{self.base_port + offset}{path}"

    def services_on(self, host: str) -> list[dict[str, Any]]:
        return [service for service in self.record()["services"] if service["host"] == host]

    def record(self) -> dict[str, Any]:
        return json.loads((Path(self.controller["mlpacker_state_dir"]) / f"{NAME}.json").read_text())

    @property
    def folder(self) -> Path:
        """The pipeline's credentials on the controller."""
        return Path(self.controller["mlpacker_credentials_dir"]) / NAME

    @property
    def ca_file(self) -> str:
        return str(self.folder / "ca.crt")

    @property
    def pipeline_client(self) -> tuple[str, str]:
        return str(self.folder / "client.crt"), str(self.folder / "client.key")

    def token(self) -> str:
        return read_first_line(str(self.folder / "token"))

    def expected(self, rows: list[list[float]]) -> list[Any]:
        return in_process_predictions(
            [self.models["scaler"], self.models["pca"], self.models["classifier"]], rows
        )


def leftovers(bed: Any) -> dict[str, str]:
    """What the pipeline left on each host of the fleet (none after a clean undeploy)."""
    found = {host: leftovers_on_testbed_host(bed, host, NAME) for host in FLEET}
    return {host: listing for host, listing in found.items() if listing}


@pytest.fixture(scope="module")
def mtls(testbed: Any, deploy_root: Path, iris_models: dict[str, Path], controller_dirs: dict[str, str]):
    root = deploy_root / NAME
    root.mkdir()
    partners_key, partners_ca = make_ca("partners CA")
    stranger_key, stranger_ca = make_ca("stranger CA")
    partners_ca_file = root / "partners-ca.pem"
    partners_ca_file.write_bytes(partners_ca.public_bytes(serialization.Encoding.PEM))
    base_port = SERVICE_PORT
    spec = iris_spec(NAME, "rest", "distributed", iris_models, base_port)
    spec["mlpacker_security"] = {"mutual_tls": True, "client_ca_file": str(partners_ca_file)}
    spec_file = write_vars_file(root / "spec.yml", spec)
    controller = dict(controller_dirs, mlpacker_credentials_dir=str(root / "credentials"))
    controller_file = write_vars_file(root / "controller.yml", controller)
    deployment = Deployment(testbed, root, spec_file, controller_file, controller, base_port)
    deployment.models = dict(iris_models)
    deployment.partners_cert = write_client(root, "partner", partners_key, partners_ca)
    deployment.stranger_cert = write_client(root, "stranger", stranger_key, stranger_ca)
    deployment.partners_ca_pem = partners_ca_file.read_bytes()
    deployment.first_run = deployment.play("deploy.yml")
    try:
        assert deployment.first_run.rc == 0, deployment.first_run.describe()
        yield deployment
    finally:
        if leftovers(testbed):
            removed = deployment.play("undeploy.yml")
            assert removed.rc == 0, removed.describe()
            assert leftovers(testbed) == {}


def tls_refusal(address: str, port: int, ca_file: str, client: tuple[str, str] | None = None) -> ssl.SSLError:
    """The TLS error the service at ``address:port`` ends the handshake with (the test fails if it lets the
    client in).

    Nothing is sent: in TLS 1.3 the server checks the client's certificate after the client's side of the
    handshake is done, so its refusal (an alert) is what the first read gets."""
    context = ssl.create_default_context(cafile=ca_file)
    if client:
        context.load_cert_chain(*client)
    with socket.create_connection((address, port), timeout=15) as raw:
        with context.wrap_socket(raw, server_hostname=address) as tls:
            try:
                data = tls.recv(1)
            except ssl.SSLError as error:
                return error
    pytest.fail(f"{address}:{port} let the client in without refusing its certificate (read {data!r})")


def test_the_deploys_probes_present_the_pipelines_client_certificate(mtls: Deployment) -> None:
    # The health gates and the smoke test passed against an entry service that requires a client certificate.
    output = mtls.first_run.output
    assert "Send the same instances through the deployed pipeline and compare" in output
    assert set(mtls.first_run.recap) >= set(FLEET), mtls.first_run.describe()
    assert all(counts["failed"] == 0 for counts in mtls.first_run.recap.values()), mtls.first_run.recap
    for host in ENTRY_HOSTS:
        info = requests.get(
            mtls.url(host, path="/info"),
            verify=mtls.ca_file,
            cert=mtls.pipeline_client,
            headers={"Authorization": f"Bearer {mtls.token()}"},
            timeout=15,
        )
        assert info.status_code == 200, (host, info.text)
        assert info.json()["security"] == {"tls": True, "client_certificates": True, "auth": True}, host


@pytest.mark.parametrize("host", ENTRY_HOSTS)
def test_a_client_without_a_certificate_fails_the_handshake(mtls: Deployment, host: str) -> None:
    error = tls_refusal(mtls.bed.address(host), mtls.base_port, mtls.ca_file)
    assert error.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED", error
    # As a user sees it: no HTTP answer at all, with the token and the pipeline CA, on every path.
    for path in ("/predict", "/health/ready"):
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.post(
                mtls.url(host, path=path),
                json={"instances": IRIS_SAMPLES},
                verify=mtls.ca_file,
                headers={"Authorization": f"Bearer {mtls.token()}"},
                timeout=15,
            )


@pytest.mark.parametrize("host", ENTRY_HOSTS)
def test_a_certificate_of_another_ca_fails_the_handshake(mtls: Deployment, host: str) -> None:
    error = tls_refusal(mtls.bed.address(host), mtls.base_port, mtls.ca_file, mtls.stranger_cert)
    assert error.reason == "TLSV1_ALERT_UNKNOWN_CA", error


@pytest.mark.parametrize("client", ["pipeline", "partner"])
def test_an_accepted_certificate_still_needs_the_token(mtls: Deployment, client: str) -> None:
    cert = mtls.pipeline_client if client == "pipeline" else mtls.partners_cert
    for host in ENTRY_HOSTS:
        answer = requests.post(
            mtls.url(host),
            json={"instances": IRIS_SAMPLES},
            verify=mtls.ca_file,
            cert=cert,
            headers={"Authorization": f"Bearer {mtls.token()}"},
            timeout=30,
        )
        assert answer.status_code == 200, (host, answer.text)
        assert answer.json()["predictions"] == mtls.expected(IRIS_SAMPLES)
        refused = requests.post(
            mtls.url(host), json={"instances": IRIS_SAMPLES}, verify=mtls.ca_file, cert=cert, timeout=30
        )
        assert refused.status_code == 401, (host, refused.text)
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_hops_keep_the_token_alone(mtls: Deployment) -> None:
    # Only the entry services require a client certificate: the next stages answer the token alone.
    for host, offset in HOPS:
        info = requests.get(
            mtls.url(host, offset, "/info"),
            verify=mtls.ca_file,
            headers={"Authorization": f"Bearer {mtls.token()}"},
            timeout=15,
        )
        assert info.status_code == 200, (host, info.text)
        assert info.json()["security"] == {"tls": True, "client_certificates": False, "auth": True}, host


def test_the_record_gives_the_client_certificate_and_a_working_curl_line(mtls: Deployment) -> None:
    record = mtls.record()
    assert record["security"] == {"tls": True, "auth": True, "mutual_tls": True}
    assert record["credentials"] == {
        "ca_file": mtls.ca_file,
        "token_file": str(mtls.folder / "token"),
        "client_cert_file": mtls.pipeline_client[0],
        "client_key_file": mtls.pipeline_client[1],
        "mqtt": None,
    }
    # One curl line per entry point (edge1 and edge2), each run on the controller as a user pastes it.
    lines = record["client_commands"]
    assert [line.rsplit(" ", 1)[1] for line in lines] == [mtls.url(host) for host in ENTRY_HOSTS], lines
    assert "Try it:" in mtls.first_run.output
    rows = IRIS_SAMPLES[:2]
    certificate_options = f" --cert {mtls.pipeline_client[0]} --key {mtls.pipeline_client[1]}"
    for line in lines:
        assert certificate_options in line, line
        assert json.dumps(line) in mtls.first_run.output, line
        command = line.replace("[[...]]", json.dumps(rows))

        result = run_as_pasted(command)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        assert json.loads(result.stdout) == {"predictions": mtls.expected(rows)}
        # The same line without the client certificate gets no answer (curl: TLS error, not an HTTP status).
        without = run_as_pasted(command.replace(certificate_options, ""))
        assert without.returncode not in (0, 22), (without.returncode, without.stdout, without.stderr)
        assert without.stdout == ""


@pytest.mark.parametrize("host", ENTRY_HOSTS)
def test_the_probe_certificate_on_the_host_is_roots_alone(mtls: Deployment, host: str) -> None:
    bed = mtls.bed
    [entry] = mtls.services_on(host)
    assert entry["stages"] == ["scale"], entry
    service_dir = f"/opt/mlpacker/{NAME}/{entry['id']}/current"
    probe = f"{service_dir}/probe"
    assert bed.run(host, f"stat -c '%u %g %a' {probe}").stdout.split() == ["0", "0", "700"]
    for name, source in zip(("client.crt", "client.key"), mtls.pipeline_client, strict=True):
        assert bed.run(host, f"stat -c '%u %g %a' {probe}/{name}").stdout.split() == ["0", "0", "600"], name
        assert bed.run(host, f"cat {probe}/{name}").stdout == Path(source).read_text(), name
    # The pipeline's user (the services') cannot read the key.
    user = f"mlp-{NAME}"
    reader = bed.run(
        host,
        f"setpriv --reuid=$(id -u {user}) --regid=$(id -g {user}) --clear-groups cat {probe}/client.key",
        check=False,
        timeout=30,
    )
    assert reader.returncode != 0 and "Permission denied" in reader.stderr, reader
    # The entry service trusts the pipeline CA, then the user's client CA; the next stages have neither.
    client_ca = bed.run(host, f"cat {service_dir}/secrets/client_ca.crt").stdout
    assert client_ca.encode() == Path(mtls.ca_file).read_bytes() + mtls.partners_ca_pem
    assert bed.run(host, f"test -f {service_dir}/secrets/server.key", check=False).returncode == 0
    for hop, _offset in HOPS:
        [service] = mtls.services_on(hop)
        current = f"/opt/mlpacker/{NAME}/{service['id']}/current"
        assert bed.run(hop, f"test -d {current}/secrets", check=False).returncode == 0, hop
        for absent in (f"{current}/probe", f"{current}/secrets/client_ca.crt"):
            assert bed.run(hop, f"test -e {absent}", check=False).returncode != 0, (hop, absent)


def test_status_gets_through_the_entry_services_mutual_tls(mtls: Deployment) -> None:
    status = mtls.play("status.yml")
    assert status.rc == 0, status.describe()
    assert set(status.recap) >= set(FLEET), status.describe()
    for stage in ("scale", "reduce", "classify"):
        assert f'"service": "{NAME}-{stage}"' in status.output
    assert '"ready": false' not in status.output and '"ready": true' in status.output


def test_second_run_changes_nothing(mtls: Deployment) -> None:
    again = assert_rerun_changes_nothing(mtls.inventory, [mtls.spec_file, mtls.controller_file])
    assert set(again.recap) >= set(FLEET), again.describe()
    assert all(counts["failed"] == 0 for counts in again.recap.values()), again.recap
    for host in ENTRY_HOSTS:
        answer = requests.post(
            mtls.url(host),
            json={"instances": IRIS_SAMPLES},
            verify=mtls.ca_file,
            cert=mtls.pipeline_client,
            headers={"Authorization": f"Bearer {mtls.token()}"},
            timeout=30,
        )
        assert answer.status_code == 200, (host, answer.text)
        assert answer.json()["predictions"] == mtls.expected(IRIS_SAMPLES), host
