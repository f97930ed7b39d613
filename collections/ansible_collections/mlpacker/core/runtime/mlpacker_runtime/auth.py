"""Bearer token authentication (RFC 6750) shared by the REST service and the stream health server.

Every path but the two health probes needs ``Authorization: Bearer <token>``, the token being any line of
``security.auth.token_file`` (line 1 the current token, line 2 the previous one while a rotation rolls
out). Orchestrators and load balancers probe health without credentials, hence the two open paths.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from mlpacker_runtime.secret_files import read_tokens

OPEN_PATHS = frozenset({"/health/live", "/health/ready"})
REALM = "mlpacker"


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the JSON error message and the WWW-Authenticate challenge to send."""

    message: str
    challenge: str


MISSING = Refusal("authentication required: send 'Authorization: Bearer <token>'", f'Bearer realm="{REALM}"')
INVALID = Refusal("invalid bearer token", f'Bearer realm="{REALM}", error="invalid_token"')


class BearerAuth:
    def __init__(self, tokens: list[str]):
        if not tokens:
            raise ValueError("bearer auth needs at least one token")
        self.tokens = [token.encode() for token in tokens]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BearerAuth | None:
        """The service's auth from security.auth.token_file, or None when auth is off."""
        token_file = config["security"]["auth"]["token_file"]
        return cls(read_tokens(token_file)) if token_file else None

    def refusal(self, path: str, authorization: str | None) -> Refusal | None:
        """None when the request may go on; else why it is refused."""
        if path in OPEN_PATHS:
            return None
        scheme, _space, credentials = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return MISSING
        given = credentials.strip().encode("latin-1", errors="replace")
        # Compare with every token, without stopping at a match, so the time taken does not tell which.
        matched = False
        for token in self.tokens:
            matched |= hmac.compare_digest(given, token)
        return None if matched else INVALID
