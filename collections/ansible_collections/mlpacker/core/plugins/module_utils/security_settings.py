# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The deploy's security settings (``mlpacker_security`` + ``mlpacker_insecure``), resolved and checked.

Secure unless the user says otherwise, loudly: ``mlpacker_insecure: true`` turns TLS and auth off whatever
``mlpacker_security`` says. See docs/security.md.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean

DEFAULTS: dict[str, Any] = {
    "tls": True,
    "auth": True,
    "bind": "",
    "mutual_tls": False,
    "client_ca_file": "",
    "ca_cert_file": "",
    "ca_key_file": "",
    "token_file": "",
}
LOOPBACK = "127.0.0.1"


class SecuritySettingsError(ValueError):
    """A setting is not usable; the message names it and the value."""


def _flag(field: str, value: Any) -> bool:
    try:
        return boolean(value, strict=True)
    except TypeError:
        raise SecuritySettingsError(f"{field}: expected true or false, got {value!r}") from None


def _client_ca_problem(path: str) -> str | None:
    """Why ``path`` is not a usable client CA file (PEM certificates of CAs), or None."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    try:
        # cryptography comes with ansible-core; only the controller resolves the settings.
        from cryptography import x509

        certificates = x509.load_pem_x509_certificates(data)
    except (ImportError, ValueError):
        return f"{path} holds no PEM certificate"
    for certificate in certificates:
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            return "{}: {} is not a CA certificate (no basicConstraints CA:TRUE)".format(
                path, certificate.subject.rfc4514_string() or "a certificate"
            )
    return None


def _bind(value: Any) -> list[str]:
    if value in ("", None, []):
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(
        isinstance(item, str) and item.strip() for item in items
    ):
        raise SecuritySettingsError(
            f"mlpacker_security.bind: expected an address or a list of addresses, got {value!r}"
        )
    return [item.strip() for item in items]


def resolve_security(settings: Any, insecure: Any = False) -> dict[str, Any]:
    """``mlpacker_security`` over its defaults; ``insecure`` turns ``tls`` and ``auth`` off.

    The result has every key of DEFAULTS (``bind`` as a list, empty = per host, see listen_addresses;
    ``mutual_tls`` true also when ``client_ca_file`` is given) and ``insecure``. Unknown keys, mismatched
    pairs and a client CA file that is not PEM CA certificates fail naming the field.
    """
    if settings in (None, ""):
        settings = {}
    if not isinstance(settings, dict):
        raise SecuritySettingsError(f"mlpacker_security: expected a mapping, got {settings!r}")
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise SecuritySettingsError(
            "mlpacker_security.{}: unknown setting (known: {})".format(
                unknown[0], ", ".join(sorted(DEFAULTS))
            )
        )
    resolved = dict(DEFAULTS, **settings)
    is_insecure = _flag("mlpacker_insecure", insecure)
    for key in ("tls", "auth"):
        resolved[key] = _flag(f"mlpacker_security.{key}", resolved[key]) and not is_insecure
    for key in ("client_ca_file", "ca_cert_file", "ca_key_file", "token_file"):
        value = resolved[key]
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise SecuritySettingsError(f"mlpacker_security.{key}: expected a file path, got {value!r}")
        resolved[key] = value
    if bool(resolved["ca_cert_file"]) != bool(resolved["ca_key_file"]):
        raise SecuritySettingsError(
            "mlpacker_security.ca_cert_file and ca_key_file: give both (the CA's certificate and key) or none"
        )
    # Mutual TLS on the entry service: on with mutual_tls, or with the user's own client CA (client_ca_file);
    # the entry then accepts client certificates of that CA and of the pipeline CA (the deploy's probes).
    mutual_tls = _flag("mlpacker_security.mutual_tls", resolved["mutual_tls"])
    if resolved["client_ca_file"]:
        if "mutual_tls" in settings and not mutual_tls:
            raise SecuritySettingsError(
                "mlpacker_security.client_ca_file: given, but mutual_tls is false (set mutual_tls: true or "
                "leave it out: a client CA turns mutual TLS on)"
            )
        mutual_tls = True
    if mutual_tls and not resolved["tls"] and not is_insecure:
        field = "client_ca_file" if resolved["client_ca_file"] else "mutual_tls"
        raise SecuritySettingsError(f"mlpacker_security.{field}: mutual TLS needs tls: true")
    if resolved["client_ca_file"] and not is_insecure:
        problem = _client_ca_problem(resolved["client_ca_file"])
        if problem:
            raise SecuritySettingsError(f"mlpacker_security.client_ca_file: {problem}")
    # mlpacker_insecure wins here too: no TLS, so no mutual TLS.
    resolved["mutual_tls"] = mutual_tls and not is_insecure
    resolved["bind"] = _bind(resolved["bind"])
    resolved["insecure"] = is_insecure
    return resolved


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_addresses(address: str, security: dict[str, Any]) -> list[str]:
    """Where a service on a host reached at ``address`` listens: the ``bind`` setting when given, else that
    address plus loopback (loopback alone for a local host) - never every interface unless asked."""
    if security.get("bind"):
        return list(security["bind"])
    if not address or _is_loopback(address):
        return [LOOPBACK]
    return [address.strip("[]"), LOOPBACK]
