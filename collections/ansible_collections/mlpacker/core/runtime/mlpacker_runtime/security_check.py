"""Start-time check of every file the security settings name (run by ``check`` and before ``serve``).

A service that would fail its first TLS handshake, or answer 401 to everyone, should not start: each
problem is one line naming the config field, as for the rest of the configuration.
"""

from __future__ import annotations

import ssl
from typing import Any

from mlpacker_runtime.secret_files import SecretFileError, read_password, read_tokens
from mlpacker_runtime.tls import EncryptedKeyError, load_key_pair


def _unreadable(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        return f"cannot read {path!r}: {exc.strerror or exc}"
    return None


def _check_ca(problems: list[str], field: str, path: str | None) -> None:
    if not path:
        return
    if reason := _unreadable(path):
        problems.append(f"{field}: {reason}")
        return
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        problems.append(f"{field}: {path!r} holds no PEM certificate ({exc.reason or exc})")


def _check_key_pair(
    problems: list[str], cert_field: str, cert_file: str | None, key_field: str, key_file: str | None
) -> None:
    """The certificate is PEM and the key is its key (key_file None: the key is in cert_file)."""
    if not cert_file:
        return
    unreadable = False
    for field, path in ((cert_field, cert_file), (key_field, key_file)):
        if path and (reason := _unreadable(path)):
            problems.append(f"{field}: {reason}")
            unreadable = True
    if unreadable:
        return
    try:
        ssl.create_default_context(cafile=cert_file)
    except ssl.SSLError as exc:
        problems.append(f"{cert_field}: {cert_file!r} holds no PEM certificate ({exc.reason or exc})")
        return
    key_source = key_file or cert_file
    try:
        load_key_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), cert_file, key_file)
    except EncryptedKeyError as exc:
        problems.append(f"{key_field}: {exc}")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            problems.append(
                f"{key_field}: {key_source!r} is not the private key of {cert_field} {cert_file!r}"
            )
        else:
            problems.append(f"{key_field}: {key_source!r} holds no PEM private key ({exc.reason or exc})")


def check_security_files(config: dict[str, Any]) -> list[str]:
    """One line per unusable file named by security.* or stream.broker.* (empty when all are usable)."""
    problems: list[str] = []
    tls = config["security"]["tls"]
    _check_key_pair(
        problems, "security.tls.cert_file", tls["cert_file"], "security.tls.key_file", tls["key_file"]
    )
    _check_key_pair(
        problems,
        "security.tls.client_cert_file",
        tls["client_cert_file"],
        "security.tls.client_key_file",
        tls["client_key_file"],
    )
    _check_ca(problems, "security.tls.ca_file", tls["ca_file"])
    _check_ca(problems, "security.tls.client_ca_file", tls["client_ca_file"])
    token_file = config["security"]["auth"]["token_file"]
    if token_file:
        try:
            read_tokens(token_file)
        except SecretFileError as exc:
            problems.append(f"security.auth.token_file: {exc}")
    if config["mode"] == "stream":
        broker = config["stream"]["broker"]
        if broker["password_file"]:
            try:
                read_password(broker["password_file"])
            except SecretFileError as exc:
                problems.append(f"stream.broker.password_file: {exc}")
        if broker["tls"]["enabled"]:
            broker_tls = broker["tls"]
            _check_ca(problems, "stream.broker.tls.ca_file", broker_tls["ca_file"])
            _check_key_pair(
                problems,
                "stream.broker.tls.cert_file",
                broker_tls["cert_file"],
                "stream.broker.tls.key_file",
                broker_tls["key_file"],
            )
    return problems
