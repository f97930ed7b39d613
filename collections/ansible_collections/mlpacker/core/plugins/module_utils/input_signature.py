# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The input signature of a stage: how many columns a request row has and, per column, whether it takes
numbers or strings. Recorded at packaging time in each stage of the runtime configuration
(``stages[].input_signature``); the service checks requests against its first stage's and puts it in
``/openapi.json``.

Where it comes from, first found wins: the spec's ``stages[].input`` (an MLflow-style column signature), the
smoke-test rows (``mlpacker_smoke_instances``, first stage only), the artifact (an ONNX model's input tensor;
a scikit-learn object's ``n_features_in_``, probed with a row of zeros and a row of strings), else none.
"""

from __future__ import annotations

from typing import Any

NUMBER = "number"
STRING = "string"
ANY = "any"
SOURCES = ("spec", "smoke_instances", "artifact")
# MLflow's column types (and the signature's own names) -> what a request value must be.
SPEC_TYPES = {
    "double": NUMBER,
    "float": NUMBER,
    "long": NUMBER,
    "integer": NUMBER,
    "number": NUMBER,
    "string": STRING,
    "any": ANY,
}
ONNX_TYPES = {
    "tensor(string)": STRING,
}


def signature(source: str, columns: list[dict[str, Any]]) -> dict[str, Any]:
    return {"source": source, "columns": columns}


def spec_signature(value: Any, field: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The signature of a spec's ``input`` (a list of ``{name, type}`` or of type names) and the problems,
    each naming its field (``...input[1].type``)."""
    if value is None:
        return None, []
    if not isinstance(value, list) or not value:
        return None, [
            f"{field}: expected a non-empty list of columns ({{name, type}} or a type), got {value!r}"
        ]
    problems = []
    columns = []
    for index, column in enumerate(value):
        name = None
        type_name = column
        if isinstance(column, dict):
            unknown = sorted(set(column) - {"name", "type"})
            if unknown:
                problems.append(
                    f"{field}[{index}]: unknown key(s) {', '.join(unknown)} (valid keys: name, type)"
                )
            name = column.get("name")
            type_name = column.get("type")
            if name is not None and not isinstance(name, str):
                problems.append(f"{field}[{index}].name: expected a string, got {name!r}")
                name = None
            type_field = f"{field}[{index}].type"
        else:
            type_field = f"{field}[{index}]"
        if not isinstance(type_name, str) or type_name.lower() not in SPEC_TYPES:
            problems.append(
                f"{type_field}: {type_name!r} is not a column type (use one of {', '.join(SPEC_TYPES)})"
            )
            continue
        columns.append({"name": name, "type": SPEC_TYPES[type_name.lower()]})
    if problems:
        return None, problems
    return signature("spec", columns), []


def value_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return NUMBER
    if isinstance(value, str):
        return STRING
    return None


def instances_signature(instances: Any) -> dict[str, Any] | None:
    """From smoke-test rows: per column the JSON type all rows agree on (``any`` where they do not); None
    when the rows are not a list of equally long lists of values."""
    if not isinstance(instances, list) or not instances:
        return None
    if not all(isinstance(row, list) and row for row in instances):
        return None
    width = len(instances[0])
    if any(len(row) != width for row in instances):
        return None
    columns = []
    for position in range(width):
        kinds = {value_type(row[position]) for row in instances}
        kind = kinds.pop() if len(kinds) == 1 else ANY
        columns.append({"name": None, "type": kind or ANY})
    return signature("smoke_instances", columns)


def onnx_signature(inputs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """From an ONNX model's inputs (artifact_info's ``onnx_inputs``): one 2-D input with a fixed width."""
    if len(inputs) != 1:
        return None
    shape = inputs[0].get("shape") or []
    if len(shape) != 2 or not isinstance(shape[1], int) or isinstance(shape[1], bool) or shape[1] < 1:
        return None
    kind = ONNX_TYPES.get(inputs[0].get("type"), NUMBER)
    return signature("artifact", [{"name": None, "type": kind} for _position in range(shape[1])])


def accepts(run: Any, rows: list[list[Any]]) -> bool:
    try:
        run(rows)
    except Exception:  # pylint: disable=broad-except
        # Any refusal counts: the probe asks only whether the method takes such a row.
        return False
    return True


def object_signature(obj: Any, method: str | None, n_features: int | None) -> dict[str, Any] | None:
    """From a loaded scikit-learn-like object with ``n_features_in_``: ``number`` per column when its
    ``method`` takes a row of zeros and refuses a row of strings, else ``any``; ``feature_names_in_`` gives
    the names. Runs the method: call it in the inspection child process only."""
    if not n_features or not isinstance(n_features, int):
        return None
    run = getattr(obj, method or "", None) if method and method != "call" else None
    if not callable(run):
        return None
    names = getattr(obj, "feature_names_in_", None)
    names = [str(name) for name in names] if names is not None and len(names) == n_features else None
    numeric = accepts(run, [[0.0] * n_features]) and not accepts(run, [["mlpacker-probe"] * n_features])
    kind = NUMBER if numeric else ANY
    return signature(
        "artifact",
        [{"name": names[position] if names else None, "type": kind} for position in range(n_features)],
    )


def choose_signature(
    spec: dict[str, Any] | None,
    smoke_instances: Any = None,
    artifact: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The recorded signature: the spec's, else the smoke rows' (pass them for the first stage only), else the
    artifact's, else None."""
    if spec:
        return spec
    from_rows = instances_signature(smoke_instances) if smoke_instances else None
    if from_rows:
        return from_rows
    return artifact or None
