# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""A pipeline's bearer token file: line 1 the current token, line 2 the previous one after a change (the
services accept both, hops send line 1), so a rotation needs no downtime longer than one restart."""

from __future__ import annotations

import re
import secrets

# RFC 6750 b64token: what may follow "Bearer " in an Authorization header.
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
MIN_LENGTH = 16


def new_token():
    return secrets.token_urlsafe(32)


def token_lines(text):
    """The tokens of a token file: its non-blank lines, stripped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def token_problem(token):
    """Why ``token`` cannot be a bearer token (None when it can); never shows the token."""
    if not TOKEN_PATTERN.match(token):
        return "must be one line of letters, digits and -._~+/ (an RFC 6750 bearer token)"
    if len(token) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters long"
    return None


def next_tokens(current, user_token, rotate):
    """The tokens the file should hold, given its ``current`` lines (``[]`` when missing or unusable):

    - a user token: line 1 is it; when it differs from the current line 1, that one becomes line 2; when it
      is the same, the file stays as it is;
    - no user token: the current tokens are kept; ``rotate`` (or no current token) makes a new line 1 with
      the old line 1 as line 2.
    """
    if user_token is not None:
        if current and current[0] == user_token:
            return current[:2]
        return [user_token] + current[:1]
    if current and not rotate:
        return current[:2]
    return [new_token()] + current[:1]


def token_file_text(tokens):
    return "".join(f"{token}\n" for token in tokens)
