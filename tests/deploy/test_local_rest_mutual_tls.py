"""Mutual TLS on a REST pipeline's entry service (issue #12, docs/security.md), deployed with the real
playbooks on this machine (inventories/local, supervisord path).

One distributed deployment (scale -> reduce -> classify) with ``mlpacker_security: {mutual_tls: true,
client_ca_file: <a CA of the test's own clients>}``, shared by the tests of this module, in order: the
deploy's own health gates and smoke test got through (they present the pipeline's client certificate); a
client without a certificate, or with one of another CA, fails the TLS handshake of the entry service; the
pipeline's client certificate and one of the user's CA get in, with the token (200) and without it (401);
the hops between stages keep the token alone; the record's credentials and curl line (run as printed); the
probe certificate on the host is root's alone; status.yml gets through; the re-run changes nothing. The
fixture undeploys.
"""

from __future__ import annotations

import datetime
import json
import os
import pwd
import socket
import ssl
import stat
import subprocess
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
    LOCAL_INVENTORY,
    assert_rerun_changes_nothing,
    free_port_block,
    in_process_predictions,
    iris_spec,
    pipeline_leftovers,
    read_first_line,
    run_as_pasted,
    run_playbook,
    write_vars_file,
)

pytestmark = [pytest.mark.slow]

NAME = "t-rest-mtls"


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
        self, root: Path, spec_file: Path, controller_file: Path, controller: dict[str, str], port: int
    ):
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
        return run_playbook(playbook, LOCAL_INVENTORY, [self.spec_file, self.controller_file])

    def url(self, offset: int = 0, path: str = "/predict") -> str:
        return f"https://127.0.0.1:{self.base_port + offset}{path}"

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


@pytest.fixture(scope="module")
def mtls(deploy_root: Path, iris_models: dict[str, Path], controller_dirs: dict[str, str]):
    root = deploy_root / NAME
    root.mkdir()
    partners_key, partners_ca = make_ca("partners CA")
    stranger_key, stranger_ca = make_ca("stranger CA")
    partners_ca_file = root / "partners-ca.pem"
    partners_ca_file.write_bytes(partners_ca.public_bytes(serialization.Encoding.PEM))
    base_port = free_port_block(3)
    spec = iris_spec(NAME, "rest", "distributed", iris_models, base_port)
    spec["mlpacker_security"] = {"mutual_tls": True, "client_ca_file": str(partners_ca_file)}
    spec_file = write_vars_file(root / "spec.yml", spec)
    controller = dict(controller_dirs, mlpacker_credentials_dir=str(root / "credentials"))
    controller_file = write_vars_file(root / "controller.yml", controller)
    deployment = Deployment(root, spec_file, controller_file, controller, base_port)
    deployment.models = dict(iris_models)
    deployment.partners_cert = write_client(root, "partner", partners_key, partners_ca)
    deployment.stranger_cert = write_client(root, "stranger", stranger_key, stranger_ca)
    deployment.partners_ca_pem = partners_ca_file.read_bytes()
    deployment.first_run = deployment.play("deploy.yml")
    try:
        assert deployment.first_run.rc == 0, deployment.first_run.describe()
        yield deployment
    finally:
        if pipeline_leftovers(NAME):
            removed = deployment.play("undeploy.yml")
            assert removed.rc == 0, removed.describe()
            assert pipeline_leftovers(NAME) == []


def tls_refusal(port: int, ca_file: str, client: tuple[str, str] | None = None) -> ssl.SSLError:
    """The TLS error the service at ``port`` ends the handshake with (the test fails if it lets the client
    in).

    Nothing is sent: in TLS 1.3 the server checks the client's certificate after the client's side of the
    handshake is done, so its refusal (an alert) is what the first read gets."""
    context = ssl.create_default_context(cafile=ca_file)
    if client:
        context.load_cert_chain(*client)
    with socket.create_connection(("127.0.0.1", port), timeout=15) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            try:
                data = tls.recv(1)
            except ssl.SSLError as error:
                return error
    pytest.fail(f"port {port} let the client in without refusing its certificate (read {data!r})")


def test_the_deploys_probes_present_the_pipelines_client_certificate(mtls: Deployment) -> None:
    # The health gates and the smoke test passed against an entry service that requires a client certificate.
    output = mtls.first_run.output
    assert "Send the same instances through the deployed pipeline and compare" in output
    assert mtls.first_run.recap["localhost"]["failed"] == 0
    info = requests.get(
        mtls.url(path="/info"),
        verify=mtls.ca_file,
        cert=mtls.pipeline_client,
        headers={"Authorization": f"Bearer {mtls.token()}"},
        timeout=15,
    )
    assert info.status_code == 200, info.text
    assert info.json()["security"] == {"tls": True, "client_certificates": True, "auth": True}


def test_a_client_without_a_certificate_fails_the_handshake(mtls: Deployment) -> None:
    error = tls_refusal(mtls.base_port, mtls.ca_file)
    assert error.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED", error
    # As a user sees it: no HTTP answer at all, with the token and the pipeline CA, on every path.
    for path in ("/predict", "/health/ready"):
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.post(
                mtls.url(path=path),
                json={"instances": IRIS_SAMPLES},
                verify=mtls.ca_file,
                headers={"Authorization": f"Bearer {mtls.token()}"},
                timeout=15,
            )


def test_a_certificate_of_another_ca_fails_the_handshake(mtls: Deployment) -> None:
    error = tls_refusal(mtls.base_port, mtls.ca_file, mtls.stranger_cert)
    assert error.reason == "TLSV1_ALERT_UNKNOWN_CA", error


@pytest.mark.parametrize("client", ["pipeline", "partner"])
def test_an_accepted_certificate_still_needs_the_token(mtls: Deployment, client: str) -> None:
    cert = mtls.pipeline_client if client == "pipeline" else mtls.partners_cert
    answer = requests.post(
        mtls.url(),
        json={"instances": IRIS_SAMPLES},
        verify=mtls.ca_file,
        cert=cert,
        headers={"Authorization": f"Bearer {mtls.token()}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == mtls.expected(IRIS_SAMPLES)
    refused = requests.post(
        mtls.url(), json={"instances": IRIS_SAMPLES}, verify=mtls.ca_file, cert=cert, timeout=30
    )
    assert refused.status_code == 401, refused.text
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_hops_keep_the_token_alone(mtls: Deployment) -> None:
    # Only the entry service requires a client certificate: the next stages answer the token alone.
    for offset in (1, 2):
        info = requests.get(
            mtls.url(offset, "/info"),
            verify=mtls.ca_file,
            headers={"Authorization": f"Bearer {mtls.token()}"},
            timeout=15,
        )
        assert info.status_code == 200, (offset, info.text)
        assert info.json()["security"] == {"tls": True, "client_certificates": False, "auth": True}


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
    [line] = record["client_commands"]
    assert f"--cert {mtls.pipeline_client[0]} --key {mtls.pipeline_client[1]}" in line, line
    assert "Try it:" in mtls.first_run.output and json.dumps(line) in mtls.first_run.output
    rows = IRIS_SAMPLES[:2]
    command = line.replace("[[...]]", json.dumps(rows))

    result = run_as_pasted(command)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    assert json.loads(result.stdout) == {"predictions": mtls.expected(rows)}
    # The same line without the client certificate gets no answer (curl: TLS error, not an HTTP status).
    certificate_options = f" --cert {mtls.pipeline_client[0]} --key {mtls.pipeline_client[1]}"
    without = run_as_pasted(command.replace(certificate_options, ""))
    assert without.returncode not in (0, 22), (without.returncode, without.stdout, without.stderr)
    assert without.stdout == ""


def test_the_probe_certificate_on_the_host_is_roots_alone(mtls: Deployment) -> None:
    service_dir = Path(f"/opt/mlpacker/{NAME}/{NAME}-scale/current")
    probe = service_dir / "probe"
    folder_stat = probe.stat()
    assert (folder_stat.st_uid, folder_stat.st_gid, stat.S_IMODE(folder_stat.st_mode)) == (0, 0, 0o700)
    for name, source in zip(("client.crt", "client.key"), mtls.pipeline_client, strict=True):
        file_stat = (probe / name).stat()
        assert (file_stat.st_uid, file_stat.st_gid, stat.S_IMODE(file_stat.st_mode)) == (0, 0, 0o600)
        assert (probe / name).read_bytes() == Path(source).read_bytes()
    # The pipeline's user (the services') cannot read the key.
    user = pwd.getpwnam(f"mlp-{NAME}")
    reader = subprocess.run(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
         "cat", str(probe / "client.key")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert reader.returncode != 0 and "Permission denied" in reader.stderr, reader
    # The entry service trusts the pipeline CA, then the user's client CA; the next stages have neither.
    client_ca = (service_dir / "secrets" / "client_ca.crt").read_bytes()
    assert client_ca == Path(mtls.ca_file).read_bytes() + mtls.partners_ca_pem
    for stage in ("reduce", "classify"):
        current = Path(f"/opt/mlpacker/{NAME}/{NAME}-{stage}/current")
        assert not (current / "probe").exists() and not (current / "secrets" / "client_ca.crt").exists()
    assert os.path.exists(service_dir / "secrets" / "server.key")


def test_status_gets_through_the_entry_services_mutual_tls(mtls: Deployment) -> None:
    status = mtls.play("status.yml")
    assert status.rc == 0, status.describe()
    for stage in ("scale", "reduce", "classify"):
        assert f'"service": "{NAME}-{stage}"' in status.output
    assert '"ready": false' not in status.output and '"ready": true' in status.output


def test_second_run_changes_nothing(mtls: Deployment) -> None:
    again = assert_rerun_changes_nothing(LOCAL_INVENTORY, [mtls.spec_file, mtls.controller_file])
    assert again.recap["localhost"]["failed"] == 0
    answer = requests.post(
        mtls.url(),
        json={"instances": IRIS_SAMPLES},
        verify=mtls.ca_file,
        cert=mtls.pipeline_client,
        headers={"Authorization": f"Bearer {mtls.token()}"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.json()["predictions"] == mtls.expected(IRIS_SAMPLES)
