"""Stream mode against a real mosquitto broker and real `mlpacker-runtime serve` consumer processes."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3
from runtime_helpers import (
    HTTP,
    Broker,
    IrisModels,
    MqttProbe,
    Pki,
    RuntimeProcess,
    Runtimes,
    bearer,
    function_stage,
    get,
    stream_config,
    write_tokens,
)

pytestmark = pytest.mark.mqtt


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.mark.slow
def test_chain_of_three_consumers_equals_pipeline(
    runtimes: Runtimes,
    mosquitto: Broker,
    mqtt_probe: Callable[[list[str]], MqttProbe],
    iris_models: IrisModels,
) -> None:
    prefix = unique_prefix()
    names = ["scale", "reduce", "classify"]
    consumers = []
    for index, stage in enumerate(iris_models.three_stages()):
        last = index == len(names) - 1
        output = f"{prefix}/out" if last else f"{prefix}/{names[index + 1]}/in"
        config = stream_config(
            [stage],
            mosquitto.port,
            prefix,
            names[index],
            output,
            output_kind="predictions" if last else "instances",
        )
        consumers.append(runtimes.prepare(config).start())
    for consumer in consumers:
        consumer.wait_ready()
    probe = mqtt_probe([f"{prefix}/out", f"{prefix}/errors"])
    rows = iris_models.X
    batches = {f"m{start}": rows[start : start + 10] for start in range(0, len(rows), 10)}
    for message_id, batch in batches.items():
        probe.publish(f"{prefix}/scale/in", {"id": message_id, "instances": batch.tolist()})
    received = probe.wait_for(f"{prefix}/out", len(batches))
    by_id = {message["id"]: message for message in received}
    assert set(by_id) == set(batches)
    # Each service the message went through adds itself to "attempts", in chain order: once each here.
    services = {config["service"]: 1 for config in (consumer.config for consumer in consumers)}
    for message_id, batch in batches.items():
        expected = {"id": message_id, "predictions": iris_models.expected(batch), "attempts": services}
        assert by_id[message_id] == expected
        assert list(by_id[message_id]["attempts"]) == list(services)
    assert probe.messages[f"{prefix}/errors"] == []
    status, metrics = get(consumers[1].base_url + "/metrics")
    assert status == 200
    assert f'mlpacker_messages_total{{result="ok"}} {float(len(batches))}' in metrics.decode()
    info = json.loads(get(consumers[2].base_url + "/info")[1])
    assert info["mode"] == "stream" and info["stages"][0]["name"] == "classify"


def test_poison_messages_go_to_error_topic_and_later_ones_flow(
    runtimes: Runtimes,
    mosquitto: Broker,
    mqtt_probe: Callable[[list[str]], MqttProbe],
    iris_models: IrisModels,
    code_dir: Path,
) -> None:
    prefix = unique_prefix()
    stages = [iris_models.stage("scale", "scaler", "transform"), function_stage("guard", "mlfuncs.ops:guard")]
    config = stream_config(stages, mosquitto.port, prefix, "scale", f"{prefix}/out")
    config["code_dir"] = str(code_dir)
    runtimes.start(config)
    probe = mqtt_probe([f"{prefix}/out", f"{prefix}/errors"])
    topic = f"{prefix}/scale/in"
    good = [5.1, 3.5, 1.4, 0.2]
    probe.publish(topic, {"id": 1, "instances": [good]})
    probe.publish(topic, None, raw=b"{this is not json")
    probe.publish(topic, {"id": 3, "instances": [[1, 2]]})
    probe.publish(topic, {"id": 4, "instances": [[1e9, 1, 1, 1]]})
    probe.publish(topic, {"id": 5, "instances": [good]})
    outputs = probe.wait_for(f"{prefix}/out", 2)
    assert [message["id"] for message in outputs] == [1, 5]
    errors = probe.wait_for(f"{prefix}/errors", 3)
    assert errors[0]["id"] is None
    assert errors[0]["stage"] == "scale"
    assert errors[0]["error"].startswith("malformed JSON")
    assert errors[0]["payload"] == "{this is not json"
    assert errors[1]["id"] == 3
    assert errors[1]["error"] == "instances[0]: expected 4 features, received 2"
    assert json.loads(errors[1]["payload"]) == {"id": 3, "instances": [[1, 2]]}
    assert errors[2]["id"] == 4
    assert errors[2]["stage"] == "guard"
    assert errors[2]["error"] == "stage 'guard' failed: OverflowError: value out of the trained range"


@pytest.mark.slow
def test_sigkilled_consumer_restarted_loses_no_message(
    runtimes: Runtimes,
    mosquitto: Broker,
    mqtt_probe: Callable[[list[str]], MqttProbe],
    code_dir: Path,
) -> None:
    prefix = unique_prefix()
    # A slow stage so that the kill lands while messages are received but not yet acknowledged.
    config = stream_config(
        [function_stage("slow", "mlfuncs.ops:slow")], mosquitto.port, prefix, "s", f"{prefix}/out"
    )
    config["code_dir"] = str(code_dir)
    env = {"SLOW_STAGE_SECONDS": "0.05"}
    consumer = runtimes.start(config, env=env)
    probe = mqtt_probe([f"{prefix}/out"])
    ids = list(range(60))
    for message_id in ids[:30]:
        probe.publish(f"{prefix}/s/in", {"id": message_id, "instances": [[message_id]]})
    probe.wait_for(f"{prefix}/out", 5)
    consumer.send_signal(signal.SIGKILL)
    consumer.proc.wait(10)
    # Published while no consumer runs: the broker queues them for the persistent session.
    for message_id in ids[30:]:
        probe.publish(f"{prefix}/s/in", {"id": message_id, "instances": [[message_id]]})
    before_restart = {message["id"] for message in probe.messages[f"{prefix}/out"]}
    assert len(before_restart) < len(ids)
    restarted = runtimes.prepare(consumer.config, env=env).start()
    restarted.wait_ready()
    deadline_count = len(ids)
    # At-least-once: duplicates are allowed, losses are not.
    while True:
        seen = {message["id"] for message in probe.messages[f"{prefix}/out"]}
        if seen >= set(ids):
            break
        probe.wait_for(f"{prefix}/out", len(probe.messages[f"{prefix}/out"]) + 1, timeout=20)
    assert seen == set(ids)
    assert len(probe.messages[f"{prefix}/out"]) >= deadline_count
    for message in probe.messages[f"{prefix}/out"]:
        assert message["predictions"] == [[message["id"]]]
    # Every repeat is marked: a later output of an id already seen says the service took it more than once.
    service = consumer.config["service"]
    first_seen: set[int] = set()
    for message in probe.messages[f"{prefix}/out"]:
        if message["id"] in first_seen:
            assert message["attempts"][service] >= 2, message
        first_seen.add(message["id"])


def test_sigterm_drains_and_exits_cleanly(
    runtimes: Runtimes,
    mosquitto: Broker,
    mqtt_probe: Callable[[list[str]], MqttProbe],
    code_dir: Path,
) -> None:
    prefix = unique_prefix()
    config = stream_config(
        [function_stage("slow", "mlfuncs.ops:slow")], mosquitto.port, prefix, "s", f"{prefix}/out"
    )
    config["code_dir"] = str(code_dir)
    env = {"SLOW_STAGE_SECONDS": "0.02"}
    consumer = runtimes.start(config, env=env)
    status, body = get(consumer.base_url + "/health/ready")
    assert status == 200
    probe = mqtt_probe([f"{prefix}/out"])
    for message_id in range(40):
        probe.publish(f"{prefix}/s/in", {"id": message_id, "instances": [[message_id]]})
    probe.wait_for(f"{prefix}/out", 3)
    consumer.send_signal(signal.SIGTERM)
    assert consumer.proc.wait(20) == 0
    assert "draining and stopping" in consumer.log()
    # Whatever was not handled before the stop is delivered to the next run of the same session.
    runtimes.prepare(consumer.config, env=env).start().wait_ready()
    probe.wait_for(f"{prefix}/out", 40)
    assert {message["id"] for message in probe.messages[f"{prefix}/out"]} == set(range(40))


def test_consumer_waits_for_broker_and_reports_not_ready(runtimes: Runtimes, iris_models: IrisModels) -> None:
    from runtime_helpers import free_port

    port = free_port()  # nothing listens here yet
    prefix = unique_prefix()
    config = stream_config(
        [iris_models.stage("scale", "scaler", "transform")], port, prefix, "s", f"{prefix}/out"
    )
    consumer = runtimes.start(config, wait=False)
    import time

    deadline = time.monotonic() + 20
    while True:
        try:
            status, body = get(consumer.base_url + "/health/ready")
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert status == 503
    payload = json.loads(body)
    assert payload["status"] in ("loading", "connecting")
    assert consumer.proc.poll() is None  # still running, retrying with backoff
    broker = Broker(consumer.config_path.parent / "late-broker", port)
    broker.directory.mkdir()
    broker.start()
    try:
        consumer.wait_ready(timeout=40)
    finally:
        broker.stop()


def test_broker_credentials_from_config(runtimes: Runtimes, iris_models: IrisModels, tmp_path: Path) -> None:
    import subprocess

    from runtime_helpers import free_port

    password_file = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(password_file), "edge", "s3cret"], check=True)
    password_file.chmod(0o600)
    broker = Broker(tmp_path / "auth-broker", free_port(), password_file=password_file)
    broker.directory.mkdir()
    broker.start()
    try:
        prefix = unique_prefix()
        stages = [iris_models.stage("scale", "scaler", "transform")]
        wrong = stream_config(stages, broker.port, prefix, "wrong", f"{prefix}/out")
        wrong["stream"]["broker"].update(username="edge", password="nope")
        right = stream_config(stages, broker.port, prefix, "right", f"{prefix}/out")
        right["stream"]["broker"].update(username="edge", password="s3cret")
        refused = runtimes.start(wrong, wait=False)
        accepted = runtimes.start(right)
        assert get(accepted.base_url + "/health/ready")[0] == 200
        # The refused one may still be loading its stages on a busy machine: wait for its connect attempt.
        deadline = time.monotonic() + 30
        while "broker refused the connection" not in refused.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        status, body = get(refused.base_url + "/health/ready")
        assert status == 503
        assert json.loads(body)["status"] == "connecting"
        assert "broker refused the connection: Not authorized" in refused.log()
    finally:
        broker.stop()


# ------------------------------------------------------------------ security


def test_health_server_over_https_with_auth(
    runtimes: Runtimes, mosquitto: Broker, iris_models: IrisModels, pki: Pki, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    config = stream_config(
        [iris_models.stage("scale", "scaler", "transform")], mosquitto.port, prefix, "s", f"{prefix}/out"
    )
    tokens = write_tokens(tmp_path / "token", "tok-current", "tok-previous")
    config["security"] = {"tls": pki.server_tls(), "auth": {"token_file": str(tokens)}}
    client = pki.https_client()
    consumer = runtimes.start(config, http=client)
    assert consumer.base_url.startswith("https://127.0.0.1:")
    assert get(consumer.base_url + "/health/live", http=client) == (200, b'{"status":"alive"}')
    assert get(consumer.base_url + "/health/ready", http=client)[0] == 200
    for path in ("/metrics", "/info", "/elsewhere"):
        response = client.request("GET", consumer.base_url + path)
        assert (response.status, response.headers["WWW-Authenticate"]) == (401, 'Bearer realm="mlpacker"')
        assert response.json() == {"error": "authentication required: send 'Authorization: Bearer <token>'"}
        response = client.request("GET", consumer.base_url + path, headers=bearer("tok-wrong"))
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="mlpacker", error="invalid_token"'
    assert get(consumer.base_url + "/metrics", http=client, headers=bearer("tok-previous"))[0] == 200
    status, raw = get(consumer.base_url + "/info", http=client, headers=bearer("tok-current"))
    assert status == 200
    info = json.loads(raw)
    assert info["stages"][0]["artifact"] == "scaler.joblib"
    assert info["security"] == {"tls": True, "client_certificates": False, "auth": True}
    for secret in ("tok-current", str(tmp_path), str(pki.directory), str(iris_models.directory)):
        assert secret not in raw.decode()
    with pytest.raises(urllib3.exceptions.HTTPError):
        HTTP.request("GET", consumer.base_url.replace("https://", "http://") + "/health/live")
    assert consumer.proc.poll() is None  # a failed handshake costs the server nothing
    assert get(consumer.base_url + "/health/live", http=client)[0] == 200


def test_broker_password_from_file_and_anonymous_refused(
    runtimes: Runtimes, mosquitto: Broker, iris_models: IrisModels, tmp_path: Path
) -> None:
    import subprocess

    from runtime_helpers import free_port

    broker_users = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(broker_users), "edge", "p4ss w0rd!"], check=True)
    broker = Broker(tmp_path / "auth-broker", free_port(), password_file=broker_users)
    broker.directory.mkdir()
    broker.start()
    try:
        prefix = unique_prefix()
        stages = [iris_models.stage("scale", "scaler", "transform")]
        password_file = tmp_path / "edge.password"
        password_file.write_text("p4ss w0rd!\n")  # the line end is not part of the password
        password_file.chmod(0o600)
        with_file = stream_config(stages, broker.port, prefix, "file", f"{prefix}/out")
        with_file["stream"]["broker"].update(username="edge", password_file=str(password_file))
        anonymous = stream_config(stages, broker.port, prefix, "anon", f"{prefix}/out")
        refused = runtimes.start(anonymous, wait=False)
        accepted = runtimes.start(with_file)
        assert "p4ss" not in accepted.config_path.read_text()  # config.json holds no secret
        probe = MqttProbe(broker.port, [f"{prefix}/out"], username="edge", password="p4ss w0rd!")
        try:
            probe.publish(f"{prefix}/file/in", {"id": 1, "instances": [[5.1, 3.5, 1.4, 0.2]]})
            assert probe.wait_for(f"{prefix}/out", 1)[0]["id"] == 1
        finally:
            probe.close()
        assert "p4ss" not in get(accepted.base_url + "/info")[1].decode()
        # The refused one may still be loading its stages on a busy machine: wait for its connect attempt.
        assert refused.log_shows("broker refused the connection: Not authorized", timeout=30)
        assert get(refused.base_url + "/health/ready")[0] == 503
    finally:
        broker.stop()


def test_broker_certificate_is_verified_against_ca_file(
    runtimes: Runtimes, mosquitto: Broker, iris_models: IrisModels, pki: Pki, tmp_path: Path
) -> None:
    from runtime_helpers import free_port

    broker = Broker(tmp_path / "tls-broker", free_port(), tls=pki.server)
    broker.directory.mkdir()
    broker.start()
    try:
        prefix = unique_prefix()
        stages = [iris_models.stage("scale", "scaler", "transform")]
        configs = {}
        for name, ca in (("trusting", pki.ca), ("distrusting", pki.other_ca)):
            configs[name] = stream_config(stages, broker.port, prefix, name, f"{prefix}/out")
            configs[name]["stream"]["broker"]["tls"] = {"enabled": True, "ca_file": str(ca.cert)}
        distrusting = runtimes.start(configs["distrusting"], wait=False)
        runtimes.start(configs["trusting"])  # ready: connected over TLS and subscribed
        expected = f"cannot connect to broker 127.0.0.1:{broker.port}: [SSL: CERTIFICATE_VERIFY_FAILED]"
        assert distrusting.log_shows(expected, timeout=30)
        status, body = get(distrusting.base_url + "/health/ready")
        assert (status, json.loads(body)["status"]) == (503, "connecting")
    finally:
        broker.stop()


def test_health_server_listens_on_each_bind_address(
    runtimes: Runtimes, mosquitto: Broker, iris_models: IrisModels
) -> None:
    from runtime_helpers import free_port

    prefix = unique_prefix()
    port = free_port()
    config = stream_config(
        [iris_models.stage("scale", "scaler", "transform")],
        mosquitto.port,
        prefix,
        "s",
        f"{prefix}/out",
        health_bind=["127.0.0.1", "::1"],
        health_port=port,
    )
    runtimes.start(config)
    for host in ("127.0.0.1", "[::1]"):
        assert get(f"http://{host}:{port}/health/ready")[0] == 200
    with pytest.raises(urllib3.exceptions.HTTPError):
        get(f"http://127.0.0.2:{port}/health/live")


def test_oversized_and_bad_messages_reach_the_error_topic_truncated(
    runtimes: Runtimes,
    mosquitto: Broker,
    mqtt_probe: Callable[[list[str]], MqttProbe],
    iris_models: IrisModels,
) -> None:
    """A message over stream.max_message_bytes is not parsed: its error report names the size and the limit
    and carries only the first KiB; every other bad message is truncated the same way, never copied whole."""
    prefix = unique_prefix()
    config = stream_config(iris_models.three_stages(), mosquitto.port, prefix, "iris", f"{prefix}/out")
    config["stream"]["max_message_bytes"] = 64 * 1024
    runtimes.start(config)
    probe = mqtt_probe([f"{prefix}/out", f"{prefix}/errors"])
    topic = f"{prefix}/iris/in"
    good = [5.1, 3.5, 1.4, 0.2]
    huge = json.dumps({"id": "huge", "instances": [good] * 5000}).encode()  # ~110 KB, valid JSON
    bad = b'{"id": "bad", "instances": [' + b"[1, 2, 3, 4], " * 3000  # under the limit, unterminated
    at_limit = json.dumps({"id": "fits", "instances": [good] * 2900}).encode()
    assert len(huge) > 64 * 1024 > len(at_limit) > 60 * 1024
    probe.publish(topic, None, raw=huge)
    probe.publish(topic, None, raw=bad)
    probe.publish(topic, None, raw=at_limit)
    probe.publish(topic, {"id": "after", "instances": [good]})
    outputs = probe.wait_for(f"{prefix}/out", 2)
    assert [message["id"] for message in outputs] == ["fits", "after"]
    assert len(outputs[0]["predictions"]) == 2900
    errors = probe.wait_for(f"{prefix}/errors", 2)
    assert errors[0]["id"] is None  # not parsed, so not known
    assert errors[0]["error"] == (
        f"message of {len(huge)} bytes exceeds stream.max_message_bytes (65536 bytes): not parsed"
    )
    assert errors[0]["payload"] == huge[:1024].decode()
    assert (errors[0]["payload_bytes"], errors[0]["payload_truncated"]) == (len(huge), True)
    assert errors[1]["error"].startswith("malformed JSON")
    assert errors[1]["payload"] == bad[:1024].decode()
    assert (errors[1]["payload_bytes"], errors[1]["payload_truncated"]) == (len(bad), True)
    status, metrics = get(runtimes.started[0].base_url + "/metrics")
    assert 'mlpacker_errors_total{kind="message_too_large"} 1.0' in metrics.decode()


def test_a_result_the_broker_refuses_goes_to_the_error_topic_once_and_never_loops(
    runtimes: Runtimes, iris_models: IrisModels, tmp_path: Path
) -> None:
    """The broker's ACL refuses the consumer's output topic (Mosquitto answers PUBACK 'Not authorized'): each
    refused result reaches the error topic once, with the broker's reason, and its input is acknowledged (no
    redelivery); after stream.max_consecutive_refusals refusals in a row the consumer is not ready. With the
    error topic refused too, each message is logged and counted once. Allowed again (ACL reloaded), results
    flow and the consumer is ready."""
    import subprocess

    from runtime_helpers import free_port

    prefix = unique_prefix()
    out, errors, inputs = f"{prefix}/out", f"{prefix}/errors", f"{prefix}/scale/in"
    users = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(users), "edge", "edge-pw"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(users), "probe", "probe-pw"], check=True)
    acl = tmp_path / "acl"

    def allow(*writable: str) -> None:
        acl.write_text(
            "user probe\ntopic readwrite #\n"
            f"user edge\ntopic read {inputs}\n" + "".join(f"topic write {topic}\n" for topic in writable)
        )

    allow(errors)  # the output topic is refused
    broker = Broker(tmp_path / "acl-broker", free_port(), password_file=users, acl_file=acl)
    broker.directory.mkdir()
    broker.start()
    probe = None
    try:
        config = stream_config(
            [iris_models.stage("scale", "scaler", "transform")],
            broker.port,
            prefix,
            "scale",
            out,
            max_consecutive_refusals=3,
        )
        config["stream"]["broker"].update(username="edge", password="edge-pw")
        consumer = runtimes.start(config)
        probe = MqttProbe(broker.port, [out, errors], username="probe", password="probe-pw")
        row = [5.1, 3.5, 1.4, 0.2]
        for number in range(1, 5):
            probe.publish(inputs, {"id": number, "instances": [row]})
        reports = probe.wait_for(errors, 4)
        assert [report["id"] for report in reports] == [1, 2, 3, 4]
        assert all(
            report["error"] == f"the broker refused the result on {out}: Not authorized" for report in reports
        ), reports
        assert json.loads(reports[0]["payload"]) == {"id": 1, "instances": [row]}
        status, body = get(consumer.base_url + "/health/ready")
        assert status == 503, body
        readiness = json.loads(body)
        assert readiness["status"] == "refused"
        expected = f"the broker refused the last 4 publishes (latest: Not authorized on {out})"
        assert expected in readiness["error"], readiness
        time.sleep(3)  # acknowledged, not redelivered: nothing more arrives
        assert len(probe.messages[errors]) == 4 and probe.messages[out] == []

        allow()  # the error topic is refused too: logged and counted, once per message
        broker.reload()
        time.sleep(1)
        probe.publish(inputs, {"id": 5, "instances": [row]})
        assert consumer.log_shows("the broker refused the error report of message 5")
        time.sleep(3)
        assert consumer.log().count("the broker refused the error report of message 5") == 1
        metrics = get(consumer.base_url + "/metrics")[1].decode()
        assert 'mlpacker_errors_total{kind="result_refused"} 5.0' in metrics
        assert 'mlpacker_errors_total{kind="report_refused"} 1.0' in metrics

        allow(out, errors)  # allowed again: results flow, the consumer is ready again
        broker.reload()
        time.sleep(1)
        probe.publish(inputs, {"id": 6, "instances": [row]})
        assert [message["id"] for message in probe.wait_for(out, 1)] == [6]
        # Mosquitto forwards the result to subscribers before its PUBACK reaches the consumer, and that PUBACK
        # is what makes the consumer ready again: wait for it, briefly.
        consumer.wait_ready(timeout=5)
        assert len(probe.messages[errors]) == 4
    finally:
        if probe is not None:
            probe.close()
        broker.stop()


# ------------------------------------------------------------------ duplicates and order


def metrics_of(consumer: RuntimeProcess) -> str:
    status, body = get(consumer.base_url + "/metrics")
    assert status == 200
    return body.decode()


@pytest.mark.slow
def test_a_message_redelivered_after_kill_9_says_so_down_the_chain(
    runtimes: Runtimes,
    mosquitto: Broker,
    mqtt_probe: Callable[[list[str]], MqttProbe],
    code_dir: Path,
    tmp_path: Path,
) -> None:
    """The first consumer of two is killed (-9) while its stage runs on a message: not acknowledged, so the
    broker redelivers it (MQTT DUP) to the restarted consumer. Its output, forwarded by the second consumer,
    says the first service took it twice; the next message, once."""
    prefix = unique_prefix()
    first = stream_config(
        [function_stage("slow", "mlfuncs.ops:announced_slow")], mosquitto.port, prefix, "s", f"{prefix}/d/in"
    )
    first["code_dir"] = str(code_dir)
    first["stream"]["output_kind"] = "instances"
    second = stream_config(
        [function_stage("double", "mlfuncs.ops:double")], mosquitto.port, prefix, "d", f"{prefix}/out"
    )
    second["code_dir"] = str(code_dir)
    started = tmp_path / "started"
    consumer = runtimes.start(first, env={"STAGE_STARTED_FILE": str(started), "SLOW_STAGE_SECONDS": "60"})
    runtimes.start(second)
    probe = mqtt_probe([f"{prefix}/out", f"{prefix}/errors"])
    probe.publish(f"{prefix}/s/in", {"id": "a", "instances": [[1]]})
    deadline = time.monotonic() + 30
    while not (started.exists() and started.read_text() == "1\n"):
        assert time.monotonic() < deadline, "the stage never started on message a"
        time.sleep(0.02)
    consumer.send_signal(signal.SIGKILL)  # taken, its stage running, not acknowledged
    consumer.proc.wait(10)
    assert probe.messages[f"{prefix}/out"] == []
    restarted = runtimes.prepare(consumer.config, env={"STAGE_STARTED_FILE": str(started)})
    restarted.env["SLOW_STAGE_SECONDS"] = "0"
    restarted.start().wait_ready()
    probe.publish(f"{prefix}/s/in", {"id": "b", "instances": [[2]]})
    outputs = probe.wait_for(f"{prefix}/out", 2)
    services = (first["service"], second["service"])
    assert outputs == [
        {"id": "a", "predictions": [[2.0]], "attempts": {services[0]: 2, services[1]: 1}},
        {"id": "b", "predictions": [[4.0]], "attempts": {services[0]: 1, services[1]: 1}},
    ]
    assert started.read_text() == "1\n1\n2\n"  # a's stage ran twice (once killed), b's once
    assert "mlpacker_repeated_messages_total 1.0" in metrics_of(restarted)
    assert restarted.log_shows("message 'a' taken again (attempt 2 here)")
    assert probe.messages[f"{prefix}/errors"] == []


def test_dedup_window_drops_a_repeated_id_acknowledged_and_counted(
    runtimes: Runtimes,
    mosquitto: Broker,
    mqtt_probe: Callable[[list[str]], MqttProbe],
    code_dir: Path,
) -> None:
    """stream.dedup_window 2: a repeat of one of the last 2 ids answered is dropped (counted, logged,
    acknowledged: a restart does not bring it back); an older id, a message without an id and a message
    that failed are processed again."""
    prefix = unique_prefix()
    config = stream_config(
        [function_stage("double", "mlfuncs.ops:double")],
        mosquitto.port,
        prefix,
        "d",
        f"{prefix}/out",
        dedup_window=2,
    )
    config["code_dir"] = str(code_dir)
    consumer = runtimes.start(config)
    service = config["service"]
    probe = mqtt_probe([f"{prefix}/out", f"{prefix}/errors"])
    topic = f"{prefix}/d/in"
    # The window after each: [1], 1 dropped, [1, 2], [2, 3], 2 dropped, [3, 1] (1 had left it), None and None
    # processed and not remembered, 3 dropped.
    sent = [1, 1, 2, 3, 2, 1, None, None, 3]
    for number in sent:
        message = (
            {"instances": [[number or 0]]} if number is None else {"id": number, "instances": [[number]]}
        )
        probe.publish(topic, message)
    probe.publish(topic, {"id": "bad", "instances": "not rows"})
    probe.publish(topic, {"id": "bad", "instances": "not rows"})
    probe.publish(topic, {"id": "last", "instances": [[9]]})
    # wait_for returns every output so far: "last" may have come already, so look at the first 6.
    outputs = probe.wait_for(f"{prefix}/out", 6)[:6]
    assert [(message["id"], message["attempts"][service]) for message in outputs] == [
        (1, 1),
        (2, 1),
        (3, 1),
        (1, 2),  # out of the window (2 and 3 came after it) so processed, and counted as taken twice
        (None, 1),
        (None, 1),
    ]
    outputs = probe.wait_for(f"{prefix}/out", 7)  # the last 3 dropped, then "last"
    assert outputs[6]["id"] == "last" and len(outputs) == 7
    reports = probe.wait_for(f"{prefix}/errors", 2)
    assert [(report["id"], report["attempts"]) for report in reports] == [
        ("bad", {service: 1}),
        ("bad", {service: 2}),
    ]
    metrics = metrics_of(consumer)
    assert "mlpacker_duplicates_total 3.0" in metrics
    assert consumer.log().count("(stream.dedup_window)") == 3
    assert "message 2 dropped: a result with this id was published within the last 2" in consumer.log()
    # Acknowledged: the restarted consumer (same session) is not given the dropped repeats again.
    consumer.send_signal(signal.SIGTERM)
    assert consumer.proc.wait(20) == 0
    restarted = runtimes.prepare(consumer.config).start()
    restarted.wait_ready()
    probe.publish(topic, {"id": "after restart", "instances": [[0]]})
    outputs = probe.wait_for(f"{prefix}/out", 8)
    time.sleep(1)
    assert [message["id"] for message in probe.messages[f"{prefix}/out"][7:]] == ["after restart"]
    assert "mlpacker_duplicates_total 0.0" in metrics_of(restarted)


@pytest.mark.slow
def test_numbered_messages_keep_their_order_through_a_chain_of_single_consumers(
    runtimes: Runtimes,
    mosquitto: Broker,
    mqtt_probe: Callable[[list[str]], MqttProbe],
    code_dir: Path,
) -> None:
    """One consumer per stage (no replicas): 500 numbered messages published back to back come out of the
    second stage in the order they went in, none twice."""
    prefix = unique_prefix()
    first = stream_config(
        [function_stage("double", "mlfuncs.ops:double")], mosquitto.port, prefix, "a", f"{prefix}/b/in"
    )
    first["stream"]["output_kind"] = "instances"
    second = stream_config(
        [function_stage("double", "mlfuncs.ops:double")], mosquitto.port, prefix, "b", f"{prefix}/out"
    )
    for config in (first, second):
        config["code_dir"] = str(code_dir)
    runtimes.start_many([first, second])
    probe = mqtt_probe([f"{prefix}/out"])
    count = 500
    pending = [
        probe.client.publish(f"{prefix}/a/in", json.dumps({"id": n, "instances": [[n]]}), qos=1)
        for n in range(count)
    ]
    for info in pending:
        info.wait_for_publish(30)
    outputs = probe.wait_for(f"{prefix}/out", count, timeout=60)
    assert [message["id"] for message in outputs] == list(range(count))
    assert all(message["predictions"] == [[4.0 * message["id"]]] for message in outputs)


@pytest.mark.slow
def test_dedup_window_loses_nothing_when_the_broker_restarts_mid_stream(
    runtimes: Runtimes, code_dir: Path, tmp_path: Path
) -> None:
    """With stream.dedup_window on, the broker is restarted (its sessions saved) while results are in flight:
    every id reaches the output. The ids whose results the broker had not acknowledged are forgotten, so
    their redelivered inputs are processed again rather than dropped (paho also resends those results:
    repeats are expected, losses are not; measured 301 ids -> 312 to 325 outputs)."""
    from runtime_helpers import free_port

    broker = Broker(tmp_path / "restarted-broker", free_port())
    broker.directory.mkdir()
    broker.start()
    probe = None
    try:
        prefix = unique_prefix()
        config = stream_config(
            [function_stage("slow", "mlfuncs.ops:slow")],
            broker.port,
            prefix,
            "s",
            f"{prefix}/out",
            dedup_window=1000,
        )
        config["code_dir"] = str(code_dir)
        consumer = runtimes.start(config, env={"SLOW_STAGE_SECONDS": "0.01"})
        # A session the broker keeps: what the consumer publishes while the probe reconnects is queued for it.
        probe = MqttProbe(broker.port, [f"{prefix}/out"], persistent=True)
        count = 300
        pending = [
            probe.client.publish(f"{prefix}/s/in", json.dumps({"id": number, "instances": [[number]]}), qos=1)
            for number in range(count)
        ]
        for info in pending:
            info.wait_for_publish(30)  # all inputs held by the broker before it stops
        probe.wait_for(f"{prefix}/out", 20)
        broker.stop()  # mid-stream: results in flight, inputs unacknowledged; sessions saved
        assert consumer.log_shows("disconnected from broker")
        broker.start()
        consumer.wait_ready(timeout=40)  # reconnected (paho's backoff) and subscribed again
        probe.publish(f"{prefix}/s/in", {"id": "last", "instances": [[0]]})
        deadline = time.monotonic() + 60
        while "last" not in {message["id"] for message in probe.messages[f"{prefix}/out"]}:
            assert time.monotonic() < deadline, f"no 'last' after the restart: {consumer.log()[-2000:]}"
            time.sleep(0.1)
        ids = [message["id"] for message in probe.messages[f"{prefix}/out"]]
        assert set(ids) == {*range(count), "last"}, sorted(set(range(count)) - set(ids))
    finally:
        if probe is not None:
            probe.close()
        broker.stop()
