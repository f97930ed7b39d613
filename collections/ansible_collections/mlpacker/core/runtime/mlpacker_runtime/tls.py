"""TLS contexts made from ``security.tls``: the service's HTTPS server and its next-hop client.

One context per process, made once: it holds the parsed certificates, and (server side) the session ticket
key, so a client reconnecting resumes its TLS session instead of paying a full handshake. gunicorn's own
default would build a new context for every connection, which rules resumption out.
"""

from __future__ import annotations

import ssl
from typing import Any


class EncryptedKeyError(ValueError):
    """The private key is encrypted; services start unattended, so they cannot ask for its passphrase."""


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key and hang the service.
    raise EncryptedKeyError("the private key is encrypted (a service key must be unencrypted, mode 0640)")


def load_key_pair(context: ssl.SSLContext, cert_file: str, key_file: str | None) -> None:
    context.load_cert_chain(cert_file, key_file, password=_no_passphrase)


def server_context(tls: dict[str, Any]) -> ssl.SSLContext | None:
    """The HTTPS server context (None when no certificate is configured); mutual TLS with client_ca_file."""
    if not tls["cert_file"]:
        return None
    # Purpose.CLIENT_AUTH: a server context with the library's secure defaults (TLS 1.2 or newer).
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    load_key_pair(context, tls["cert_file"], tls["key_file"])
    if tls["client_ca_file"]:
        context.load_verify_locations(cafile=tls["client_ca_file"])
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def hop_client_context(tls: dict[str, Any]) -> ssl.SSLContext:
    """The context next hops are called with: the hop's certificate is verified, host name or IP included.

    Against ``ca_file`` alone when set (the pipeline CA), else the system's CAs; never without verification.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls["ca_file"])
    if tls["client_cert_file"]:
        load_key_pair(context, tls["client_cert_file"], tls["client_key_file"])
    return context
