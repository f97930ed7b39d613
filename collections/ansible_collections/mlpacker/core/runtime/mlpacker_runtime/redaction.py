"""Values made safe to show: /info, metric labels and error messages name things without their secrets.

A URL loses its user-info (``user:password@``), query and fragment, where credentials get put; a file path
becomes its file name, since absolute paths tell a caller about the host's layout.
"""

from __future__ import annotations

from pathlib import PurePath
from urllib.parse import urlsplit, urlunsplit


def public_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    try:
        port = parts.port
    except ValueError:
        port = None  # not a valid port: leave it out rather than fail
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def public_path(path: str | None) -> str | None:
    return None if path is None else PurePath(path).name
