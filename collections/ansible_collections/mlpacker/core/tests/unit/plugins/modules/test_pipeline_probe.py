# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""mlpacker.core.pipeline_probe through a real Ansible run: a real HTTP server and a real mosquitto."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class RowSumHandler(BaseHTTPRequestHandler):
    """Stand-in for a deployed REST pipeline: predicts the sum of each row, plus the server's offset."""

    offset = 0.0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        payload = json.dumps({"predictions": [sum(row) + self.offset for row in body["instances"]]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        return


def start_server(offset: float) -> ThreadingHTTPServer:
    handler = type("Handler", (RowSumHandler,), {"offset": offset})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture()
def two_servers() -> Iterator[list[str]]:
    """Two entry points: the first answers correctly, the second is off by 0.5."""
    servers = [start_server(0.0), start_server(0.5)]
    try:
        yield [f"http://127.0.0.1:{server.server_address[1]}/predict" for server in servers]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_rest_probe_matches_expected(run_module, two_servers: list[str]) -> None:
    args = {"urls": two_servers[:1], "instances": [[1, 2], [3, 4]], "expected": [3, 7.0000000001]}
    result = run_module("pipeline_probe", args)
    assert result.get("failed") is not True, result
    assert result["predictions"] == [3, 7]
    assert result["results"][0]["url"] == two_servers[0]
    assert result["latency_ms"] >= 0


def test_rest_probe_reports_the_first_difference(run_module, two_servers: list[str]) -> None:
    args = {"urls": two_servers, "instances": [[1, 2], [3, 4]], "expected": [3, 7]}
    result = run_module("pipeline_probe", args)
    assert result["failed"] is True
    assert result["msg"] == (
        f"{two_servers[1]}: predictions differ at index [0]: expected 3, got 3.5 (tolerance 1e-06)"
    )
    assert [entry["predictions"] for entry in result["results"]] == [[3, 7], [3.5, 7.5]]
    only_first = run_module("pipeline_probe", dict(args, all=False))
    assert only_first.get("failed") is not True, only_first
    assert len(only_first["results"]) == 1


def test_rest_probe_unreachable(run_module, unused_port: int) -> None:
    url = f"http://127.0.0.1:{unused_port}/predict"
    result = run_module("pipeline_probe", {"urls": [url], "instances": [[1]], "timeout": 3})
    assert result["failed"] is True
    assert result["msg"].startswith(f"probe failed: POST {url} failed")


@pytest.mark.mqtt
def test_stream_probe_through_mosquitto(run_module, mosquitto: tuple[str, int]) -> None:
    from paho.mqtt import client as mqtt_client

    host, port = mosquitto
    subscribed = threading.Event()
    pipeline = mqtt_client.Client(callback_api_version=mqtt_client.CallbackAPIVersion.VERSION2)

    def answer(client: Any, userdata: Any, message: Any) -> None:
        request = json.loads(message.payload)
        if request["instances"][0][0] < 0:
            reply = {"id": request["id"], "stage": "scale", "error": "negative input"}
            client.publish("mlpacker/t/errors", json.dumps(reply), qos=1)
            return
        reply = {"id": request["id"], "predictions": [sum(row) for row in request["instances"]]}
        client.publish("mlpacker/t/out", json.dumps(reply), qos=1)

    pipeline.on_connect = lambda client, *args: client.subscribe("mlpacker/t/in", qos=1)
    pipeline.on_subscribe = lambda *args: subscribed.set()
    pipeline.on_message = answer
    pipeline.connect(host, port)
    pipeline.loop_start()
    try:
        assert subscribed.wait(10)
        args = {
            "mode": "stream",
            "broker": {"host": host, "port": port, "username": "probe", "password": "n0t-echoed-Pw"},
            "input_topic": "mlpacker/t/in",
            "output_topic": "mlpacker/t/out",
            "error_topic": "mlpacker/t/errors",
            "instances": [[1, 2], [3, 4]],
            "expected": [3, 7],
        }
        result = run_module("pipeline_probe", args)
        assert result.get("failed") is not True, result
        assert result["predictions"] == [3, 7]
        assert result["results"][0]["url"] is None
        assert "n0t-echoed-Pw" not in json.dumps(result)
        failed = run_module("pipeline_probe", dict(args, instances=[[-1, 0]]))
        assert failed["failed"] is True
        expected_message = "the pipeline reported an error on mlpacker/t/errors: stage scale: negative input"
        assert failed["msg"] == "probe failed: " + expected_message
    finally:
        pipeline.loop_stop()
        pipeline.disconnect()


def test_stream_mode_needs_broker_and_topics(run_module) -> None:
    result = run_module("pipeline_probe", {"mode": "stream", "instances": [[1]]})
    assert result["failed"] is True
    assert (
        "mode is stream but all of the following are missing: broker, input_topic, output_topic"
        in result["msg"]
    )
