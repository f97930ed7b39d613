"""Config validation, env overrides and the `check` command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mlpacker_runtime.config import ConfigError, build_config, load_config
from runtime_helpers import RUNTIME_BIN, IrisModels, Pki, base_config, write_tokens


def problems_of(raw: dict, environ: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_config(raw, environ=environ or {})
    return caught.value.problems


def test_valid_config_fills_defaults(iris_models: IrisModels) -> None:
    stages = iris_models.three_stages()
    for stage in stages:
        del stage["method"]
    config = build_config(base_config(stages), environ={})
    assert [s["method"] for s in config["stages"]] == ["transform", "transform", "predict"]
    assert config["rest"]["max_body_bytes"] == 10 * 1024 * 1024
    assert config["stream"]["output_kind"] == "predictions"
    assert config["stages"][0]["format"] == "joblib"


def test_bad_method_names_field_and_choices(iris_models: IrisModels) -> None:
    stages = iris_models.three_stages()
    stages[1]["method"] = "predictt"
    problems = problems_of(base_config(stages))
    assert problems == [
        "stages[1].method: 'predictt' is not one of "
        "predict, predict_proba, transform, decision_function, call"
    ]


def test_several_problems_are_all_reported(iris_models: IrisModels) -> None:
    stages = iris_models.three_stages()
    stages[0]["sha256"] = "abc"
    stages[2]["frmat"] = "joblib"
    raw = base_config(stages, mode="batch")
    raw["rest"]["port"] = 70000
    problems = problems_of(raw)
    assert "mode: 'batch' is not one of rest, stream" in problems
    assert "rest.port: 70000 is not a TCP port (0-65535)" in problems
    assert "stages[0].sha256: expected 64 hex digits, got 'abc'" in problems
    assert any(p.startswith("stages[2].frmat: unknown field") for p in problems)


def test_stream_mode_requires_topics(iris_models: IrisModels) -> None:
    raw = base_config(iris_models.three_stages(), mode="stream")
    problems = problems_of(raw)
    assert "stream.input_topic: expected a non-empty string, got None" in problems
    assert "stream.client_id: expected a non-empty string, got None" in problems


def test_stream_qos_zero_is_refused(iris_models: IrisModels) -> None:
    raw = base_config(iris_models.three_stages(), mode="stream")
    raw["stream"] = {"input_topic": "a", "output_topic": "b", "error_topic": "c", "client_id": "x", "qos": 0}
    assert problems_of(raw) == ["stream.qos: 0 is not one of 1, 2 (at-least-once needs QoS >= 1)"]


def test_function_stage_needs_code_dir_and_reference() -> None:
    raw = base_config([{"name": "f", "format": "function", "function": "not a ref"}])
    problems = problems_of(raw)
    assert "stages[0].function: function stages need 'package.module:callable', got 'not a ref'" in problems
    assert "code_dir: required because stages[0] is a function stage" in problems


def test_format_inferred_from_extension_or_error() -> None:
    raw = base_config([{"name": "m", "artifact": "/x/model.bin"}])
    problems = problems_of(raw)
    assert problems[0].startswith(
        "stages[0].format: not given and not inferable from artifact '/x/model.bin'"
    )
    config = build_config(base_config([{"name": "m", "artifact": "/x/model.onnx"}]), environ={})
    assert config["stages"][0]["format"] == "onnx"


def test_env_overrides_nested_fields_parsed_as_json(iris_models: IrisModels) -> None:
    environ = {
        "MLPACKER_REST_PORT": "9123",
        "MLPACKER_REST_NEXT_HOPS": '["http://127.0.0.1:1/predict"]',
        "MLPACKER_STREAM_BROKER_HOST": "broker.example",
        "MLPACKER_STREAM_SESSION_EXPIRY_S": "60",
        "MLPACKER_ALLOW_VERSION_MISMATCH": "true",
        "MLPACKER_SERVICE": "from-env",
        "MLPACKER_SOMETHING_ELSE": "ignored",
    }
    config = build_config(base_config(iris_models.three_stages()), environ=environ)
    assert config["rest"]["port"] == 9123
    assert config["rest"]["next_hops"] == ["http://127.0.0.1:1/predict"]
    assert config["stream"]["broker"]["host"] == "broker.example"
    assert config["stream"]["session_expiry_s"] == 60
    assert config["allow_version_mismatch"] is True
    assert config["service"] == "from-env"


def test_env_override_is_validated(iris_models: IrisModels) -> None:
    problems = problems_of(base_config(iris_models.three_stages()), {"MLPACKER_REST_PORT": "eighty"})
    assert problems == ["rest.port: expected a int, got 'eighty'"]


def test_load_config_reports_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"pipeline": ')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.problems[0].startswith(f"config file '{path}': invalid JSON at line 1")


def run_check(config_path: Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUNTIME_BIN), "check", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_check_command_ok_and_errors(tmp_path: Path, iris_models: IrisModels) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(base_config(iris_models.three_stages())))
    result = run_check(good)
    assert result.returncode == 0, result.stderr
    assert "stages scale, reduce, classify load" in result.stdout

    stages = iris_models.three_stages()
    stages[1]["method"] = "predictt"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(base_config(stages)))
    result = run_check(bad)
    assert result.returncode == 2
    assert (
        "error: stages[1].method: 'predictt' is not one of predict, predict_proba, transform, "
        "decision_function, call" in result.stderr
    )


def test_check_command_reports_every_stage_that_fails_to_load(
    tmp_path: Path, iris_models: IrisModels
) -> None:
    stages = iris_models.three_stages()
    stages[0]["sha256"] = "0" * 64
    stages[2]["artifact"] = str(tmp_path / "missing.joblib")
    path = tmp_path / "c.json"
    path.write_text(json.dumps(base_config(stages)))
    result = run_check(path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: stages[0].sha256: artifact ")
    assert f"recorded {'0' * 64}" in lines[0]
    assert lines[1] == f"error: stages[2].artifact: file not found: {tmp_path / 'missing.joblib'}"


# ------------------------------------------------------------------ security section


def test_security_defaults_are_off(iris_models: IrisModels) -> None:
    config = build_config(base_config(iris_models.three_stages()), environ={})
    assert config["security"] == {
        "tls": {
            "cert_file": None,
            "key_file": None,
            "ca_file": None,
            "client_ca_file": None,
            "client_cert_file": None,
            "client_key_file": None,
        },
        "auth": {"token_file": None},
    }
    assert config["stream"]["broker"]["password_file"] is None


def test_security_fields_go_together(iris_models: IrisModels) -> None:
    raw = base_config(
        iris_models.three_stages(),
        security={"tls": {"cert_file": "/s/server.crt", "client_cert_file": "/s/client.crt"}, "auth": {}},
    )
    assert problems_of(raw) == [
        "security.tls.key_file: required with security.tls.cert_file (the service's HTTPS server)",
        "security.tls.client_key_file: required with security.tls.client_cert_file "
        "(the certificate hops present)",
    ]
    raw = base_config(iris_models.three_stages(), security={"tls": {"client_ca_file": "/s/ca.crt"}})
    assert problems_of(raw) == [
        "security.tls.client_ca_file: needs security.tls.cert_file and key_file "
        "(client certificates are asked for by an HTTPS server)"
    ]
    raw = base_config(iris_models.three_stages(), security={"auth": {"token_file": ""}, "tsl": {}})
    problems = problems_of(raw)
    assert problems[0] == "security.tsl: unknown field (known: auth, tls)"
    assert problems[1] == "security.auth.token_file: expected a non-empty string or null, got ''"


def test_broker_password_and_password_file_exclude_each_other(iris_models: IrisModels) -> None:
    raw = base_config(iris_models.three_stages(), mode="stream")
    raw["stream"] = {
        "input_topic": "a",
        "output_topic": "b",
        "error_topic": "c",
        "client_id": "x",
        "broker": {"password": "p", "password_file": "/s/mqtt.password"},
    }
    assert problems_of(raw) == [
        "stream.broker.password_file: give stream.broker.password or stream.broker.password_file, not both",
        "stream.broker.password_file: needs stream.broker.username",
    ]


def test_env_overrides_security_fields(iris_models: IrisModels) -> None:
    environ = {
        "MLPACKER_SECURITY_TLS_CERT_FILE": "/s/server.crt",
        "MLPACKER_SECURITY_TLS_KEY_FILE": "/s/server.key",
        "MLPACKER_SECURITY_TLS_CLIENT_CA_FILE": "/s/clients-ca.crt",
        "MLPACKER_SECURITY_AUTH_TOKEN_FILE": "/s/token",
        "MLPACKER_STREAM_BROKER_USERNAME": "edge",
        "MLPACKER_STREAM_BROKER_PASSWORD_FILE": "/s/mqtt.password",
    }
    config = build_config(base_config(iris_models.three_stages()), environ=environ)
    assert config["security"]["tls"]["cert_file"] == "/s/server.crt"
    assert config["security"]["tls"]["key_file"] == "/s/server.key"
    assert config["security"]["tls"]["client_ca_file"] == "/s/clients-ca.crt"
    assert config["security"]["tls"]["client_cert_file"] is None
    assert config["security"]["auth"]["token_file"] == "/s/token"
    assert config["stream"]["broker"]["password_file"] == "/s/mqtt.password"
    # "null" turns a field off again.
    config = build_config(
        base_config(iris_models.three_stages(), security={"auth": {"token_file": "/s/token"}}),
        environ={"MLPACKER_SECURITY_AUTH_TOKEN_FILE": "null"},
    )
    assert config["security"]["auth"]["token_file"] is None


def test_check_command_accepts_usable_security_files(
    tmp_path: Path, iris_models: IrisModels, pki: Pki
) -> None:
    config = base_config(
        iris_models.three_stages(),
        security={
            "tls": pki.server_tls(
                client_ca_file=str(pki.ca.cert),
                client_cert_file=str(pki.client.cert),
                client_key_file=str(pki.client.key),
            ),
            "auth": {"token_file": str(write_tokens(tmp_path / "token", "t-current", "t-previous"))},
        },
    )
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    result = run_check(path)
    assert result.returncode == 0, result.stderr


def test_check_command_names_each_unusable_security_file(
    tmp_path: Path, iris_models: IrisModels, pki: Pki
) -> None:
    empty_token = tmp_path / "token"
    empty_token.write_text("\n  \n")
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    missing = tmp_path / "missing.crt"
    config = base_config(
        iris_models.three_stages(),
        security={
            # The other CA's key is not the server certificate's key.
            "tls": pki.server_tls(key_file=str(pki.other_ca.key), ca_file=str(not_pem)),
            "auth": {"token_file": str(empty_token)},
        },
    )
    config["security"]["tls"].update(client_cert_file=str(missing), client_key_file=str(pki.client.key))
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    result = run_check(path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: security.tls.key_file: '{pki.other_ca.key}' is not the private key of "
        f"security.tls.cert_file '{pki.server.cert}'",
        f"error: security.tls.client_cert_file: cannot read '{missing}': No such file or directory",
        f"error: security.tls.ca_file: '{not_pem}' holds no PEM certificate (NO_CERTIFICATE_OR_CRL_FOUND)",
        f"error: security.auth.token_file: '{empty_token}' holds no token (one token per line)",
    ]


def test_check_command_refuses_an_encrypted_key_and_a_bad_token_line(
    tmp_path: Path, iris_models: IrisModels, pki: Pki
) -> None:
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(pki.server.key),
            "-aes256",
            "-passout",
            "pass:x",
            "-out",
            str(encrypted),
        ],
        check=True,
    )
    tokens = tmp_path / "token"
    tokens.write_text("good-token\nhas a space\n")
    config = base_config(
        iris_models.three_stages(),
        security={"tls": pki.server_tls(key_file=str(encrypted)), "auth": {"token_file": str(tokens)}},
    )
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    result = run_check(path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: security.tls.key_file: the private key is encrypted "
        "(a service key must be unencrypted, mode 0640)",
        f"error: security.auth.token_file: '{tokens}' line 2: a token must be visible ASCII without spaces",
    ]


def test_check_command_checks_the_broker_password_file(tmp_path: Path, iris_models: IrisModels) -> None:
    raw = base_config([iris_models.stage("scale", "scaler", "transform")], mode="stream")
    raw["stream"] = {
        "input_topic": "a",
        "output_topic": "b",
        "error_topic": "c",
        "client_id": "x",
        "broker": {"username": "edge", "password_file": str(tmp_path / "absent.password")},
    }
    path = tmp_path / "c.json"
    path.write_text(json.dumps(raw))
    result = run_check(path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: stream.broker.password_file: cannot read '{tmp_path / 'absent.password'}': "
        "No such file or directory"
    ]


def test_bind_is_an_address_or_a_list(iris_models: IrisModels) -> None:
    config = build_config(
        base_config(iris_models.three_stages(), rest={"bind": ["10.0.0.2", "::1"]}), environ={}
    )
    assert config["rest"]["bind"] == ["10.0.0.2", "::1"]
    raw = base_config(iris_models.three_stages(), rest={"bind": ["10.0.0.2", ""]})
    assert problems_of(raw) == ["rest.bind[1]: expected a non-empty string, got ''"]
    raw = base_config(iris_models.three_stages(), rest={"bind": []})
    assert problems_of(raw) == ["rest.bind: expected an address or a non-empty list of addresses, got []"]
    raw = base_config(iris_models.three_stages(), rest={"bind": ["127.0.0.1", "127.0.0.1"]})
    assert problems_of(raw) == ["rest.bind: an address is listed twice: ['127.0.0.1', '127.0.0.1']"]


def test_slow_client_and_message_size_limits_default_and_are_checked(iris_models: IrisModels) -> None:
    config = build_config(base_config(iris_models.three_stages()), environ={})
    assert config["rest"]["body_read_timeout_s"] == 10
    assert config["rest"]["max_connections"] == 100
    assert config["stream"]["max_message_bytes"] == 1024 * 1024
    raw = base_config(
        iris_models.three_stages(),
        rest={"body_read_timeout_s": 0, "max_connections": "many"},
        stream={"max_message_bytes": -1},
    )
    assert problems_of(raw) == [
        "rest.body_read_timeout_s: must be > 0, got 0",
        "rest.max_connections: expected a int, got 'many'",
        "stream.max_message_bytes: must be > 0, got -1",
    ]
    raw = base_config(iris_models.three_stages(), rest={"threads": 8, "max_connections": 8})
    assert problems_of(raw) == [
        "rest.max_connections: must be more than rest.threads (8) so that kept-alive connections and "
        "health probes fit, got 8"
    ]


def test_dedup_window_is_off_by_default_and_a_bounded_count(iris_models: IrisModels) -> None:
    config = build_config(base_config(iris_models.three_stages()), environ={})
    assert config["stream"]["dedup_window"] == 0
    for window in (1, 1000, 1_000_000):
        config = build_config(base_config(iris_models.three_stages(), stream={"dedup_window": window}), {})
        assert config["stream"]["dedup_window"] == window
    config = build_config(
        base_config(iris_models.three_stages()), environ={"MLPACKER_STREAM_DEDUP_WINDOW": "500"}
    )
    assert config["stream"]["dedup_window"] == 500
    for window, problem in [
        (-1, "stream.dedup_window: must be 0 (off) to 1000000 ids, got -1"),
        (1_000_001, "stream.dedup_window: must be 0 (off) to 1000000 ids, got 1000001"),
        ("10", "stream.dedup_window: expected a int, got '10'"),
        (True, "stream.dedup_window: expected a int, got True"),
        (2.5, "stream.dedup_window: expected a int, got 2.5"),
        (None, "stream.dedup_window: expected a int, got None"),
    ]:
        raw = base_config(iris_models.three_stages(), stream={"dedup_window": window})
        assert problems_of(raw) == [problem]
