# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A small X.509 PKI made with ``cryptography``: CAs, server and client certificates, and whether a
certificate on disk can be re-used or has to be made again.

Used on the controller only (the ``pipeline_credentials`` action plugin); the hosts need no crypto library.
Keys are ECDSA P-256 (cheap TLS handshakes, accepted by OpenSSL, Mosquitto, gunicorn and Python's ssl).
Subject alternative names are handled as ``(kind, value)`` pairs, ``kind`` being ``ip`` or ``dns``.
"""

from __future__ import annotations

import datetime
import ipaddress
import traceback

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # the controller always has it (an ansible-core dependency); hosts never import this
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

RENEW_BEFORE_DAYS = 30
CLOCK_SKEW = datetime.timedelta(minutes=5)
LOOPBACK_SANS = [("dns", "localhost"), ("ip", "127.0.0.1")]
PURPOSES = ("server", "client")


def _san_entry(name):
    """``name`` as a SAN pair: an IP address (an IPv6 literal's brackets dropped) or a lower-case DNS name."""
    text = str(name).strip()
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return ("ip", str(ipaddress.ip_address(candidate)))
    except ValueError:
        pass
    try:
        ascii_name = text.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"{text!r} is neither an IP address nor a host name ({exc})") from exc
    return ("dns", ascii_name.lower())


def subject_alt_names(address, inventory_name):
    """The SANs of a host's certificate: the address Ansible uses, the inventory name, localhost and
    127.0.0.1, each an IP SAN when it parses as an IP address and a DNS SAN otherwise; no duplicates."""
    names = []
    for value in (address, inventory_name):
        if value is not None and str(value).strip():
            names.append(_san_entry(value))
    names.extend(LOOPBACK_SANS)
    unique = []
    for entry in names:
        if entry not in unique:
            unique.append(entry)
    return unique


def _general_names(sans):
    return [
        x509.IPAddress(ipaddress.ip_address(value)) if kind == "ip" else x509.DNSName(value)
        for kind, value in sans
    ]


def certificate_sans(certificate):
    """The SAN pairs of ``certificate`` (an empty list when it has none)."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    sans = []
    for name in extension.value:
        if isinstance(name, x509.DNSName):
            sans.append(("dns", name.value.lower()))
        elif isinstance(name, x509.IPAddress):
            sans.append(("ip", str(name.value)))
    return sans


def new_private_key():
    return ec.generate_private_key(ec.SECP256R1())


def _signature_hash(key):
    return None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()


def _name(common_name, organization):
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def not_valid_after(certificate):
    """The certificate's expiry as an aware UTC datetime (any cryptography version)."""
    value = getattr(certificate, "not_valid_after_utc", None)
    return value if value is not None else certificate.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def make_ca(common_name, days, now, organization="MLPacker"):
    """A new self-signed CA: (private key, certificate) valid ``days`` days from ``now`` (aware datetime)."""
    key = new_private_key()
    name = _name(common_name, organization)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return key, builder.sign(key, hashes.SHA256())


def issue_certificate(ca_key, ca_cert, common_name, sans, days, now, purposes, organization="MLPacker"):
    """A new key and a certificate for it signed by the CA: ``purposes`` among ``server``/``client`` (the
    extended key usages), ``sans`` as SAN pairs. The certificate never outlives the CA."""
    unknown = [purpose for purpose in purposes if purpose not in PURPOSES]
    if unknown or not purposes:
        raise ValueError(f"purposes must be among {', '.join(PURPOSES)}, not {purposes!r}")
    key = new_private_key()
    expiry = min(now + datetime.timedelta(days=days), not_valid_after(ca_cert))
    usages = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(expiry)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usages[purpose] for purpose in purposes]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(_general_names(sans)), critical=False)
    return key, builder.sign(ca_key, _signature_hash(ca_key))


def certificate_pem(certificate):
    return certificate.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_certificate(data):
    """The certificate in PEM ``data``; ValueError when it holds none."""
    try:
        return x509.load_pem_x509_certificate(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM certificate ({exc})") from exc


def load_private_key(data):
    """The unencrypted private key in PEM ``data``; ValueError when it holds none or it is encrypted."""
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise ValueError("the key is encrypted; give an unencrypted key file") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a PEM private key ({exc})") from exc


def _public_bytes(public_key):
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_matches(key, certificate):
    """Whether ``key`` is the private key of ``certificate``."""
    return _public_bytes(key.public_key()) == _public_bytes(certificate.public_key())


def is_ca(certificate):
    """Whether the certificate may sign others (a CA basicConstraints; v1 certificates without one count)."""
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return certificate.version == x509.Version.v1


def signed_by(certificate, ca_cert):
    """Whether ``certificate`` was issued by ``ca_cert`` (issuer name and signature)."""
    if certificate.issuer != ca_cert.subject:
        return False
    verify = getattr(certificate, "verify_directly_issued_by", None)
    if verify is not None:  # cryptography >= 40
        try:
            verify(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True
    public_key = ca_cert.public_key()
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(
                certificate.signature,
                certificate.tbs_certificate_bytes,
                padding.PKCS1v15(),
                certificate.signature_hash_algorithm,
            )
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(
                certificate.signature,
                certificate.tbs_certificate_bytes,
                ec.ECDSA(certificate.signature_hash_algorithm),
            )
        else:
            public_key.verify(certificate.signature, certificate.tbs_certificate_bytes)
    except InvalidSignature:
        return False
    return True


def expiry_reason(certificate, now, renew_before_days=RENEW_BEFORE_DAYS):
    """Why the certificate must be renewed for its dates (None when it is good for more than
    ``renew_before_days``)."""
    expiry = not_valid_after(certificate)
    if expiry - now <= datetime.timedelta(days=renew_before_days):
        return f"expires on {expiry:%Y-%m-%d}, within {renew_before_days} days"
    return None


def ca_renewal_reason(cert_data, key_data, now, renew_before_days=RENEW_BEFORE_DAYS):
    """Why the CA in ``cert_data``/``key_data`` (PEM bytes, None when the file is missing) cannot be re-used,
    or None when it can."""
    if cert_data is None or key_data is None:
        return "missing"
    try:
        certificate = load_certificate(cert_data)
        key = load_private_key(key_data)
    except ValueError as exc:
        return f"damaged: {exc}"
    if not key_matches(key, certificate):
        return "damaged: the key does not match the certificate"
    if not is_ca(certificate):
        return "damaged: the certificate is not a CA"
    return expiry_reason(certificate, now, renew_before_days)


def leaf_renewal_reason(cert_data, key_data, ca_cert, sans, now, renew_before_days=RENEW_BEFORE_DAYS):
    """Why the leaf in ``cert_data``/``key_data`` (PEM bytes, None when missing) must be made again for a
    certificate signed by ``ca_cert`` with SAN pairs ``sans`` (in any order), or None to re-use it."""
    if cert_data is None or key_data is None:
        return "missing"
    try:
        certificate = load_certificate(cert_data)
        key = load_private_key(key_data)
    except ValueError as exc:
        return f"damaged: {exc}"
    if not key_matches(key, certificate):
        return "damaged: the key does not match the certificate"
    if not signed_by(certificate, ca_cert):
        return "not signed by the current CA"
    present = certificate_sans(certificate)
    if sorted(present) != sorted(sans):
        return "addresses changed: {} -> {}".format(
            ", ".join(value for kind, value in present if (kind, value) not in sans) or "none",
            ", ".join(value for kind, value in sans if (kind, value) not in present) or "none",
        )
    return expiry_reason(certificate, now, renew_before_days)
