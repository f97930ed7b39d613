# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The spec's requirements: PEP 508 requirements pass; pip options, URLs and paths do not (paths and URLs
pass with allow_direct_references), each refusal naming requirements[i] and the value."""

from __future__ import annotations

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.pip_requirements import (
    check_requirement,
    check_requirements,
)

FIELD = "mlpacker_pipeline.requirements[0]"


@pytest.mark.parametrize(
    "value",
    [
        "scikit-learn==1.5.2",
        "numpy",
        "numpy>=1.24,<3",
        "scikit_learn[alldeps]~=1.5",
        "onnxruntime; python_version >= '3.9'",
        "  pandas == 2.2.3  ",
    ],
)
@pytest.mark.parametrize("allow", [False, True])
def test_pep_508_requirements_pass(value: str, allow: bool) -> None:
    assert check_requirement(value, FIELD, allow) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("--index-url=http://127.0.0.1:9/simple", "is a pip option, not a requirement"),
        ("--extra-index-url http://127.0.0.1:9/simple", "is a pip option"),
        ("-i http://127.0.0.1:9/simple", "is a pip option"),
        ("-e ./local-package", "is a pip option"),
        ("-r other-requirements.txt", "is a pip option"),
        ("  --pre", "is a pip option"),
    ],
)
@pytest.mark.parametrize("allow", [False, True])
def test_pip_options_are_always_refused(value: str, expected: str, allow: bool) -> None:
    problem = check_requirement(value, FIELD, allow)
    assert problem is not None and problem.startswith(f"{FIELD}: {value!r} ") and expected in problem


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("evil @ https://example.invalid/evil-1.0-py3-none-any.whl", "is a direct reference"),
        ("evil @ file:///tmp/evil-1.0-py3-none-any.whl", "is a direct reference"),
        ("./local-package", "set mlpacker_allow_direct_references to true"),
        ("/tmp/evil-1.0-py3-none-any.whl", "set mlpacker_allow_direct_references to true"),
        ("evil-1.0.tar.gz", "set mlpacker_allow_direct_references to true"),
    ],
)
def test_urls_and_paths_are_refused_by_default(value: str, expected: str) -> None:
    problem = check_requirement(value, FIELD)
    assert problem is not None and problem.startswith(f"{FIELD}: {value!r} ") and expected in problem


@pytest.mark.parametrize(
    "value",
    [
        "evil @ https://example.invalid/evil-1.0-py3-none-any.whl",
        "./local-package",
        "/srv/wheels/tool-1.0-py3-none-any.whl",
    ],
)
def test_urls_and_paths_pass_when_allowed(value: str) -> None:
    assert check_requirement(value, FIELD, allow_direct_references=True) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "expected a pip requirement string"),
        ("   ", "expected a pip requirement string"),
        (3, "expected a pip requirement string"),
        (None, "expected a pip requirement string"),
        ("scikit-learn===", "is not a PEP 508 requirement"),
        ("numpy; rm -rf /", "is not a PEP 508 requirement"),
        ("numpy\n--index-url=http://127.0.0.1:9/simple", "is not a PEP 508 requirement"),
    ],
)
def test_malformed_entries_are_refused(value: object, expected: str) -> None:
    problem = check_requirement(value, FIELD, allow_direct_references=True)
    assert problem is not None and problem.startswith(f"{FIELD}: ") and expected in problem
    assert repr(value) in problem


def test_every_problem_names_its_index() -> None:
    problems = check_requirements(
        ["numpy", "--index-url=http://127.0.0.1:9/simple", "scipy", "x @ https://example.invalid/x.whl"],
        "mlpacker_pipeline.requirements",
    )
    assert [problem.split(":", 1)[0] for problem in problems] == [
        "mlpacker_pipeline.requirements[1]",
        "mlpacker_pipeline.requirements[3]",
    ]


@pytest.mark.parametrize("value", ["numpy", {"numpy": "1.0"}, None])
def test_not_a_list_is_refused(value: object) -> None:
    assert check_requirements(value, "mlpacker_pipeline.requirements") == [
        f"mlpacker_pipeline.requirements: expected a list of pip requirement strings, got {value!r}"
    ]
