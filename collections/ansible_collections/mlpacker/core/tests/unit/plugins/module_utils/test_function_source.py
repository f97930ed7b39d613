# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.function_source import (
    function_source_problem,
    module_file,
)


@pytest.fixture()
def code_dir(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    (code / "features").mkdir(parents=True)
    (code / "features" / "__init__.py").write_text("")
    (code / "features" / "clean.py").write_text("def drop(rows):\n    return rows\n")
    (code / "flat.py").write_text("def f(rows):\n    return rows\n")
    (code / "namespace").mkdir()
    (code / "namespace" / "mod.py").write_text("def f(rows):\n    return rows\n")
    (tmp_path / "elsewhere.py").write_text("def f(rows):\n    return rows\n")
    (code / "linked.py").symlink_to(tmp_path / "elsewhere.py")
    return code


@pytest.mark.parametrize(
    ("module_name", "relative"),
    [
        ("features.clean", "features/clean.py"),
        ("features", "features/__init__.py"),
        ("flat", "flat.py"),
        ("namespace.mod", "namespace/mod.py"),
        ("linked", None),  # a symlink out of code_dir
        ("subprocess", None),
        ("os.path", None),
        ("features.absent", None),
    ],
)
def test_module_file(code_dir: Path, module_name: str, relative: str | None) -> None:
    found = module_file(str(code_dir), module_name)
    assert found == (str(code_dir / relative) if relative else None)


@pytest.mark.parametrize(
    ("function", "code", "refused"),
    [
        ("features.clean:drop", True, False),
        ("subprocess:check_output", True, True),
        ("features.clean:drop", False, True),  # no code_dir at all
    ],
)
def test_function_source_problem(code_dir: Path, function: str, code: bool, refused: bool) -> None:
    problem = function_source_problem("stages[0].function", function, str(code_dir) if code else None)
    if not refused:
        assert problem is None
        return
    module_name = function.partition(":")[0]
    assert problem == (
        f"stages[0].function: module {module_name!r} is not a file under code_dir"
        f" {code_dir if code else None}; function stages may only use the pipeline's own code (not the"
        " standard library or installed packages)"
    )
