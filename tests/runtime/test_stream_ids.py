"""The stream consumer's id memory (attempt counts, stream.dedup_window) and the ``attempts`` it forwards."""

from __future__ import annotations

from typing import Any

import pytest
from mlpacker_runtime.chain import InputError
from mlpacker_runtime.stream.consumer import RecentIds, upstream_attempts


def test_id_keys_tell_types_apart_and_ignore_key_order() -> None:
    assert RecentIds.key(None) is None
    keys = {RecentIds.key(value) for value in (1, "1", 1.5, True, [1], {"a": 1})}
    assert len(keys) == 6
    assert RecentIds.key({"a": 1, "b": [2, 3]}) == RecentIds.key({"b": [2, 3], "a": 1})
    assert len(RecentIds.key("x" * 1_000_000) or b"") == 16  # a long id costs a digest, not its length


def test_recent_ids_count_and_forget_the_least_recently_seen() -> None:
    ids = RecentIds(2)
    one, two, three = (RecentIds.key(value) for value in (1, 2, 3))
    assert (ids.add(one), ids.add(two), ids.add(one)) == (1, 1, 2)
    ids.add(three)  # 2 is now the least recently seen: forgotten
    assert one in ids and three in ids and two not in ids and len(ids) == 2
    assert ids.add(two) == 1  # forgotten means counted afresh
    assert one not in ids
    ids.discard(three)
    ids.discard(three)  # discarding an absent id is no error
    assert three not in ids and len(ids) == 1


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"id": 1, "instances": []}, {}),
        ({"id": 1, "instances": [], "attempts": None}, {}),
        (
            {"instances": [], "attempts": {"iris-scale": 1, "iris-reduce": 3}},
            {"iris-scale": 1, "iris-reduce": 3},
        ),
    ],
)
def test_upstream_attempts_are_forwarded_as_given(payload: dict[str, Any], expected: dict[str, int]) -> None:
    assert upstream_attempts(payload) == expected
    assert list(upstream_attempts(payload)) == list(expected)  # chain order kept


@pytest.mark.parametrize(
    "attempts", [3, "1", ["iris-scale"], {"iris-scale": 0}, {"iris-scale": True}, {"iris-scale": 1.0}]
)
def test_malformed_upstream_attempts_are_bad_input_naming_the_field(attempts: Any) -> None:
    with pytest.raises(InputError, match=r"^attempts: expected an object of service name -> attempt count"):
        upstream_attempts({"instances": [], "attempts": attempts})
