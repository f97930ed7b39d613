# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""module_utils/requirement_set: stage descriptions, library pins and the services' requirement set."""

from __future__ import annotations

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.requirement_set import (
    canonical_name,
    library_pins,
    requirement_set,
    stage_infos,
)

STAGES = [
    {"name": "scale", "artifact": "/m/scaler.joblib", "function": None, "format": "joblib",
     "method": "transform", "trusted_types": [], "group": "edge", "port": 8000},
    {"name": "double", "artifact": None, "function": "pkg.mod:double", "format": "function",
     "method": "call", "trusted_types": [], "group": "fog", "port": None},
    {"name": "classify", "artifact": "/m/clf.skops", "function": None, "format": "skops",
     "method": "predict", "trusted_types": ["numpy.dtype"], "group": "cloud", "port": None},
]  # fmt: skip
ARTIFACTS = [
    {"sha256": "a" * 64, "versions": {"scikit-learn": "1.5.2", "numpy": "2.1.3"}, "changed": False},
    {"sha256": None, "versions": None},
    {"sha256": "c" * 64, "versions": {"skops": "0.10.0", "numpy": "2.1.3", "scikit-learn": "1.5.2"}},
]


def test_stage_infos_join_the_plan_and_the_artifacts_by_name() -> None:
    infos = stage_infos(STAGES, ARTIFACTS)
    assert list(infos) == ["scale", "double", "classify"]
    assert infos["scale"] == {
        "name": "scale", "artifact": "/m/scaler.joblib", "function": None, "format": "joblib",
        "method": "transform", "trusted_types": [], "sha256": "a" * 64,
        "versions": {"scikit-learn": "1.5.2", "numpy": "2.1.3"}, "input_signature": None,
    }  # fmt: skip
    # Placement fields stay in the plan; a function stage has no versions.
    assert "group" not in infos["classify"] and infos["double"]["versions"] == {}


def test_stage_infos_refuse_a_length_mismatch() -> None:
    with pytest.raises(ValueError, match="3 stages but 2 artifact descriptions"):
        stage_infos(STAGES, ARTIFACTS[:2])


def test_each_library_is_pinned_once_in_stage_order() -> None:
    pins = library_pins(stage_infos(STAGES, ARTIFACTS))
    assert pins == ["scikit-learn==1.5.2", "numpy==2.1.3", "skops==0.10.0"]


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ([], ["numpy==2.1.3", "scikit-learn==1.5.2", "skops==0.10.0"]),
        # A library the user names is theirs to pin; sorting ignores case.
        (["Pandas>=2", "scikit-learn>=1.5"],
         ["numpy==2.1.3", "Pandas>=2", "scikit-learn>=1.5", "skops==0.10.0"]),
        # Names compare as pip compares them.
        (["scikit_learn==1.5.2 ; python_version > '3.9'"],
         ["numpy==2.1.3", "scikit_learn==1.5.2 ; python_version > '3.9'", "skops==0.10.0"]),
        (["NumPy"], ["NumPy", "scikit-learn==1.5.2", "skops==0.10.0"]),
    ],
)  # fmt: skip
def test_requirement_set(user: list[str], expected: list[str]) -> None:
    requirements = requirement_set(stage_infos(STAGES, ARTIFACTS), user, "0.1.0")
    assert requirements == [*expected, "mlpacker-runtime==0.1.0"]


@pytest.mark.parametrize(
    ("requirement", "name"),
    [("scikit-learn>=1.5", "scikit-learn"), ("  Scikit_Learn", "scikit-learn"),
     ("zope.interface==6", "zope-interface"), ("numpy==2.1.3", "numpy"),
     ("onnxruntime[gpu]>=1.17", "onnxruntime")],
)  # fmt: skip
def test_canonical_name(requirement: str, name: str) -> None:
    assert canonical_name(requirement) == name


NUMBERS = {"source": "artifact", "columns": [{"name": None, "type": "number"}] * 2}
SPEC_INPUT = {"source": "spec", "columns": [{"name": "a", "type": "string"}, {"name": "b", "type": "number"}]}


@pytest.mark.parametrize(
    ("spec_input", "smoke", "artifact", "expected"),
    [
        (SPEC_INPUT, [[1, 2]], NUMBERS, SPEC_INPUT),  # the spec wins
        (
            None,
            [["x", 1.5], ["y", 2]],
            NUMBERS,
            {
                "source": "smoke_instances",
                "columns": [{"name": None, "type": "string"}, {"name": None, "type": "number"}],
            },
        ),
        (
            None,
            [["x", 1.5], [3, True]],  # rows disagree (and a bool is no number): any
            None,
            {
                "source": "smoke_instances",
                "columns": [{"name": None, "type": "any"}, {"name": None, "type": "any"}],
            },
        ),
        (None, [], NUMBERS, NUMBERS),  # no smoke rows: the artifact's
        (None, [[1, 2], [3]], NUMBERS, NUMBERS),  # ragged rows tell nothing
        (None, [], None, None),
    ],
)
def test_input_signature_precedence(spec_input, smoke, artifact, expected) -> None:
    stages = [dict(STAGES[0], input=spec_input), STAGES[1]]
    artifacts = [dict(ARTIFACTS[0], input_signature=artifact), dict(ARTIFACTS[1], input_signature=artifact)]
    infos = stage_infos(stages, artifacts, smoke)
    assert infos["scale"]["input_signature"] == expected
    # The smoke rows feed the first stage only.
    assert infos["double"]["input_signature"] == artifact


def test_a_pinned_stage_records_its_pin_and_refuses_another_digest() -> None:
    stages = [dict(STAGES[0], sha256="a" * 64), STAGES[1], STAGES[2]]
    assert stage_infos(stages, ARTIFACTS)["scale"]["sha256"] == "a" * 64
    with pytest.raises(ValueError, match=r"stage 'scale': artifact_info read sha256 a{64}, pinned b{64}"):
        stage_infos([dict(STAGES[0], sha256="b" * 64), STAGES[1], STAGES[2]], ARTIFACTS)
