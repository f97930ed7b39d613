# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The bearer token file: which tokens it holds after a run, and which tokens are refused."""

from __future__ import annotations

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils import bearer_token

OLD = "old-token-0123456789"
OLDER = "older-token-0123456789"
USER = "user-token-0123456789"
NEW = object()  # stands for "a newly generated token"


@pytest.mark.parametrize(
    ("current", "user_token", "rotate", "expected"),
    [
        ([], None, False, [NEW]),
        ([OLD], None, False, [OLD]),
        ([OLD, OLDER], None, False, [OLD, OLDER]),
        ([OLD], None, True, [NEW, OLD]),
        ([OLD, OLDER], None, True, [NEW, OLD]),
        ([], None, True, [NEW]),
        ([], USER, False, [USER]),
        ([OLD, OLDER], USER, False, [USER, OLD]),
        ([USER, OLD], USER, False, [USER, OLD]),
        ([USER, OLD], USER, True, [USER, OLD]),  # rotate never replaces the user's token
        ([USER], USER, False, [USER]),
    ],
)
def test_next_tokens(current, user_token, rotate, expected) -> None:
    tokens = bearer_token.next_tokens(list(current), user_token, rotate)
    assert len(tokens) == len(expected)
    for token, wanted in zip(tokens, expected, strict=True):
        if wanted is NEW:
            assert token not in (OLD, OLDER, USER) and bearer_token.token_problem(token) is None
        else:
            assert token == wanted


def test_new_tokens_differ_and_are_valid_bearer_tokens() -> None:
    tokens = {bearer_token.new_token() for unused in range(20)}
    assert len(tokens) == 20
    assert all(bearer_token.token_problem(token) is None and len(token) >= 43 for token in tokens)


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("abcdefghijklmnop", None),
        ("abc.DEF-ghi_jkl~mno+p/q==", None),
        ("short", "must be at least 16 characters long"),
        ("has a space in it 0123", "must be one line"),
        ('quote"0123456789abcdef', "must be one line"),
        ("ünïcode-0123456789abc", "must be one line"),
        ("=leading-equals-0123456", "must be one line"),
    ],
)
def test_token_problem(token: str, problem: str | None) -> None:
    found = bearer_token.token_problem(token)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)
        assert token not in found


def test_token_file_lines() -> None:
    assert bearer_token.token_lines("  a \n\n b\r\n") == ["a", "b"]
    assert bearer_token.token_lines("") == []
    assert bearer_token.token_file_text(["a", "b"]) == "a\nb\n"
