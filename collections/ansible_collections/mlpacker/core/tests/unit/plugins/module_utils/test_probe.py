# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Probing helpers: prediction comparison, REST against a real HTTP server, MQTT against real mosquitto."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.probe import (
    ProbeError,
    compare_predictions,
    mqtt_round_trip,
    post_instances,
)


@pytest.mark.parametrize(
    ("expected", "got", "tolerance", "message"),
    [
        ([1, 2, 3], [1, 2, 3], 1e-6, None),
        ([0.1, 0.2], [0.1 + 1e-9, 0.2], 1e-6, None),
        ([[0.5, 0.5], [0.1, 0.9]], [[0.5, 0.5], [0.1, 0.9000001]], 1e-6, None),
        (["setosa", "virginica"], ["setosa", "virginica"], 1e-6, None),
        ([1, 2, 3], [1, 5, 3], 1e-6, "predictions differ at index [1]: expected 2, got 5 (tolerance 1e-06)"),
        (
            [[0.5, 0.5], [0.1, 0.9]],
            [[0.5, 0.5], [0.1, 0.8]],
            1e-6,
            "predictions differ at index [1][1]: expected 0.9, got 0.8 (tolerance 1e-06)",
        ),
        ([0.9], [0.8], 0.2, None),
        ([1, 2], [1], 1e-6, "predictions differ at index [1]: expected 2, got '<missing>' (tolerance 1e-06)"),
        (
            ["setosa"],
            ["versicolor"],
            1e-6,
            "predictions differ at index [0]: expected 'setosa', got 'versicolor'",
        ),
        ([True], [1], 1e-6, "predictions differ at index [0]: expected True, got 1"),
        ([{"a": 1}], [{"a": 1.0000000001}], 1e-6, None),
        ([{"a": 1}], [{"b": 1}], 1e-6, "predictions differ at index [0]['a']"),
    ],
)
def test_compare_predictions(expected: Any, got: Any, tolerance: float, message: str | None) -> None:
    result = compare_predictions(expected, got, tolerance)
    if message is None:
        assert result is None
    else:
        assert result is not None and result.startswith(message), result


class SumHandler(BaseHTTPRequestHandler):
    """A stand-in pipeline: predicts the sum of each row; /broken answers 500, /nojson a non-JSON body."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/broken":
            self.send_error(500, "stage 'classify' failed")
            return
        if self.path == "/nojson":
            payload = b"<html>proxy error</html>"
        else:
            payload = json.dumps({"predictions": [sum(row) for row in body["instances"]]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture()
def sum_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SumHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_post_instances_returns_the_predictions(sum_server: str) -> None:
    predictions, latency_ms = post_instances(sum_server + "/predict", [[1, 2], [3, 4.5]], timeout=5)
    assert predictions == [3, 7.5]
    assert latency_ms >= 0


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/broken", "answered HTTP 500"),
        ("/nojson", "answered with a body that is not JSON"),
    ],
)
def test_post_instances_errors_name_the_url(sum_server: str, path: str, message: str) -> None:
    with pytest.raises(ProbeError, match=message) as raised:
        post_instances(sum_server + path, [[1]], timeout=5)
    assert sum_server + path in str(raised.value)


def test_post_instances_to_a_closed_port_fails_clearly(unused_port: int) -> None:
    url = f"http://127.0.0.1:{unused_port}/predict"
    with pytest.raises(ProbeError, match=f"POST {url} failed"):
        post_instances(url, [[1]], timeout=2)


class Responder:
    """A real MQTT client standing in for a deployed stream pipeline (sums rows, or reports an error)."""

    def __init__(self, host: str, port: int, fail: bool = False):
        from paho.mqtt import client as mqtt_client

        self.fail = fail
        self.ready = threading.Event()
        self.client = mqtt_client.Client(callback_api_version=mqtt_client.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda client, *args: client.subscribe("test/in", qos=1)
        self.client.on_subscribe = lambda *args: self.ready.set()
        self.client.on_message = self.answer
        self.client.connect(host, port)
        self.client.loop_start()
        assert self.ready.wait(10), "the responder could not subscribe"

    def answer(self, client: Any, userdata: Any, message: Any) -> None:
        request = json.loads(message.payload)
        if self.fail:
            reply = {"id": request["id"], "stage": "classify", "error": "X has 3 features, expected 4"}
            client.publish("test/errors", json.dumps(reply), qos=1)
        else:
            reply = {"id": "someone-else", "predictions": [0]}
            client.publish("test/out", json.dumps(reply), qos=1)  # another request's answer: must be ignored
            reply = {"id": request["id"], "predictions": [sum(row) for row in request["instances"]]}
            client.publish("test/out", json.dumps(reply), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.mqtt
def test_mqtt_round_trip_matches_the_answer_by_id(mosquitto: tuple[str, int]) -> None:
    host, port = mosquitto
    responder = Responder(host, port)
    try:
        predictions, latency_ms = mqtt_round_trip(
            {"host": host, "port": port}, "test/in", "test/out", "test/errors", [[1, 2], [3, 4]], timeout=10
        )
    finally:
        responder.close()
    assert predictions == [3, 7]
    assert latency_ms >= 0


@pytest.mark.mqtt
def test_mqtt_error_topic_names_the_stage(mosquitto: tuple[str, int]) -> None:
    host, port = mosquitto
    responder = Responder(host, port, fail=True)
    try:
        with pytest.raises(ProbeError, match="stage classify: X has 3 features, expected 4"):
            mqtt_round_trip(
                {"host": host, "port": port}, "test/in", "test/out", "test/errors", [[1, 2]], timeout=10
            )
    finally:
        responder.close()


@pytest.mark.mqtt
def test_mqtt_without_an_answer_times_out(mosquitto: tuple[str, int]) -> None:
    host, port = mosquitto
    with pytest.raises(ProbeError, match="no answer with id .* on test/out or test/errors within 0.5s"):
        mqtt_round_trip(
            {"host": host, "port": port}, "test/in", "test/out", "test/errors", [[1]], timeout=0.5
        )


def test_mqtt_unreachable_broker_fails_clearly(unused_port: int) -> None:
    port = unused_port
    with pytest.raises(ProbeError, match=f"cannot connect to the MQTT broker 127.0.0.1:{port}"):
        mqtt_round_trip({"host": "127.0.0.1", "port": port}, "a", "b", None, [[1]], timeout=2)
