# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""mlpacker.core.pipeline_credentials (an action plugin) through real Ansible runs: the tree it lays out,
re-runs, check and diff mode, rotation, renewal, the user's CA and token, and TLS with what it made."""

from __future__ import annotations

import datetime
import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_collections.mlpacker.core.plugins.module_utils import mqtt_credentials, pki

SERVICES = [
    {"id": "iris-scale", "input_topic": "mlpacker/iris/in", "output_topic": "mlpacker/iris/stage/clf/in",
     "error_topic": "mlpacker/iris/errors"},
    {"id": "iris-clf", "input_topic": "mlpacker/iris/stage/clf/in", "output_topic": "mlpacker/iris/out",
     "error_topic": "mlpacker/iris/errors"},
]  # fmt: skip
HOSTS = {"edge1": "10.0.0.5", "cloud1": "cloud1.example.org"}
TREE = {
    ".": "0700",
    "_broker": "0700",
    "_broker/b1.crt": "0600",
    "_broker/b1.key": "0600",
    "_broker/ca.crt": "0600",
    "_broker/ca.key": "0600",
    "iris": "0700",
    "iris/ca.crt": "0600",
    "iris/ca.key": "0600",
    "iris/client.crt": "0600",
    "iris/client.key": "0600",
    "iris/hosts": "0700",
    "iris/hosts/cloud1.crt": "0600",
    "iris/hosts/cloud1.key": "0600",
    "iris/hosts/edge1.crt": "0600",
    "iris/hosts/edge1.key": "0600",
    "iris/mqtt": "0700",
    "iris/mqtt/acl": "0600",
    "iris/mqtt/mlp-iris-client.password": "0600",
    "iris/mqtt/mlp-iris-iris-clf.password": "0600",
    "iris/mqtt/mlp-iris-iris-scale.password": "0600",
    "iris/mqtt/passwd": "0600",
    "iris/mqtt/share_group.salt": "0600",
    "iris/token": "0600",
}
LEAVES = [
    "iris/hosts/edge1.crt", "iris/hosts/edge1.key", "iris/hosts/cloud1.crt", "iris/hosts/cloud1.key",
    "iris/client.crt", "iris/client.key", "_broker/b1.crt", "_broker/b1.key",
]  # fmt: skip
ANSIBLE = Path(sys.executable).with_name("ansible")
COLLECTIONS_DIR = Path(__file__).resolve().parents[7]
PASSWORDS = [
    "iris/mqtt/mlp-iris-client.password",
    "iris/mqtt/mlp-iris-iris-clf.password",
    "iris/mqtt/mlp-iris-iris-scale.password",
]


@pytest.fixture()
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def arguments(root: Path, **overrides: Any) -> dict[str, Any]:
    args = {
        "path": str(root),
        "pipeline": "iris",
        "hosts": dict(HOSTS),
        "broker_hosts": {"b1": "127.0.0.1"},
        "mqtt_services": SERVICES,
    }
    args.update(overrides)
    return args


def snapshot(root: Path) -> dict[str, tuple[str, bytes | None]]:
    """Every entry under ``root``: its mode and, for files, its bytes."""
    entries = {}
    for path in [root, *sorted(root.rglob("*"))]:
        rel = "." if path == root else str(path.relative_to(root))
        mode = f"{stat.S_IMODE(path.stat().st_mode):04o}"
        entries[rel] = (mode, path.read_bytes() if path.is_file() else None)
    return entries


def secrets_of(root: Path) -> list[str]:
    """The secret values the folder holds: tokens, passwords, private keys (their base64 body lines)."""
    values = (root / "iris/token").read_text().split()
    if (root / "iris/token.pending").exists():
        values += (root / "iris/token.pending").read_text().split()
    values += [(root / rel).read_text().strip() for rel in PASSWORDS if (root / rel).exists()]
    for key in root.rglob("*.key"):
        values += [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]
    return values


def assert_no_secret(result: dict[str, Any], root: Path) -> None:
    text = json.dumps(result)
    assert "PRIVATE KEY" not in text
    for value in secrets_of(root):
        assert value not in text


def test_a_first_run_lays_out_the_tree_and_a_rerun_changes_nothing(run_module, tmp_path, umask_022) -> None:
    root = tmp_path / "credentials"
    first = run_module("pipeline_credentials", arguments(root))
    assert first.get("failed") is not True, first
    assert first["changed"] is True
    assert {rel: entry[0] for rel, entry in snapshot(root).items()} == TREE
    assert first["dir"] == str(root / "iris")
    assert (first["ca_file"], first["token_file"]) == (str(root / "iris/ca.crt"), str(root / "iris/token"))
    # A first token has no service to wait for: the services get the token file itself.
    assert (first["service_token_file"], first["token_pending"]) == (str(root / "iris/token"), False)
    assert first["client"] == {
        "cert_file": str(root / "iris/client.crt"),
        "key_file": str(root / "iris/client.key"),
    }
    assert first["hosts"]["edge1"] == {
        "cert_file": str(root / "iris/hosts/edge1.crt"),
        "key_file": str(root / "iris/hosts/edge1.key"),
    }
    assert first["broker"] == {
        "ca_file": str(root / "_broker/ca.crt"),
        "hosts": {
            "b1": {"cert_file": str(root / "_broker/b1.crt"), "key_file": str(root / "_broker/b1.key")}
        },
    }
    assert first["mqtt"] == {
        "passwd_file": str(root / "iris/mqtt/passwd"),
        "acl_file": str(root / "iris/mqtt/acl"),
        "users": {
            service_id: {
                "username": f"mlp-iris-{service_id}",
                "password_file": str(root / f"iris/mqtt/mlp-iris-{service_id}.password"),
                "share_group": mqtt_credentials.share_group(
                    service_id, (root / "iris/mqtt/share_group.salt").read_text().strip()
                ),
            }
            for service_id in ("iris-scale", "iris-clf")
        },
        "client": {
            "username": "mlp-iris-client",
            "password_file": str(root / "iris/mqtt/mlp-iris-client.password"),
        },
    }
    assert {change["path"] for change in first["changes"]} == {os.path.normpath(root / rel) for rel in TREE}
    # What the files hold: a token line, passwords whose hashes are in passwd, the ACL of the topics.
    tokens = (root / "iris/token").read_text().splitlines()
    assert len(tokens) == 1 and len(tokens[0]) >= 43
    hashes = mqtt_credentials.parse_passwd((root / "iris/mqtt/passwd").read_text())
    for rel in PASSWORDS:
        username = Path(rel).name[: -len(".password")]
        assert mqtt_credentials.hash_matches(hashes[username], (root / rel).read_text().strip())
    client_topics = {
        "input": "mlpacker/iris/in",
        "output": "mlpacker/iris/out",
        "error": "mlpacker/iris/errors",
    }
    assert (root / "iris/mqtt/acl").read_text() == mqtt_credentials.acl_text("iris", SERVICES, client_topics)
    assert_no_secret(first, root)

    before = snapshot(root)
    inodes = {path: path.stat().st_ino for path in root.rglob("*")}
    second = run_module("pipeline_credentials", arguments(root))
    assert (second["changed"], second["changes"]) == (False, [])
    assert snapshot(root) == before
    assert {path: path.stat().st_ino for path in root.rglob("*")} == inodes
    assert {key: second[key] for key in first if key not in ("changed", "changes")} == {
        key: first[key] for key in first if key not in ("changed", "changes")
    }


def test_check_mode_writes_nothing_and_tells_what_would_change(run_module, tmp_path) -> None:
    root = tmp_path / "credentials"
    checked = run_module("pipeline_credentials", arguments(root), check_mode=True)
    assert checked.get("failed") is not True, checked
    assert checked["changed"] is True and len(checked["changes"]) == len(TREE)
    assert checked["ca_file"] == str(root / "iris/ca.crt")
    assert not root.exists()

    run_module("pipeline_credentials", arguments(root))
    before = snapshot(root)
    moved = run_module(
        "pipeline_credentials", arguments(root, hosts=dict(HOSTS, edge1="10.0.0.6")), check_mode=True
    )
    assert moved["changed"] is True
    assert [change["path"] for change in moved["changes"]] == [
        str(root / "iris/hosts/edge1.crt"),
        str(root / "iris/hosts/edge1.key"),
    ]
    assert moved["changes"][0]["change"] == "new certificate (addresses changed: 10.0.0.5 -> 10.0.0.6)"
    rotated = run_module("pipeline_credentials", arguments(root, rotate=True), check_mode=True)
    assert rotated["changed"] is True
    assert snapshot(root) == before


def test_rotate_renews_leaves_token_and_passwords_but_keeps_the_cas(run_module, tmp_path) -> None:
    root = tmp_path / "credentials"
    run_module("pipeline_credentials", arguments(root))
    before = snapshot(root)
    old_token = (root / "iris/token").read_text().splitlines()[0]
    rotated = run_module("pipeline_credentials", arguments(root, rotate=True))
    assert rotated.get("failed") is not True, rotated
    assert rotated["changed"] is True
    after = snapshot(root)
    # The new token waits in token.pending (what the services get); clients keep reading the old one.
    assert set(after) == set(before) | {"iris/token.pending"}
    assert after["iris/token.pending"][0] == "0600"
    assert rotated["service_token_file"] == str(root / "iris/token.pending") and rotated["token_pending"]
    assert rotated["token_file"] == str(root / "iris/token")
    unchanged = sorted(rel for rel in after if after[rel] == before.get(rel))
    assert unchanged == [".", "_broker", "_broker/ca.crt", "_broker/ca.key", "iris", "iris/ca.crt",
                         "iris/ca.key", "iris/hosts", "iris/mqtt", "iris/mqtt/acl",
                         "iris/mqtt/share_group.salt", "iris/token"]  # fmt: skip
    # Replicas restarted one by one after a rotation stay in one shared-subscription group.
    first_groups = {key: user["share_group"] for key, user in run_module(
        "pipeline_credentials", arguments(root))["mqtt"]["users"].items()}  # fmt: skip
    assert all(group.startswith(f"mlpacker-{key}-") for key, group in first_groups.items())
    tokens = (root / "iris/token.pending").read_text().splitlines()
    assert len(tokens) == 2 and tokens[1] == old_token and tokens[0] != old_token
    hashes = mqtt_credentials.parse_passwd((root / "iris/mqtt/passwd").read_text())
    for rel in PASSWORDS:
        username = Path(rel).name[: -len(".password")]
        assert mqtt_credentials.hash_matches(hashes[username], (root / rel).read_text().strip())
    ca = pki.load_certificate((root / "iris/ca.crt").read_bytes())
    for rel in ("iris/hosts/edge1.crt", "iris/client.crt"):
        assert pki.signed_by(pki.load_certificate((root / rel).read_bytes()), ca)
    assert_no_secret(rotated, root)

    again = run_module("pipeline_credentials", arguments(root))
    assert again["changed"] is False and again["token_pending"] is True
    promoted = run_module("pipeline_credentials", arguments(root, promote_token=True))
    assert promoted["changed"] is True
    assert (root / "iris/token").read_text().splitlines() == tokens
    rotated_twice = run_module("pipeline_credentials", arguments(root, rotate=True))
    assert rotated_twice["changed"] is True
    # only the last previous token stays
    assert (root / "iris/token.pending").read_text().splitlines()[1:] == tokens[:1]


def test_a_changed_address_renews_that_host_only(run_module, tmp_path) -> None:
    root = tmp_path / "credentials"
    run_module("pipeline_credentials", arguments(root))
    before = snapshot(root)
    result = run_module("pipeline_credentials", arguments(root, hosts=dict(HOSTS, edge1="edge1.example.org")))
    assert result["changed"] is True
    after = snapshot(root)
    assert sorted(rel for rel in after if after[rel] != before[rel]) == [
        "iris/hosts/edge1.crt",
        "iris/hosts/edge1.key",
    ]
    cert = pki.load_certificate((root / "iris/hosts/edge1.crt").read_bytes())
    assert pki.certificate_sans(cert) == [
        ("dns", "edge1.example.org"), ("dns", "edge1"), ("dns", "localhost"), ("ip", "127.0.0.1")
    ]  # fmt: skip


def test_missing_damaged_and_expiring_files_are_made_again(run_module, tmp_path) -> None:
    root = tmp_path / "credentials"
    run_module("pipeline_credentials", arguments(root))
    before = snapshot(root)
    (root / "iris/hosts/edge1.key").write_bytes(b"truncated")
    (root / "iris/mqtt/mlp-iris-iris-clf.password").unlink()
    (root / "iris/token").write_text("\n")
    (root / "_broker/b1.crt").write_bytes(b"")
    # cloud1's certificate: still valid, but for 10 more days only.
    ca_key = pki.load_private_key((root / "iris/ca.key").read_bytes())
    ca_cert = pki.load_certificate((root / "iris/ca.crt").read_bytes())
    issued = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=815)
    sans = pki.subject_alt_names(HOSTS["cloud1"], "cloud1")
    key, cert = pki.issue_certificate(ca_key, ca_cert, "cloud1", sans, 825, issued, ("server", "client"))
    (root / "iris/hosts/cloud1.crt").write_bytes(pki.certificate_pem(cert))
    (root / "iris/hosts/cloud1.key").write_bytes(pki.private_key_pem(key))
    os.chmod(root / "iris/hosts", 0o755)

    result = run_module("pipeline_credentials", arguments(root))
    assert result.get("failed") is not True, result
    changes = {
        Path(change["path"]).relative_to(root).as_posix(): change["change"] for change in result["changes"]
    }
    assert changes["iris/hosts"] == "mode 0755 -> 0700"
    assert changes["iris/hosts/edge1.crt"].startswith("new certificate (damaged: not a PEM private key")
    assert changes["iris/hosts/cloud1.crt"].startswith("new certificate (expires on ")
    assert changes["_broker/b1.crt"].startswith("new certificate (damaged: not a PEM certificate")
    assert changes["iris/mqtt/mlp-iris-iris-clf.password"] == "new password"
    assert changes["iris/token"] == "new token (the file held no usable token)"
    assert set(changes) == {
        "iris/hosts", "iris/hosts/edge1.crt", "iris/hosts/edge1.key", "iris/hosts/cloud1.crt",
        "iris/hosts/cloud1.key", "_broker/b1.crt", "_broker/b1.key", "iris/mqtt/mlp-iris-iris-clf.password",
        "iris/mqtt/passwd", "iris/token",
    }  # fmt: skip
    # The other users' lines in passwd are kept as they were.
    old_lines = before["iris/mqtt/passwd"][1].decode().splitlines()
    new_lines = (root / "iris/mqtt/passwd").read_text().splitlines()
    assert [old == new for old, new in zip(old_lines, new_lines, strict=True)] == [True, False, True]
    assert {rel: entry[0] for rel, entry in snapshot(root).items()} == TREE
    assert run_module("pipeline_credentials", arguments(root))["changed"] is False


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture()
def user_ca(tmp_path: Path) -> Path:
    """An RSA CA made by the openssl command line, as a user would bring one."""
    folder = tmp_path / "user-ca"
    folder.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "400", "-subj", "/O=Example/CN=Example CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)  # fmt: skip
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.crt",
            "-days", "400", "-subj", "/CN=Other", "-addext", "basicConstraints=critical,CA:FALSE",
            cwd=folder)  # fmt: skip
    return folder


def test_the_user_ca_signs_the_certificates(run_module, tmp_path, user_ca) -> None:
    root = tmp_path / "credentials"
    args = arguments(root, ca_cert_file=str(user_ca / "ca.crt"), ca_key_file=str(user_ca / "ca.key"))
    result = run_module("pipeline_credentials", args)
    assert result.get("failed") is not True, result
    user_cert = pki.load_certificate((user_ca / "ca.crt").read_bytes())
    assert pki.load_certificate((root / "iris/ca.crt").read_bytes()) == user_cert
    assert stat.S_IMODE((root / "iris/ca.key").stat().st_mode) == 0o600
    for rel, purpose in (("iris/hosts/edge1.crt", "sslserver"), ("iris/client.crt", "sslclient")):
        subprocess.run(
            ["openssl", "verify", "-CAfile", str(user_ca / "ca.crt"), "-purpose", purpose, str(root / rel)],
            check=True, capture_output=True,
        )  # fmt: skip
    assert run_module("pipeline_credentials", args)["changed"] is False
    # The brokers' CA is never the user's: one broker serves several pipelines.
    assert pki.load_certificate((root / "_broker/ca.crt").read_bytes()) != user_cert
    # Changing from the generated CA to the user's re-issues every host certificate.
    other_root = tmp_path / "other"
    run_module("pipeline_credentials", arguments(other_root))
    switched = run_module("pipeline_credentials", dict(args, path=str(other_root)))
    changed = {Path(change["path"]).relative_to(other_root).as_posix() for change in switched["changes"]}
    assert {"iris/ca.crt", "iris/ca.key", "iris/hosts/edge1.crt", "iris/client.crt"} <= changed
    assert "_broker/b1.crt" not in changed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ca_cert_file": "{ca}/ca.crt", "ca_key_file": "{ca}/other.key"},
         "ca_key_file: {ca}/other.key is not the key of the certificate in ca_cert_file {ca}/ca.crt"),
        ({"ca_cert_file": "{ca}/ca.crt"}, "parameters are required together: ca_cert_file, ca_key_file"),
        ({"ca_cert_file": "{ca}/missing.crt", "ca_key_file": "{ca}/ca.key"},
         "ca_cert_file: cannot read {ca}/missing.crt: No such file or directory"),
        ({"ca_cert_file": "{ca}/ca.crt", "ca_key_file": "{ca}"},
         "ca_key_file: cannot read {ca}: Is a directory"),
        ({"ca_cert_file": "{ca}/ca.key", "ca_key_file": "{ca}/ca.key"},
         "ca_cert_file: {ca}/ca.key: not a PEM certificate"),
        ({"ca_cert_file": "{ca}/ca.crt", "ca_key_file": "{ca}/ca.crt"},
         "ca_key_file: {ca}/ca.crt: not a PEM private key"),
        ({"ca_cert_file": "{ca}/other.crt", "ca_key_file": "{ca}/other.key"},
         "ca_cert_file: {ca}/other.crt is not a CA certificate"),
        ({"token_file": "{ca}/empty"}, "token_file: {ca}/empty is empty"),
        ({"token_file": "{ca}/short"},
         "token_file: the token in {ca}/short must be at least 16 characters long"),
        ({"token_file": "{ca}/nothing-here"},
         "token_file: cannot read {ca}/nothing-here: No such file or directory"),
        ({"pipeline": "Iris"}, "pipeline: 'Iris' must match ^[a-z][a-z0-9-]{0,30}$"),
        ({"hosts": {"../edge1": "10.0.0.5"}}, "hosts: inventory name '../edge1' cannot name a file"),
        ({"broker_hosts": {".b1": "10.0.0.5"}}, "broker_hosts: inventory name '.b1' cannot name a file"),
        ({"hosts": {"edge1": "a" * 64 + ".example"}}, "hosts.edge1: "),
        ({"validity_days": 30}, "validity_days: 30 must be more than 30"),
        ({"mqtt_services": [dict(SERVICES[0], output_topic="mlpacker/#")]},
         "mqtt_services[0].output_topic: 'mlpacker/#' must be a plain topic"),
        ({"mqtt_services": [{"id": "iris-scale"}]}, "mqtt_services[0].input_topic: a topic is required"),
        ({"mqtt_services": [dict(SERVICES[0], output_topic="mlpacker/iris/in")]},
         "mqtt_client_topics: the client's input and output topic cannot be derived from mqtt_services"),
        ({"mqtt_client_topics": {"input": "i", "output": "o"}}, "missing required arguments: error"),
        ({"rotate": "sometimes"}, "rotate"),
    ],
)  # fmt: skip
def test_errors_name_the_option_and_the_file(run_module, tmp_path, user_ca, overrides, message) -> None:
    (user_ca / "empty").write_text("\n\n")
    (user_ca / "short").write_text("abc\n")

    def located(value: Any) -> Any:
        return value.replace("{ca}", str(user_ca)) if isinstance(value, str) else value

    root = tmp_path / "credentials"
    result = run_module(
        "pipeline_credentials", arguments(root, **{k: located(v) for k, v in overrides.items()})
    )
    assert result["failed"] is True
    assert located(message) in result["msg"], result["msg"]
    assert "Traceback" not in json.dumps(result)
    assert not (root / "iris").exists()


def test_the_user_token_and_its_change(run_module, tmp_path) -> None:
    root = tmp_path / "credentials"
    token_file = tmp_path / "vault-token"
    token_file.write_text("first-user-token-0123456789\nignored second line\n")
    args = arguments(root, token_file=str(token_file))
    assert run_module("pipeline_credentials", args)["changed"] is True
    assert (root / "iris/token").read_text() == "first-user-token-0123456789\n"
    rotated = run_module("pipeline_credentials", dict(args, rotate=True))
    assert rotated["changed"] is True and str(root / "iris/token") not in [
        c["path"] for c in rotated["changes"]
    ]
    assert (root / "iris/token").read_text() == "first-user-token-0123456789\n"
    token_file.write_text("second-user-token-0123456789\n")
    changed = run_module("pipeline_credentials", args)
    # A changed token waits in token.pending, as a rotated one does, until the deploy promotes it.
    assert [change["path"] for change in changed["changes"]] == [str(root / "iris/token.pending")]
    assert (root / "iris/token").read_text() == "first-user-token-0123456789\n"
    pending = "second-user-token-0123456789\nfirst-user-token-0123456789\n"
    assert (root / "iris/token.pending").read_text() == pending
    assert "user-token" not in json.dumps(changed)
    assert run_module("pipeline_credentials", args)["changed"] is False
    assert run_module("pipeline_credentials", dict(args, promote_token=True))["changed"] is True
    assert (root / "iris/token").read_text() == pending and not (root / "iris/token.pending").exists()
    assert run_module("pipeline_credentials", args)["changed"] is False


def test_a_pending_token_is_carried_on_and_promoted_once(run_module, tmp_path) -> None:
    root = tmp_path / "credentials"
    run_module("pipeline_credentials", arguments(root))
    old = (root / "iris/token").read_text()
    run_module("pipeline_credentials", arguments(root, rotate=True))
    pending = (root / "iris/token.pending").read_text()
    assert pending.splitlines()[1:] == old.splitlines()

    # A deploy that stopped before its end: the next run, rotating again or not, carries the same token on.
    for again in (arguments(root), arguments(root, rotate=True)):
        result = run_module("pipeline_credentials", again)
        assert result["service_token_file"] == str(root / "iris/token.pending"), result
        assert (root / "iris/token.pending").read_text() == pending
        assert (root / "iris/token").read_text() == old
        assert str(root / "iris/token.pending") not in [change["path"] for change in result["changes"]]

    # Check mode tells what the promotion would do and writes nothing.
    checked = run_module("pipeline_credentials", arguments(root, promote_token=True), check_mode=True)
    assert checked["changed"] is True
    assert [change["path"] for change in checked["changes"]] == [
        str(root / "iris/token"), str(root / "iris/token.pending")
    ]  # fmt: skip
    assert (root / "iris/token").read_text() == old and (root / "iris/token.pending").exists()

    promoted = run_module("pipeline_credentials", arguments(root, promote_token=True))
    assert promoted.get("failed") is not True, promoted
    assert (promoted["changed"], promoted["token_file"]) == (True, str(root / "iris/token"))
    assert (root / "iris/token").read_text() == pending and not (root / "iris/token.pending").exists()
    assert stat.S_IMODE((root / "iris/token").stat().st_mode) == 0o600
    assert_no_secret(promoted, root)
    assert run_module("pipeline_credentials", arguments(root, promote_token=True))["changed"] is False
    after = run_module("pipeline_credentials", arguments(root))
    assert (after["changed"], after["token_pending"]) == (False, False)
    assert after["service_token_file"] == str(root / "iris/token")

    # A promotion stopped between its two steps leaves a pending file equal to the token: the next run
    # removes it, and the services get the token file.
    (root / "iris/token.pending").write_text(pending)
    os.chmod(root / "iris/token.pending", 0o600)
    cleaned = run_module("pipeline_credentials", arguments(root))
    assert [change["path"] for change in cleaned["changes"]] == [str(root / "iris/token.pending")]
    assert cleaned["service_token_file"] == str(root / "iris/token")
    assert not (root / "iris/token.pending").exists()

    # A pending file that holds no token is refused by name, and the token file is left alone.
    (root / "iris/token.pending").write_text("\n")
    refused = run_module("pipeline_credentials", arguments(root, promote_token=True))
    assert refused.get("failed") is True
    assert refused["msg"].startswith(f"promote_token: {root / 'iris/token.pending'} holds no usable token")
    assert (root / "iris/token").read_text() == pending


def test_diff_lists_file_names_never_contents(run_module, tmp_path, monkeypatch) -> None:
    root = tmp_path / "credentials"
    monkeypatch.setenv("ANSIBLE_DIFF_ALWAYS", "1")
    first = run_module("pipeline_credentials", arguments(root))
    assert first["diff"]["before"] == ""
    assert first["diff"]["after"].splitlines()[:3] == [".: created", "iris: created", "iris/hosts: created"]
    assert "iris/hosts/edge1.key: new key (missing)" in first["diff"]["after"].splitlines()
    rotated = run_module("pipeline_credentials", arguments(root, rotate=True))
    assert "iris/hosts/edge1.key\n" in rotated["diff"]["before"]
    assert (
        "iris/token.pending: rotated (the previous token is line 2); pending until every service accepts it"
        in rotated["diff"]["after"].splitlines()
    )
    for result in (first, rotated):
        assert_no_secret(result, root)
    assert "diff" not in run_module("pipeline_credentials", arguments(root))


def test_a_rest_pipeline_gets_no_mqtt_and_no_broker(run_module, tmp_path) -> None:
    root = tmp_path / "credentials"
    result = run_module("pipeline_credentials", {"path": str(root), "pipeline": "iris", "hosts": {"h1": ""}})
    assert (result["mqtt"], result["broker"]) == (None, None)
    assert sorted(snapshot(root)) == [
        ".", "iris", "iris/ca.crt", "iris/ca.key", "iris/client.crt", "iris/client.key", "iris/hosts",
        "iris/hosts/h1.crt", "iris/hosts/h1.key", "iris/token",
    ]  # fmt: skip
    sans = pki.certificate_sans(pki.load_certificate((root / "iris/hosts/h1.crt").read_bytes()))
    assert sans == [("dns", "h1"), ("dns", "localhost"), ("ip", "127.0.0.1")]


def test_it_runs_on_the_controller_whatever_host_the_task_targets(tmp_path) -> None:
    # The target is unreachable (TEST-NET-1, nothing listens): no connection is made, nothing is sent there.
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump(
        {"all": {"hosts": {"edge1": {"ansible_host": "192.0.2.1", "ansible_connection": "ssh",
                                     "ansible_ssh_common_args": "-o ConnectTimeout=1"}}}}
    ))  # fmt: skip
    root = tmp_path / "credentials"
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_DIR), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_PYTHON_INTERPRETER=sys.executable)  # fmt: skip
    completed = subprocess.run(
        [str(ANSIBLE), "edge1", "-i", str(inventory), "-m", "mlpacker.core.pipeline_credentials",
         "-a", json.dumps({"path": str(root), "pipeline": "iris", "hosts": {"edge1": "192.0.2.1"}})],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    result = json.loads(completed.stdout)["plays"][0]["tasks"][0]["hosts"]["edge1"]
    assert result.get("unreachable") is not True and result.get("failed") is not True, result
    assert (root / "iris/hosts/edge1.crt").is_file()


class TlsServer:
    """A real TLS server on 127.0.0.1 with the given certificate that answers one line per connection."""

    def __init__(self, cert_file: str, key_file: str, client_ca: str | None = None) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert_file, key_file)
        if client_ca:
            self.context.load_verify_locations(client_ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                connection = self.listener.accept()[0]
            except OSError:
                return
            try:
                with self.context.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(b"hello\n")
            except (ssl.SSLError, OSError):
                continue

    def ask(self, server_name: str, ca_file: str, client: dict[str, str] | None = None) -> bytes:
        context = ssl.create_default_context(cafile=ca_file)
        if client:
            context.load_cert_chain(client["cert_file"], client["key_file"])
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                return tls.recv(100)

    def close(self) -> None:
        self.listener.close()


def test_a_client_that_trusts_only_the_pipeline_ca_reaches_a_host(run_module, tmp_path) -> None:
    root = tmp_path / "credentials"
    made = run_module("pipeline_credentials", arguments(root, hosts={"edge1": "127.0.0.1"}))
    server = TlsServer(**made["hosts"]["edge1"])
    try:
        for name in ("127.0.0.1", "edge1", "localhost"):
            assert server.ask(name, made["ca_file"]) == b"hello\n"
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            server.ask("127.0.0.1", made["broker"]["ca_file"])
        with pytest.raises(ssl.SSLCertVerificationError, match="match"):
            server.ask("cloud1", made["ca_file"])
    finally:
        server.close()
    mutual = TlsServer(**made["hosts"]["edge1"], client_ca=made["ca_file"])
    try:
        assert mutual.ask("edge1", made["ca_file"], client=made["client"]) == b"hello\n"
        with pytest.raises((ssl.SSLError, ConnectionError)):
            # without a client certificate the server ends the handshake (TLS 1.3: on the first read)
            mutual.ask("edge1", made["ca_file"]) or pytest.fail("answered without a client certificate")
    finally:
        mutual.close()


def test_the_documentation_lists_the_options_of_the_argument_spec() -> None:
    from ansible_collections.mlpacker.core.plugins.action.pipeline_credentials import ARGUMENT_SPEC
    from ansible_collections.mlpacker.core.plugins.modules import pipeline_credentials

    documented = yaml.safe_load(pipeline_credentials.DOCUMENTATION)["options"]
    assert set(documented) == set(ARGUMENT_SPEC)
    for name, spec in ARGUMENT_SPEC.items():
        assert documented[name]["type"] == spec["type"], name
        assert documented[name].get("default") == spec.get("default"), name
        assert documented[name].get("required", False) == spec.get("required", False), name
        assert documented[name].get("elements") == spec.get("elements"), name
        if "options" in spec:
            assert set(documented[name]["suboptions"]) == set(spec["options"]), name
