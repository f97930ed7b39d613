"""WSGI middleware in front of the whole REST app: refuse requests without a valid bearer token (401).

It wraps everything, the /predict fast path included, so no route can be reached around it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from mlpacker_runtime.auth import BearerAuth

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class BearerTokenRequired:
    def __init__(self, app: WSGIApp, auth: BearerAuth, on_refused: Callable[[str], None]):
        self.app = app
        self.auth = auth
        self.on_refused = on_refused  # gets the request path (for the metrics)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        refusal = self.auth.refusal(path, environ.get("HTTP_AUTHORIZATION"))
        if refusal is None:
            return self.app(environ, start_response)
        self.on_refused(path)
        body = json.dumps({"error": refusal.message}).encode()
        start_response(
            "401 Unauthorized",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("WWW-Authenticate", refusal.challenge),
            ],
        )
        return [body]
