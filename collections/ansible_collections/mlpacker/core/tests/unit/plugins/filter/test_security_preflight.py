# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The pipeline role's preflight on mutual TLS (mlpacker_security.mutual_tls / client_ca_file), run by a real
``ansible-playbook`` over the role's own preflight.yml and the security_settings filter."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.mlpacker.core.plugins.module_utils import pki

SHOWN_SECURITY = "mlpacker_security | mlpacker.core.security_settings(insecure=mlpacker_insecure) | to_json"


@pytest.fixture(scope="module")
def client_ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    ca = pki.make_ca("clients", 30, datetime.datetime.now(datetime.timezone.utc))[1]
    path = tmp_path_factory.mktemp("ca") / "clients.pem"
    path.write_bytes(pki.certificate_pem(ca))
    return str(path)


@pytest.mark.parametrize(
    ("mode", "security", "insecure", "failure"),
    [
        ("rest", {"mutual_tls": True}, False, None),
        ("rest", {"client_ca_file": "CLIENT_CA"}, False, None),
        ("rest", {"mutual_tls": True}, True, None),
        ("stream", {}, False, None),
        (
            "stream",
            {"mutual_tls": True},
            False,
            "mlpacker_security.mutual_tls: mutual TLS applies to a REST pipeline's entry service; pipeline"
            " 'p' is in mode 'stream'",
        ),
        (
            "stream",
            {"client_ca_file": "CLIENT_CA"},
            False,
            "mlpacker_security.client_ca_file: mutual TLS applies to a REST pipeline's entry service",
        ),
        (
            "rest",
            {"mutual_tls": True, "tls": False},
            False,
            "mlpacker_security.mutual_tls: mutual TLS needs tls: true",
        ),
        (
            "rest",
            {"client_ca_file": "CLIENT_CA", "mutual_tls": "no"},
            False,
            "mlpacker_security.client_ca_file: given, but mutual_tls is false",
        ),
        (
            "rest",
            {"client_ca_file": "/nonexistent/ca.pem"},
            False,
            "mlpacker_security.client_ca_file: cannot read",
        ),
    ],
    ids=[
        "rest-pipeline-ca",
        "rest-own-client-ca",
        "insecure-turns-it-off",
        "stream-without",
        "stream-refused",
        "stream-client-ca-refused",
        "needs-tls",
        "client-ca-but-off",
        "unreadable-client-ca",
    ],
)
def test_preflight_on_mutual_tls(
    tmp_path: Path,
    pipeline_preflight,
    client_ca: str,
    mode: str,
    security: dict[str, Any],
    insecure: bool,
    failure: str | None,
) -> None:
    if security.get("client_ca_file") == "CLIENT_CA":
        security = dict(security, client_ca_file=client_ca)
    run = pipeline_preflight(
        tmp_path,
        SHOWN_SECURITY,
        {
            "mlpacker_pipeline": {"name": "p", "mode": mode, "layout": "atomic", "stages": []},
            "mlpacker_security": security,
            "mlpacker_insecure": insecure,
        },
    )
    output = run.output
    if failure is None:
        assert run.returncode == 0, output
        expected = bool(security.get("mutual_tls") or security.get("client_ca_file")) and not insecure
        assert run.resolved["mutual_tls"] is expected
    else:
        assert run.returncode != 0, output
        assert failure in " ".join(output.split()), output
