"""Property-based fuzzing of a REST service driven by its /openapi.json (schemathesis, every check).

A three-stage iris service under real gunicorn, secured as a deploy secures it (HTTPS, bearer token), with
the first stage's input signature. The deployed pipeline gets the same in tests/deploy/test_local_rest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_helpers import IrisModels, Pki, Runtimes, base_config, write_tokens

from tests.openapi_fuzz import run_schemathesis

IRIS_SIGNATURE = {
    "source": "spec",
    "columns": [
        {"name": name, "type": "number"}
        for name in ("sepal_length", "sepal_width", "petal_length", "petal_width")
    ],
}


@pytest.mark.slow
def test_fuzzer_finds_no_server_error_and_no_protocol_violation(
    runtimes: Runtimes, iris_models: IrisModels, pki: Pki, tmp_path: Path
) -> None:
    stages = iris_models.three_stages()
    stages[0]["input_signature"] = IRIS_SIGNATURE
    token_file = write_tokens(tmp_path / "token", "fuzz-token")
    config = base_config(
        stages,
        rest={"workers": 2, "max_instances": 200},
        security={"tls": pki.server_tls(), "auth": {"token_file": str(token_file)}},
    )
    service = runtimes.start(config, http=pki.https_client())
    result = run_schemathesis(
        service.base_url, tmp_path / "fuzz", token="fuzz-token", ca_file=str(pki.ca.cert), max_examples=500
    )
    print(result.describe())
    assert result.requests >= 500, result.describe()
    assert (result.failures, result.errors, result.exit_code) == ([], [], 0), result.describe()
    assert "Traceback" not in service.log()
