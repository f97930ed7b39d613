"""Loading pipeline specs (no Ansible involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpacker.api import build_extravars
from mlpacker.errors import SpecError
from mlpacker.spec import load_spec


def test_file_top_level_keys_become_extra_vars(tmp_path: Path) -> None:
    spec_file = tmp_path / "p.yml"
    spec_file.write_text("mlpacker_pipeline: {name: iris, stages: []}\nmlpacker_broker: {host: 10.0.0.9}\n")
    spec = load_spec(spec_file)
    assert spec.name == "iris"
    assert spec.extravars == {
        "mlpacker_pipeline": {"name": "iris", "stages": []},
        "mlpacker_broker": {"host": "10.0.0.9"},
    }
    assert spec.path == spec_file.resolve()


def test_bare_pipeline_mapping_is_wrapped() -> None:
    spec = load_spec({"name": "iris", "mode": "stream"})
    assert spec.extravars == {"mlpacker_pipeline": {"name": "iris", "mode": "stream"}}
    assert spec.source == "<dict>"


def test_mapping_is_copied_not_shared() -> None:
    original = {"mlpacker_pipeline": {"name": "iris", "stages": [{"name": "a"}]}}
    spec = load_spec(original)
    spec.pipeline["stages"].append({"name": "b"})
    assert original["mlpacker_pipeline"]["stages"] == [{"name": "a"}]


def test_non_mapping_pipeline_names_the_field() -> None:
    with pytest.raises(SpecError) as info:
        load_spec({"mlpacker_pipeline": "iris"})
    assert info.value.field == "mlpacker_pipeline"
    assert "'mlpacker_pipeline' must be a mapping, it is a str" in str(info.value)


def test_extra_vars_order(tmp_path: Path) -> None:
    spec_file = tmp_path / "p.yml"
    spec_file.write_text("mlpacker_pipeline: {name: iris}\nmlpacker_broker: {host: a}\n")
    merged = build_extravars(
        spec_file,
        broker={"host": "b", "port": 1884},
        state_dir="rel",
        extravars={"mlpacker_default_port": 9100},
    )
    assert merged["mlpacker_broker"] == {"host": "b", "port": 1884}  # the argument wins over the file
    assert merged["mlpacker_state_dir"] == str(Path("rel").resolve())
    assert merged["mlpacker_default_port"] == 9100
