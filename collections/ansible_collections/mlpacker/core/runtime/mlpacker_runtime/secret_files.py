"""Secrets read from files at start (bearer tokens, the broker password), so config.json holds none."""

from __future__ import annotations

from pathlib import Path


class SecretFileError(ValueError):
    """A secret file cannot be read or holds nothing usable; the message says which and why."""


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretFileError(f"cannot read {path!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise SecretFileError(f"{path!r} is not UTF-8 text") from exc


def read_tokens(path: str) -> list[str]:
    """The bearer tokens of a token file: one per line, line 1 the current one (blank lines skipped)."""
    tokens = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        token = line.strip()
        if not token:
            continue
        # A token travels in an HTTP header: visible ASCII only, no spaces.
        if not all("!" <= char <= "~" for char in token):
            raise SecretFileError(f"{path!r} line {number}: a token must be visible ASCII without spaces")
        tokens.append(token)
    if not tokens:
        raise SecretFileError(f"{path!r} holds no token (one token per line)")
    return tokens


def read_password(path: str) -> str:
    """The first line of a password file, without its line end (the rest of the line is the password)."""
    text = _read(path)
    password = text.splitlines()[0] if text else ""
    if not password:
        raise SecretFileError(f"{path!r} holds no password (the password is its first line)")
    return password
