# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The runtime configuration both deploy roles write: what it holds, and that the runtime accepts it."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils.runtime_config import (
    RuntimeConfigError,
    runtime_config,
)
from ansible_collections.mlpacker.core.plugins.module_utils.runtime_contract import DEFAULT_TLS
from ansible_collections.mlpacker.core.plugins.module_utils.service_secrets import SECRET_NAMES

runtime = pytest.importorskip("mlpacker_runtime.config")

REPO = Path(__file__).resolve().parents[8]
RELEASE = "/opt/mlpacker/iris/iris-scale/releases/0123456789ab"
SHA = "9f2c4a1e5b7d3c6f8a0e2b4d6c8a1f3e5d7b9c2a4e6f8b0d2c4a6e8f1b3d5c7a"
SCALE_SIGNATURE = {"source": "artifact", "columns": [{"name": None, "type": "number"}] * 4}
SCALE = {
    "name": "scale",
    "index": 0,
    "artifact": "/ctrl/models/scaler.joblib",
    "function": None,
    "format": "joblib",
    "method": "transform",
    "trusted_types": [],
    "sha256": SHA,
    "versions": {"scikit-learn": "1.5.2", "numpy": "2.1.3"},
    "input_signature": SCALE_SIGNATURE,
}
DOUBLE = {
    "name": "double",
    "artifact": None,
    "function": "features.scaling:double",
    "format": "function",
    "method": "call",
    "trusted_types": [],
    "sha256": None,
    "versions": {"numpy": "2.1.3"},
}
REST_SERVICE = {
    "id": "iris-scale",
    "host": "edge1",
    "address": "10.0.0.2",
    "stages": ["scale"],
    "port": 8000,
    "url": "http://10.0.0.2:8000/predict",
    "next_hops": ["http://10.0.0.3:8000/predict"],
    "input_topic": None,
    "output_topic": None,
    "output_kind": None,
    "error_topic": None,
    "share_group": "mlpacker-iris-scale",
    "client_id": "mlpacker-iris-scale-edge1",
    "containers": False,
}
STREAM_SERVICE = {
    **REST_SERVICE,
    "url": None,
    "next_hops": [],
    "input_topic": "mlpacker/iris/in",
    "output_topic": "mlpacker/iris/stage/reduce/in",
    "output_kind": "instances",
    "error_topic": "mlpacker/iris/errors",
}
MANAGED_BROKER = {
    "host": "10.0.0.9",
    "port": 1883,
    "username": None,
    "password": None,
    "tls": dict(DEFAULT_TLS),
    "managed": True,
    "inventory_host": "broker1",
}


def build(service: dict[str, Any], stages: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    options.setdefault("pipeline", "iris")
    options.setdefault("mode", "rest")
    options.setdefault("release_dir", RELEASE)
    return runtime_config(service, stages, **options)


def runtime_accepts(config: dict[str, Any]) -> dict[str, Any]:
    """The runtime's own validation (what 'mlpacker-runtime check' runs before loading the stages)."""
    return runtime.build_config(json.loads(json.dumps(config)), environ={})


def test_rest_service() -> None:
    config = build(REST_SERVICE, [SCALE])
    assert config == {
        "pipeline": "iris",
        "service": "iris-scale",
        "mode": "rest",
        "code_dir": None,
        "allow_version_mismatch": False,
        "stages": [
            {
                "name": "scale",
                "artifact": RELEASE + "/artifacts/scale.joblib",
                "format": "joblib",
                "function": None,
                "method": "transform",
                "sha256": SHA,
                "versions": {"scikit-learn": "1.5.2", "numpy": "2.1.3"},
                "trusted_types": [],
                "input_signature": SCALE_SIGNATURE,
            }
        ],
        "rest": {
            "bind": "0.0.0.0",
            "port": 8000,
            "workers": 2,
            "next_hops": ["http://10.0.0.3:8000/predict"],
        },
    }
    runtime_accepts(config)


def test_stream_service() -> None:
    config = build(STREAM_SERVICE, [SCALE], mode="stream", broker=MANAGED_BROKER)
    assert "rest" not in config
    assert config["stream"] == {
        "broker": {"host": "10.0.0.9", "port": 1883, "username": None, "password": None, "tls": DEFAULT_TLS},
        "input_topic": "mlpacker/iris/in",
        "output_topic": "mlpacker/iris/stage/reduce/in",
        "output_kind": "instances",
        "error_topic": "mlpacker/iris/errors",
        "client_id": "mlpacker-iris-scale-edge1",
        "share_group": "mlpacker-iris-scale",
        "health_bind": "0.0.0.0",
        "health_port": 8000,
    }
    runtime_accepts(config)


@pytest.mark.parametrize(
    ("code_dir", "expected"),
    [(None, None), ("/ctrl/code", RELEASE + "/code"), ("", RELEASE + "/code")],
    ids=["no-code", "code", "empty-path-is-still-given"],
)
def test_code_dir_is_the_release_copy(code_dir: str | None, expected: str | None) -> None:
    assert build(REST_SERVICE, [SCALE], code_dir=code_dir)["code_dir"] == expected


@pytest.mark.parametrize(
    ("artifact", "expected"),
    [
        ("/ctrl/models/scaler.joblib", RELEASE + "/artifacts/scale.joblib"),
        ("/ctrl/models/PCA.PKL", RELEASE + "/artifacts/scale.PKL"),
        ("/ctrl/models/model.tar.skops", RELEASE + "/artifacts/scale.skops"),
        ("/ctrl/models/no-extension", RELEASE + "/artifacts/scale"),
        ("", None),
        (None, None),
    ],
)
def test_artifact_is_named_after_the_stage(artifact: str | None, expected: str | None) -> None:
    stage = dict(SCALE, artifact=artifact)
    assert build(REST_SERVICE, [stage])["stages"][0]["artifact"] == expected


def test_stage_fields_left_out_take_their_defaults() -> None:
    # The stage role's own tests pass stages with only these keys.
    stage = {"name": "only", "artifact": "/ctrl/m.joblib", "format": "joblib", "method": "predict"}
    assert build(REST_SERVICE, [stage])["stages"] == [
        {
            "name": "only",
            "artifact": RELEASE + "/artifacts/only.joblib",
            "format": "joblib",
            "function": None,
            "method": "predict",
            "sha256": None,
            "versions": {},
            "trusted_types": [],
            "input_signature": None,
        }
    ]


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        (None, DEFAULT_TLS),
        ({}, DEFAULT_TLS),
        ({"enabled": True, "ca_file": None}, dict(DEFAULT_TLS, enabled=True)),
        (
            {
                "enabled": True,
                "ca_file": "/etc/ca.pem",
                "cert_file": None,
                "key_file": None,
                "insecure": None,
            },
            dict(DEFAULT_TLS, enabled=True, ca_file="/etc/ca.pem"),
        ),
        ({"insecure": True}, dict(DEFAULT_TLS, insecure=True)),
    ],
    ids=["absent", "empty", "null-kept-default", "partial", "insecure"],
)
def test_tls_over_its_defaults(tls: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    broker = {"host": "mqtt.example.org", "port": 8883, "username": "svc", "password": "secret", "tls": tls}
    config = build(STREAM_SERVICE, [SCALE], mode="stream", broker=broker)
    assert config["stream"]["broker"] == {
        "host": "mqtt.example.org",
        "port": 8883,
        "username": "svc",
        "password": "secret",
        "tls": expected,
    }
    runtime_accepts(config)


@pytest.mark.parametrize(
    ("broker", "expected"),
    [
        ({"host": "h"}, {"host": "h", "port": 1883, "username": None, "password": None, "tls": DEFAULT_TLS}),
        (
            {"host": "h", "port": "8883"},
            {"host": "h", "port": 8883, "username": None, "password": None, "tls": DEFAULT_TLS},
        ),
        ({}, {"host": "", "port": 1883, "username": None, "password": None, "tls": DEFAULT_TLS}),
        (None, {"host": "", "port": 1883, "username": None, "password": None, "tls": DEFAULT_TLS}),
    ],
    ids=["default-port", "port-as-text", "empty", "none"],
)
def test_broker_defaults(broker: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    assert build(STREAM_SERVICE, [SCALE], mode="stream", broker=broker)["stream"]["broker"] == expected


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ({"output_kind": "instances"}, "instances"),
        ({"output_kind": "predictions"}, "predictions"),
        ({"output_kind": None}, "predictions"),
        ({"output_kind": ""}, "predictions"),
        ({}, "predictions"),
    ],
)
def test_output_kind_defaults_to_predictions(service: dict[str, Any], expected: str) -> None:
    service = {"id": "mini", "port": 9000, **service}
    assert build(service, [SCALE], mode="stream", broker=MANAGED_BROKER)["stream"]["output_kind"] == expected


def test_stream_service_without_topics() -> None:
    # What a caller leaves out is written as the Jinja did before: topics '', the rest null.
    stream = build({"id": "mini", "port": 9000}, [SCALE], mode="stream", broker=MANAGED_BROKER)["stream"]
    assert (stream["input_topic"], stream["output_topic"]) == ("", "")
    assert (stream["error_topic"], stream["client_id"], stream["share_group"]) == (None, None, None)


@pytest.mark.parametrize(
    ("port", "workers", "expected"),
    [(8000, 2, (8000, 2)), ("8001", "4", (8001, 4)), (65535, 1, (65535, 1))],
)
def test_ports_and_workers_are_integers(port: Any, workers: Any, expected: tuple[int, int]) -> None:
    rest = build(dict(REST_SERVICE, port=port), [SCALE], rest_workers=workers)["rest"]
    assert (rest["port"], rest["workers"]) == expected
    stream = build(dict(STREAM_SERVICE, port=port), [SCALE], mode="stream", broker=MANAGED_BROKER)["stream"]
    assert stream["health_port"] == expected[0]


def test_rest_service_without_next_hops() -> None:
    assert build({"id": "mini", "port": 9000}, [SCALE])["rest"]["next_hops"] == []


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (True, True),
        (False, False),
        ("yes", True),
        ("no", False),
        ("true", True),
        ("False", False),
        (1, True),
        (0, False),
    ],
)
def test_allow_version_mismatch_is_a_bool(given: Any, expected: bool) -> None:
    assert build(REST_SERVICE, [SCALE], allow_version_mismatch=given)["allow_version_mismatch"] is expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "grpc"}, "mode: 'grpc' is not one of rest, stream"),
        ({"stages": [{"name": "scale", "method": "predict"}]}, "stages[0].format: required"),
        ({"stages": [SCALE, {"name": "b", "format": "joblib"}]}, "stages[1].method: required"),
        ({"stages": "scale"}, "stages: expected a list of stage dicts"),
        ({"service": {"id": "s", "port": "eighty"}}, "service.port: expected an integer, got 'eighty'"),
        ({"service": {"port": 8000}}, "service: expected a plan service with an 'id'"),
        ({"rest_workers": None}, "rest_workers: expected an integer, got None"),
        ({"rest_workers": True}, "rest_workers: expected an integer, got True"),
        ({"allow_version_mismatch": "maybe"}, "allow_version_mismatch: expected true or false, got 'maybe'"),
        (
            {"mode": "stream", "broker": {"host": "h", "port": "mqtt"}},
            "broker.port: expected an integer, got 'mqtt'",
        ),
        ({"mode": "stream", "broker": ["h"]}, "broker: expected a dict, got ['h']"),
    ],
)
def test_errors_name_the_field_and_value(options: dict[str, Any], message: str) -> None:
    service = options.pop("service", REST_SERVICE)
    stages = options.pop("stages", [SCALE])
    with pytest.raises(RuntimeConfigError) as raised:
        build(service, stages, **options)
    assert message in str(raised.value)


def test_the_config_shares_nothing_with_its_inputs() -> None:
    service, stages, broker = (
        copy.deepcopy(STREAM_SERVICE),
        [copy.deepcopy(SCALE)],
        copy.deepcopy(MANAGED_BROKER),
    )
    config = build(service, stages, mode="stream", broker=broker)
    config["stages"][0]["versions"]["numpy"] = "0"
    config["stream"]["broker"]["tls"]["enabled"] = True
    assert (service, stages, broker) == (STREAM_SERVICE, [SCALE], MANAGED_BROKER)


@pytest.mark.parametrize(
    ("service", "stages", "options"),
    [
        (REST_SERVICE, [SCALE], {}),
        (
            dict(REST_SERVICE, next_hops=[]),
            [DOUBLE, SCALE],
            {"code_dir": "/ctrl/code", "allow_version_mismatch": True},
        ),
        (STREAM_SERVICE, [SCALE], {"mode": "stream", "broker": MANAGED_BROKER}),
        (
            dict(STREAM_SERVICE, output_kind="predictions", output_topic="mlpacker/iris/out"),
            [DOUBLE],
            {"mode": "stream", "code_dir": "/ctrl/code", "broker": {"host": "b", "tls": {"enabled": True}}},
        ),
    ],
    ids=["rest", "rest-function", "stream", "stream-function-tls"],
)
def test_the_runtime_accepts_what_it_gets(
    service: dict[str, Any], stages: list[dict[str, Any]], options: dict[str, Any]
) -> None:
    config = build(service, stages, **options)
    validated = runtime_accepts(config)
    # Nothing the roles write is dropped or rewritten by the runtime's defaults (which may add fields).
    assert written_part(validated, config) == config


def written_part(validated: Any, written: Any) -> Any:
    """The part of the runtime's validated configuration at the keys the roles wrote, at every depth."""
    if isinstance(written, dict):
        return {key: written_part(validated[key], value) for key, value in written.items()}
    return validated


def docs_examples() -> list[dict[str, Any]]:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Runtime configuration", 1)[1].split("\n## ", 1)[0]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, flags=re.S)]


def test_the_architecture_docs_show_what_the_roles_write() -> None:
    if not (REPO / "docs" / "architecture.md").is_file():
        pytest.fail(f"docs/architecture.md is not at {REPO} (the collection moved?)")
    rest_example, stream_example = docs_examples()
    rest = build(REST_SERVICE, [SCALE])
    assert rest == rest_example
    stream = build(STREAM_SERVICE, [SCALE], mode="stream", broker=MANAGED_BROKER)
    assert {key: stream[key] for key in stream_example} == stream_example
    assert set(stream) == set(rest) - {"rest"} | {"stream"}
    runtime_accepts(rest_example)
    runtime_accepts({**{k: v for k, v in rest_example.items() if k != "rest"}, **stream_example})


SECRETS_DIR = RELEASE + "/secrets"


def entries(*kinds: str) -> list[dict[str, Any]]:
    """service_secrets entries as the roles pass them (only kind and name matter to the configuration)."""
    return [
        {"kind": kind, "name": SECRET_NAMES[kind], "sha256": "0" * 64, "src": f"/ctrl/{kind}"}
        for kind in kinds
    ]


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (
            ("ca", "cert", "key", "token"),
            {
                "tls": {
                    "cert_file": SECRETS_DIR + "/server.crt",
                    "key_file": SECRETS_DIR + "/server.key",
                    "ca_file": SECRETS_DIR + "/ca.crt",
                    "client_ca_file": None,
                },
                "auth": {"token_file": SECRETS_DIR + "/token"},
            },
        ),
        (
            ("ca", "cert", "key", "client_ca"),
            {
                "tls": {
                    "cert_file": SECRETS_DIR + "/server.crt",
                    "key_file": SECRETS_DIR + "/server.key",
                    "ca_file": SECRETS_DIR + "/ca.crt",
                    "client_ca_file": SECRETS_DIR + "/client_ca.crt",
                },
                "auth": {"token_file": None},
            },
        ),
        (
            ("token",),
            {
                "tls": {"cert_file": None, "key_file": None, "ca_file": None, "client_ca_file": None},
                "auth": {"token_file": SECRETS_DIR + "/token"},
            },
        ),
    ],  # fmt: skip
    ids=["tls-and-auth", "mutual-tls-without-auth", "auth-only"],
)
def test_security_section_points_at_the_shipped_files(
    kinds: tuple[str, ...], expected: dict[str, Any]
) -> None:
    config = build(REST_SERVICE, [SCALE], secrets=entries(*kinds), secrets_dir=SECRETS_DIR)
    assert config["security"] == expected
    assert SECRETS_DIR not in json.dumps(config["rest"])


def test_no_secrets_no_security_section() -> None:
    assert "security" not in build(REST_SERVICE, [SCALE], secrets=[], secrets_dir=SECRETS_DIR)
    assert "security" not in build(REST_SERVICE, [SCALE])


SCALE_MQTT_USER = {
    "mqtt": {
        "users": {
            "iris-scale": {"username": "mlp-iris-iris-scale", "share_group": "mlpacker-iris-scale-0f1e"}
        }
    }
}


def test_managed_broker_credentials_are_files_and_the_service_user() -> None:
    broker = dict(MANAGED_BROKER, port=8883, tls=dict(DEFAULT_TLS, enabled=True))
    config = build(
        STREAM_SERVICE, [SCALE], mode="stream", broker=broker, credentials=SCALE_MQTT_USER,
        secrets=entries("ca", "cert", "key", "token", "broker_ca", "mqtt_password"), secrets_dir=SECRETS_DIR,
    )  # fmt: skip
    assert config["stream"]["broker"] == {
        "host": "10.0.0.9",
        "port": 8883,
        "username": "mlp-iris-iris-scale",
        "password": None,
        "password_file": SECRETS_DIR + "/mqtt.password",
        "tls": dict(DEFAULT_TLS, enabled=True, ca_file=SECRETS_DIR + "/broker_ca.crt"),
    }
    # The secret group of the credential, not the plan's guessable mlpacker-<id>.
    assert config["stream"]["share_group"] == "mlpacker-iris-scale-0f1e"


def test_a_users_broker_password_is_never_written_into_the_configuration() -> None:
    broker = {"host": "mqtt.example.org", "port": 8883, "username": "edge", "password": "s3cret",
              "tls": {"enabled": True, "ca_file": "/ctrl/their-ca.pem"}, "managed": False}  # fmt: skip
    config = build(
        STREAM_SERVICE, [SCALE], mode="stream", broker=broker,
        secrets=entries("broker_ca", "mqtt_password"), secrets_dir=SECRETS_DIR,
    )  # fmt: skip
    assert "s3cret" not in json.dumps(config)
    assert config["stream"]["broker"]["username"] == "edge"
    assert config["stream"]["broker"]["password_file"] == SECRETS_DIR + "/mqtt.password"
    # The controller's path of the CA is replaced by the shipped copy.
    assert config["stream"]["broker"]["tls"]["ca_file"] == SECRETS_DIR + "/broker_ca.crt"


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        ("0.0.0.0", "0.0.0.0"),
        (["10.0.0.2"], "10.0.0.2"),
        (["10.0.0.2", "127.0.0.1"], ["10.0.0.2", "127.0.0.1"]),
    ],
)
def test_bind_is_an_address_or_a_list(bind: Any, expected: Any) -> None:
    assert build(REST_SERVICE, [SCALE], bind=bind)["rest"]["bind"] == expected
    stream = build(STREAM_SERVICE, [SCALE], mode="stream", broker=MANAGED_BROKER, bind=bind)
    assert stream["stream"]["health_bind"] == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bind": []}, "bind: expected an address or a list of addresses, got []"),
        ({"bind": ["10.0.0.2", ""]}, "bind: expected an address or a list of addresses"),
        ({"secrets": [{"kind": "password"}], "secrets_dir": SECRETS_DIR}, "secrets[0]: expected an entry"),
        ({"secrets": entries("token")}, "secrets_dir: required when secrets are given"),
    ],
)
def test_security_inputs_fail_naming_the_field(options: dict[str, Any], message: str) -> None:
    with pytest.raises(RuntimeConfigError, match=re.escape(message)):
        build(REST_SERVICE, [SCALE], **options)
