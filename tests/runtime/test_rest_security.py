"""TLS and bearer auth of REST services and their hops: real gunicorn processes, real TLS (test_auth.py has
the in-process cases)."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import urllib3
from runtime_helpers import (
    HTTP,
    IrisModels,
    Pki,
    Runtimes,
    base_config,
    bearer,
    free_port,
    get,
    post_json,
    write_tokens,
)
from test_rest_gunicorn import metric_value

ROW = [[5.1, 3.5, 1.4, 0.2]]
MISSING = 'Bearer realm="mlpacker"'
INVALID = 'Bearer realm="mlpacker", error="invalid_token"'


def secured(stages: list[dict[str, Any]], pki: Pki, token_file: Path | None, **rest: Any) -> dict[str, Any]:
    """A REST config with HTTPS (the test CA's server certificate), hops verified against the CA, and auth."""
    return base_config(
        stages,
        rest=rest,
        security={"tls": pki.server_tls(), "auth": {"token_file": str(token_file) if token_file else None}},
    )


def test_https_service_needs_a_bearer_token(
    runtimes: Runtimes, iris_models: IrisModels, pki: Pki, tmp_path: Path
) -> None:
    tokens = write_tokens(tmp_path / "token", "tok-current", "tok-previous")
    client = pki.https_client()
    service = runtimes.start(secured(iris_models.three_stages(), pki, tokens), http=client)
    url = service.base_url + "/predict"
    assert url.startswith("https://127.0.0.1:")

    response = client.request("POST", url, json={"instances": ROW})
    assert (response.status, response.headers["WWW-Authenticate"]) == (401, MISSING)
    assert response.json() == {"error": "authentication required: send 'Authorization: Bearer <token>'"}
    response = client.request("POST", url, json={"instances": ROW}, headers=bearer("tok-wrong"))
    assert (response.status, response.headers["WWW-Authenticate"]) == (401, INVALID)
    assert response.json() == {"error": "invalid bearer token"}
    # Both lines of the file are accepted: the current token and the previous one (a rotation rolling out).
    rows = iris_models.X[::10]
    for token in ("tok-current", "tok-previous"):
        status, body = post_json(url, {"instances": rows.tolist()}, http=client, headers=bearer(token))
        assert (status, body) == (200, {"predictions": iris_models.expected(rows)})
    for path in ("/metrics", "/info", "/openapi.json"):
        assert get(service.base_url + path, http=client)[0] == 401
        assert get(service.base_url + path, http=client, headers=bearer("tok-current"))[0] == 200
    # Probes stay open.
    assert get(service.base_url + "/health/live", http=client) == (200, b'{"status":"alive"}')
    assert get(service.base_url + "/health/ready", http=client)[0] == 200

    # Plain HTTP on the HTTPS port gets no HTTP answer at all.
    plain_url = service.base_url.replace("https://", "http://") + "/health/live"
    with pytest.raises(urllib3.exceptions.HTTPError):
        HTTP.request("GET", plain_url)
    assert service.log_shows("[SSL: HTTP_REQUEST]")

    # A client that trusts only the test CA reaches the service by its IP address and by name.
    port = service.config["rest"]["port"]
    only_the_ca = ssl.create_default_context(cafile=str(pki.ca.cert))
    for host in ("127.0.0.1", "localhost"):
        conn = http.client.HTTPSConnection(host, port, context=only_the_ca, timeout=10)
        conn.request("GET", "/health/ready")
        assert conn.getresponse().status == 200
        conn.close()
    # One that trusts another CA does not.
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=ssl.create_default_context(cafile=str(pki.other_ca.cert)), timeout=10
    )
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        conn.request("GET", "/health/ready")
    conn.close()


@pytest.mark.slow
def test_chain_over_https_with_auth_equals_pipeline_and_info_leaks_nothing(
    runtimes: Runtimes, iris_models: IrisModels, pki: Pki, tmp_path: Path
) -> None:
    tokens = write_tokens(tmp_path / "token", "chain-token")
    client = pki.https_client()
    ports = [free_port() for _ in range(3)]
    # The entry's hop carries user-info, as a careless URL would: it must show up nowhere.
    hop_urls = [
        f"https://ops:hop-s3cret@127.0.0.1:{ports[1]}/predict",
        f"https://127.0.0.1:{ports[2]}/predict",
    ]
    configs = []
    for index, stage in enumerate(iris_models.three_stages()):
        config = secured([stage], pki, tokens, port=ports[index], next_hops=hop_urls[index : index + 1])
        config["service"] = f"iris-{stage['name']}"
        configs.append(config)
    entry, _, _ = runtimes.start_many(configs, http=client)
    rows = iris_models.X
    for start in range(0, len(rows), 50):
        status, body = post_json(
            entry.base_url + "/predict",
            {"instances": rows[start : start + 50].tolist()},
            http=client,
            headers=bearer("chain-token"),
        )
        assert (status, body) == (200, {"predictions": iris_models.expected(rows[start : start + 50])})

    status, raw_info = get(entry.base_url + "/info", http=client, headers=bearer("chain-token"))
    assert status == 200
    info = json.loads(raw_info)
    assert info["next_hops"] == [f"https://127.0.0.1:{ports[1]}/predict"]
    assert info["stages"][0]["artifact"] == "scaler.joblib"
    assert info["security"] == {"tls": True, "client_certificates": False, "auth": True}
    metrics = get(entry.base_url + "/metrics", http=client, headers=bearer("chain-token"))[1].decode()
    for text in (raw_info.decode(), metrics):
        for secret in ("hop-s3cret", "ops:", "chain-token", str(tmp_path), str(pki.directory)):
            assert secret not in text
    assert str(iris_models.directory) not in raw_info.decode()
    assert not [value for value in _strings(info) if value.startswith("/")]  # no absolute path at all
    hop = f"https://127.0.0.1:{ports[1]}/predict"
    assert metric_value(metrics, "mlpacker_hop_duration_seconds_count", f'hop="{hop}"') == 3.0


@pytest.mark.slow
def test_hop_reconnects_resume_their_tls_session(
    runtimes: Runtimes, iris_models: IrisModels, pki: Pki, tmp_path: Path
) -> None:
    tokens = write_tokens(tmp_path / "token", "tok")
    client = pki.https_client()
    down_port = free_port()
    hop = f"https://127.0.0.1:{down_port}/predict"
    downstream = secured(
        [iris_models.stage("reduce", "pca", "transform"), iris_models.stage("classify", "clf", "predict")],
        pki,
        tokens,
        port=down_port,
        workers=2,  # a reconnect may land on the other worker: it must resume there too
        keepalive_s=1,  # closes idle kept-alive connections quickly, so the entry reconnects
    )
    entry_config = secured([iris_models.stage("scale", "scaler", "transform")], pki, tokens, next_hops=[hop])
    entry, _ = runtimes.start_many([entry_config, downstream], http=client)

    def connections(handshake: str) -> float:
        text = get(entry.base_url + "/metrics", http=client, headers=bearer("tok"))[1].decode()
        series = f'mlpacker_hop_connections_total{{handshake="{handshake}",hop="{hop}"}} '
        return float(text.split(series, 1)[1].split()[0]) if series in text else 0.0

    deadline = time.monotonic() + 60
    while connections("tls_full") + connections("tls_resumed") < 4:
        assert time.monotonic() < deadline, "the entry never reconnected to its next hop"
        status, body = post_json(
            entry.base_url + "/predict", {"instances": ROW}, http=client, headers=bearer("tok")
        )
        assert (status, body) == (200, {"predictions": iris_models.expected(iris_models.X[:1])})
        time.sleep(1.5)  # longer than the downstream's keep-alive: the next call reconnects
    # Only the first connection paid a full handshake; every reconnect resumed the session.
    assert connections("tls_full") == 1.0
    assert connections("tls_resumed") >= 3.0


def test_hop_with_a_certificate_of_another_ca_is_refused(
    runtimes: Runtimes, iris_models: IrisModels, pki: Pki, tmp_path: Path
) -> None:
    down_port = free_port()
    hop = f"https://127.0.0.1:{down_port}/predict"
    impostor = base_config(
        [iris_models.stage("reduce", "pca", "transform"), iris_models.stage("classify", "clf", "predict")],
        rest={"port": down_port},
        security={"tls": {"cert_file": str(pki.other_server.cert), "key_file": str(pki.other_server.key)}},
    )
    runtimes.start(impostor, http=pki.https_client(trust=pki.other_ca.cert))
    client = pki.https_client()
    entry = runtimes.start(
        secured([iris_models.stage("scale", "scaler", "transform")], pki, None, next_hops=[hop]), http=client
    )
    status, body = post_json(entry.base_url + "/predict", {"instances": ROW}, http=client)
    assert (status, body) == (
        502,
        {
            "error": f"next hop unreachable: {hop} "
            "(TLS certificate verify failed: unable to get local issuer certificate)"
        },
    )
    metrics = get(entry.base_url + "/metrics", http=client)[1].decode()
    assert metric_value(metrics, "mlpacker_hop_errors_total", f'hop="{hop}",kind="tls"') == 1.0


def test_hops_send_the_token_and_fall_back_to_the_previous_one(
    runtimes: Runtimes, iris_models: IrisModels, pki: Pki, tmp_path: Path
) -> None:
    """During a rotation a caller may hold the new token before its next hop does: it retries with line 2."""
    client = pki.https_client()
    down_port = free_port()
    hop = f"https://127.0.0.1:{down_port}/predict"
    stage = [iris_models.stage("scale", "scaler", "transform")]
    not_yet_rotated = write_tokens(tmp_path / "old", "tok-old")
    rotated = write_tokens(tmp_path / "rotated", "tok-new", "tok-old")
    new_only = write_tokens(tmp_path / "new-only", "tok-new")
    downstream = secured(
        [iris_models.stage("reduce", "pca", "transform"), iris_models.stage("classify", "clf", "predict")],
        pki,
        not_yet_rotated,
        port=down_port,
    )
    callers = [
        secured(stage, pki, rotated, next_hops=[hop]),
        secured(stage, pki, new_only, next_hops=[hop]),
        secured(stage, pki, None, next_hops=[hop]),  # auth off: sends no token
    ]
    _, rotating, wrong_token, no_token = runtimes.start_many([downstream, *callers], http=client)
    status, body = post_json(
        rotating.base_url + "/predict", {"instances": ROW}, http=client, headers=bearer("tok-new")
    )
    assert (status, body) == (200, {"predictions": iris_models.expected(iris_models.X[:1])})
    status, body = post_json(
        wrong_token.base_url + "/predict", {"instances": ROW}, http=client, headers=bearer("tok-new")
    )
    assert (status, body) == (502, {"error": f"next hop {hop} answered 401: invalid bearer token"})
    status, body = post_json(no_token.base_url + "/predict", {"instances": ROW}, http=client)
    assert (status, body) == (
        502,
        {
            "error": f"next hop {hop} answered 401: "
            "authentication required: send 'Authorization: Bearer <token>'"
        },
    )


def test_mutual_tls_needs_a_client_certificate_of_the_ca(
    runtimes: Runtimes, iris_models: IrisModels, pki: Pki, tmp_path: Path
) -> None:
    tokens = write_tokens(tmp_path / "token", "tok")
    with_cert = pki.https_client(client_cert=pki.client)
    down_port = free_port()
    hop = f"https://127.0.0.1:{down_port}/predict"
    config = secured(
        [iris_models.stage("reduce", "pca", "transform"), iris_models.stage("classify", "clf", "predict")],
        pki,
        tokens,
        port=down_port,
    )
    config["security"]["tls"]["client_ca_file"] = str(pki.ca.cert)
    service = runtimes.start(config, http=with_cert)
    url = service.base_url + "/predict"
    scaled = iris_models.pipeline.named_steps["scale"].transform(iris_models.X[:1]).tolist()
    status, body = post_json(url, {"instances": scaled}, http=with_cert, headers=bearer("tok"))
    assert status == 200, body
    for refused in (pki.https_client(), pki.https_client(client_cert=pki.other_client)):
        with pytest.raises(urllib3.exceptions.HTTPError):
            post_json(url, {"instances": scaled}, http=refused, headers=bearer("tok"))
    # Refused by the TLS layer: no certificate, and one the CA did not sign.
    assert service.log_shows("PEER_DID_NOT_RETURN_A_CERTIFICATE")
    assert service.log_shows("CERTIFICATE_VERIFY_FAILED")

    # A hop presents security.tls.client_cert_file; without one it is refused like any client.
    stage = [iris_models.stage("scale", "scaler", "transform")]
    presenting = secured(stage, pki, tokens, next_hops=[hop])
    presenting["security"]["tls"].update(
        client_cert_file=str(pki.client.cert), client_key_file=str(pki.client.key)
    )
    entry, bare = runtimes.start_many(
        [presenting, secured(stage, pki, tokens, next_hops=[hop])], http=pki.https_client()
    )
    status, body = post_json(
        entry.base_url + "/predict", {"instances": ROW}, http=pki.https_client(), headers=bearer("tok")
    )
    assert (status, body) == (200, {"predictions": iris_models.expected(iris_models.X[:1])})
    status, body = post_json(
        bare.base_url + "/predict", {"instances": ROW}, http=pki.https_client(), headers=bearer("tok")
    )
    assert status == 502
    assert body["error"].startswith(f"next hop unreachable: {hop} (TLS handshake failed: ")


def test_serve_refuses_to_start_with_an_unusable_certificate(
    runtimes: Runtimes, iris_models: IrisModels, pki: Pki, tmp_path: Path
) -> None:
    config = base_config(
        iris_models.three_stages(),
        security={"tls": {"cert_file": str(pki.server.cert), "key_file": str(pki.client.key)}},
    )
    service = runtimes.prepare(config).start()
    assert service.proc.wait(30) == 2
    assert (
        f"error: security.tls.key_file: '{pki.client.key}' is not the private key of "
        f"security.tls.cert_file '{pki.server.cert}'"
    ) in service.log()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []
