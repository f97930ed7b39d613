# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The controller's PKI: the SAN rule, certificates OpenSSL accepts, and when one on disk is re-used."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils import pki
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)
LOOPBACK = [("dns", "localhost"), ("ip", "127.0.0.1")]
EDGE_SANS = [("ip", "10.0.0.5"), ("dns", "edge1")] + LOOPBACK


@pytest.mark.parametrize(
    ("address", "inventory_name", "expected"),
    [
        ("10.0.0.5", "edge1", EDGE_SANS),
        ("edge1.example.org", "edge1", [("dns", "edge1.example.org"), ("dns", "edge1")] + LOOPBACK),
        ("Edge1.Example.ORG", "EDGE1", [("dns", "edge1.example.org"), ("dns", "edge1")] + LOOPBACK),
        ("2001:DB8::1", "cloud1", [("ip", "2001:db8::1"), ("dns", "cloud1")] + LOOPBACK),
        ("[2001:db8::1]", "cloud1", [("ip", "2001:db8::1"), ("dns", "cloud1")] + LOOPBACK),
        ("10.0.0.5", "10.0.0.5", [("ip", "10.0.0.5")] + LOOPBACK),
        ("127.0.0.1", "localhost", [("ip", "127.0.0.1"), ("dns", "localhost")]),
        ("", "edge1", [("dns", "edge1")] + LOOPBACK),
        (None, "edge1", [("dns", "edge1")] + LOOPBACK),
        ("bücher.example", "b", [("dns", "xn--bcher-kva.example"), ("dns", "b")] + LOOPBACK),
    ],
)
def test_subject_alt_names(address, inventory_name, expected) -> None:
    assert pki.subject_alt_names(address, inventory_name) == expected


def test_a_name_that_is_no_host_name_is_refused() -> None:
    with pytest.raises(ValueError, match="neither an IP address nor a host name"):
        pki.subject_alt_names("a" * 64 + ".example", "edge1")


@pytest.fixture(scope="module")
def ca():
    return pki.make_ca("MLPacker test CA", 3650, NOW)


@pytest.fixture(scope="module")
def other_ca():
    return pki.make_ca("MLPacker test CA", 3650, NOW)  # same name, other key


def pem_pair(key, cert):
    return pki.certificate_pem(cert), pki.private_key_pem(key)


def test_certificates_carry_the_sans_usages_and_never_outlive_the_ca() -> None:
    ca_key, ca_cert = pki.make_ca("short CA", 40, NOW)
    key, cert = pki.issue_certificate(ca_key, ca_cert, "edge1", EDGE_SANS, 825, NOW, ("server", "client"))
    assert pki.certificate_sans(cert) == EDGE_SANS
    assert pki.not_valid_after(cert) == pki.not_valid_after(ca_cert)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert pki.key_matches(key, cert) and pki.signed_by(cert, ca_cert)
    assert pki.is_ca(ca_cert) and not pki.is_ca(cert)
    with pytest.raises(ValueError, match="purposes"):
        pki.issue_certificate(ca_key, ca_cert, "x", [], 825, NOW, ("mail",))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="missing component openssl: no openssl binary")
@pytest.mark.parametrize(
    ("check", "accepted"),
    [
        (["-verify_ip", "10.0.0.5"], True),
        (["-verify_hostname", "edge1"], True),
        (["-verify_hostname", "localhost"], True),
        (["-verify_ip", "127.0.0.1"], True),
        (["-verify_ip", "10.0.0.6"], False),
        (["-verify_hostname", "cloud1"], False),
        (["-purpose", "sslserver"], True),
        (["-purpose", "sslclient"], True),
    ],
)
def test_openssl_verifies_a_host_certificate(tmp_path: Path, check: list[str], accepted: bool) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, ca_cert = pki.make_ca("MLPacker openssl CA", 3650, now)
    cert = pki.issue_certificate(ca_key, ca_cert, "edge1", EDGE_SANS, 825, now, ("server", "client"))[1]
    (tmp_path / "ca.crt").write_bytes(pki.certificate_pem(ca_cert))
    (tmp_path / "leaf.crt").write_bytes(pki.certificate_pem(cert))
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", "ca.crt", *check, "leaf.crt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode == 0) is accepted, result.stdout + result.stderr


def leaf(ca, sans=None, issued=NOW, days=825):
    sans = EDGE_SANS if sans is None else sans
    return pem_pair(*pki.issue_certificate(ca[0], ca[1], "edge1", sans, days, issued, ("server",)))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("fresh", None),
        ("no certificate", "missing"),
        ("no key", "missing"),
        ("garbage certificate", "damaged: not a PEM certificate"),
        ("garbage key", "damaged: not a PEM private key"),
        ("key of another certificate", "damaged: the key does not match the certificate"),
        ("signed by another CA", "not signed by the current CA"),
        ("address changed", "addresses changed: 10.0.0.6 -> 10.0.0.5"),
        ("expires in 10 days", "expires on 2030-06-11, within 30 days"),
        ("expires in 30 days", "expires on 2030-07-01, within 30 days"),
        ("expires in 31 days", None),
        ("sans in another order", None),
    ],
)
def test_leaf_reuse_or_renewal(ca, other_ca, case: str, expected: str | None) -> None:
    cert, key = leaf(ca)
    if case == "no certificate":
        cert = None
    elif case == "no key":
        key = None
    elif case == "garbage certificate":
        cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    elif case == "garbage key":
        key = b""
    elif case == "key of another certificate":
        key = leaf(ca)[1]
    elif case == "signed by another CA":
        cert, key = leaf(other_ca)
    elif case == "address changed":
        cert, key = leaf(ca, sans=[("ip", "10.0.0.6"), ("dns", "edge1")] + LOOPBACK)
    elif case.startswith("expires in"):
        days_left = int(case.split()[2])
        cert, key = leaf(ca, issued=NOW - datetime.timedelta(days=825 - days_left))
    elif case == "sans in another order":
        cert, key = leaf(ca, sans=list(reversed(EDGE_SANS)))
    reason = pki.leaf_renewal_reason(cert, key, ca[1], EDGE_SANS, NOW)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(expected), reason


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("fresh", None),
        ("no key", "missing"),
        ("a leaf instead of a CA", "damaged: the certificate is not a CA"),
        ("key of another CA", "damaged: the key does not match the certificate"),
        ("garbage", "damaged: not a PEM certificate"),
        ("expires in 20 days", "expires on 2030-06-21, within 30 days"),
    ],
)
def test_ca_reuse_or_renewal(ca, other_ca, case: str, expected: str | None) -> None:
    cert, key = pem_pair(*ca)
    if case == "no key":
        key = None
    elif case == "a leaf instead of a CA":
        cert, key = leaf(ca)
    elif case == "key of another CA":
        key = pki.private_key_pem(other_ca[0])
    elif case == "garbage":
        cert = b"not a certificate"
    elif case == "expires in 20 days":
        cert, key = pem_pair(*pki.make_ca("old CA", 40, NOW - datetime.timedelta(days=20)))
    reason = pki.ca_renewal_reason(cert, key, NOW)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(expected), reason


def test_an_encrypted_key_is_named_as_such(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    encrypted = pki.new_private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    with pytest.raises(ValueError, match="encrypted"):
        pki.load_private_key(encrypted)
