"""Untrusted request bodies against real gunicorn (mlpacker-runtime serve): clear 4xx, nothing in the log.

The same cases through the Flask test client, with every message, are in test_untrusted_input.py.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Callable
from pathlib import Path

from runtime_helpers import (
    Broker,
    IrisModels,
    MqttProbe,
    Runtimes,
    base_config,
    bearer,
    function_stage,
    post_json,
    stream_config,
    write_tokens,
)

IRIS_SIGNATURE = {
    "source": "spec",
    "columns": [
        {"name": name, "type": "number"}
        for name in ("sepal_length", "sepal_width", "petal_length", "petal_width")
    ],
}


def raw_request(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_bad_bodies_get_4xx_and_leave_no_traceback(
    runtimes: Runtimes, iris_models: IrisModels, tmp_path: Path
) -> None:
    stages = iris_models.three_stages()
    stages[0]["input_signature"] = IRIS_SIGNATURE
    token_file = write_tokens(tmp_path / "token", "tok")
    service = runtimes.start(
        base_config(
            stages,
            rest={"workers": 2, "max_instances": 100},
            security={"auth": {"token_file": str(token_file)}},
        )
    )
    url, auth = service.base_url + "/predict", bearer("tok")
    port = service.config["rest"]["port"]
    deep = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    cases = [
        (b'{"instances": [[NaN, 1, 2, 3]]}', 400, "malformed JSON body: NaN is not a JSON value"),
        (b'{"instances": [[Infinity, 1, 2, 3]]}', 400, "malformed JSON body: Infinity is not a JSON value"),
        (b'{"instances": [[-Infinity, 1, 2, 3]]}', 400, "malformed JSON body: -Infinity is not a JSON value"),
        (deep, 400, "malformed JSON body: nested too deeply"),
        (json.dumps({"instances": [[1, 2, 3, 4]] * 101}).encode(), 413, "more than rest.max_instances (100)"),
        (b'{"instances": [[1, "abc", 3, 4]]}', 422, "(sepal_width): expected a number, received a string"),
        (b'{"instances": [[1, 2, 3, [[[4]]]]]}', 422, "instances[0][3] (petal_width): expected a number"),
        (b'{"instances": [[-1.7e308, 0, 0, 0]]}', 422, "stage 'scale' computed infinity or NaN"),
    ]  # fmt: skip
    for _ in range(3):  # several rounds, so both workers see each case
        for body, status, fragment in cases:
            code, answer = post_json(url, None, raw=body, headers=auth)
            assert code == status, (body[:40], code, answer)
            assert fragment in answer["error"], (body[:40], answer)
    # Any other method: 405 with Allow (after authentication; the health probes are open).
    for method in ("OPTIONS", "TRACE", "PUT", "DELETE"):
        status, headers, body = raw_request(port, method, "/predict", headers=auth)
        assert (status, headers.get("Allow")) == (405, "POST"), (method, body)
        assert json.loads(body) == {"error": f"Method Not Allowed: {method} /predict"}
        status, headers, _ = raw_request(port, method, "/health/live")
        assert (status, headers.get("Allow")) == (405, "GET, HEAD"), method
        assert raw_request(port, method, "/predict")[0] == 401  # anonymous: refused before routing
    assert post_json(url, {"instances": [[5.1, 3.5, 1.4, 0.2]]}, headers=auth)[0] == 200
    log = service.log()
    assert "Traceback" not in log and "RuntimeWarning" not in log and "ERROR" not in log, log[-3000:]


def test_a_failing_stage_logs_its_traceback_once(runtimes: Runtimes, code_dir: Path) -> None:
    service = runtimes.start(
        base_config(
            [function_stage("explode", "mlfuncs.ops:boom")], code_dir=str(code_dir), rest={"workers": 1}
        )
    )
    for _ in range(30):
        status, body = post_json(service.base_url + "/predict", {"instances": [[1.0]]})
        assert (status, body) == (
            500,
            {"error": "stage 'explode' failed: ValueError: boom: this stage always fails"},
        )
    assert service.log_shows("Traceback")
    assert service.log().count("Traceback") == 1
    assert service.log().count("stage 'explode' (call) failed") == 1  # the repeats are summed up later


def test_stream_refuses_nan_and_deep_nesting_to_the_error_topic(
    runtimes: Runtimes,
    mosquitto: Broker,
    mqtt_probe: Callable[[list[str]], MqttProbe],
    iris_models: IrisModels,
) -> None:
    prefix = f"t/untrusted-{uuid.uuid4().hex[:8]}"
    stages = iris_models.three_stages()
    stages[0]["input_signature"] = IRIS_SIGNATURE
    runtimes.start(stream_config(stages, mosquitto.port, prefix, "all", f"{prefix}/out"))
    probe = mqtt_probe([f"{prefix}/out", f"{prefix}/errors"])
    topic = f"{prefix}/all/in"
    probe.publish(topic, None, raw=b'{"id": 1, "instances": [[NaN, 1, 2, 3]]}')
    probe.publish(topic, None, raw=b'{"id": 2, "instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    probe.publish(topic, {"id": 3, "instances": [[1, "abc", 3, 4]]})
    probe.publish(topic, {"id": 4, "instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert [message["id"] for message in probe.wait_for(f"{prefix}/out", 1)] == [4]
    errors = probe.wait_for(f"{prefix}/errors", 3)
    assert [error["error"] for error in errors] == [
        "malformed JSON message: NaN is not a JSON value (JSON does not allow NaN, Infinity or -Infinity; "
        "send null for a missing value if the model takes it)",
        "malformed JSON message: nested too deeply (instances are rows of values)",
        "instances[0][1] (sepal_width): expected a number, received a string ('abc')",
    ]
