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

    The result has every key of DEFAULTS (``bind`` as a list, empty = per host, see listen_addresses) and
    ``insecure``. Unknown keys and mismatched pairs fail naming the field.
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
    if resolved["client_ca_file"] and not resolved["tls"]:
        raise SecuritySettingsError("mlpacker_security.client_ca_file: mutual TLS needs tls: true")
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
