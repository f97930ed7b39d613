# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The runtime configuration of one service (its ``config.json``), from the plan and the deploy settings.

Both deploy roles write it (mlpacker.core.service into the release, mlpacker.core.service_container into the
image's build context) through the ``mlpacker.core.runtime_config`` filter, so the two cannot drift apart. The
format is the contract of docs/architecture.md ("Runtime configuration"); ``mlpacker-runtime check``
validates the written file before any switch. Fields the roles do not write take the runtime's defaults.
"""

from __future__ import annotations

import os
from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean
from ansible_collections.mlpacker.core.plugins.module_utils.broker import normalise_tls
from ansible_collections.mlpacker.core.plugins.module_utils.request_limits import (
    RequestLimitsError,
    rest_limits,
    stream_limits,
)
from ansible_collections.mlpacker.core.plugins.module_utils.resilience import (
    ResilienceError,
    rest_keys,
    stream_keys,
)
from ansible_collections.mlpacker.core.plugins.module_utils.runtime_contract import (
    BIND_ALL,
    DEFAULT_BROKER_PORT,
    MODES,
    OUTPUT_PREDICTIONS,
)
from ansible_collections.mlpacker.core.plugins.module_utils.service_secrets import (
    SECRET_NAMES,
    mqtt_share_group,
    mqtt_username,
)


class RuntimeConfigError(ValueError):
    """An input cannot make a runtime configuration; the message names the field and the value."""


def plain(value: Any) -> Any:
    """A copy made of plain dicts and lists, so the config shares nothing with its inputs."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def as_int(field: str, value: Any) -> int:
    if isinstance(value, bool):
        raise RuntimeConfigError(f"{field}: expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RuntimeConfigError(f"{field}: expected an integer, got {value!r}") from None


def as_bool(field: str, value: Any) -> bool:
    try:
        return boolean(value, strict=True)
    except TypeError:
        raise RuntimeConfigError(f"{field}: expected true or false, got {value!r}") from None


def stage_config(stage: dict[str, Any], index: int, release_dir: str) -> dict[str, Any]:
    """One entry of ``stages``, the artifact as shipped into the release: ``artifacts/<stage><extension>``."""
    field = f"stages[{index}]"
    for key in ("name", "format", "method"):
        if key not in stage:
            raise RuntimeConfigError(f"{field}.{key}: required, got {stage!r}")
    artifact = stage.get("artifact")
    return {
        "name": stage["name"],
        "artifact": (
            "{}/artifacts/{}{}".format(release_dir, stage["name"], os.path.splitext(artifact)[1])
            if artifact
            else None
        ),
        "format": stage["format"],
        "function": stage.get("function"),
        "method": stage["method"],
        "sha256": stage.get("sha256"),
        "versions": plain(stage.get("versions", {})),
        "trusted_types": plain(stage.get("trusted_types", [])),
        # What a request row holds (docs/architecture.md): checked before the first stage, in /openapi.json.
        "input_signature": plain(stage.get("input_signature")),
    }


def as_bind(value: Any) -> Any:
    """One listen address (a string) or several (a list): the runtime listens on each."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, str) and item for item in value):
        return value[0] if len(value) == 1 else list(value)
    raise RuntimeConfigError(f"bind: expected an address or a list of addresses, got {value!r}")


class SecretPaths:
    """Where the shipped credential files are (``secrets_dir/<name>``) by kind; None: not shipped."""

    def __init__(self, secrets: list[dict[str, Any]] | None, secrets_dir: str | None):
        kinds = set()
        for index, entry in enumerate(secrets or []):
            if not isinstance(entry, dict) or entry.get("kind") not in SECRET_NAMES:
                raise RuntimeConfigError(
                    f"secrets[{index}]: expected an entry of service_secrets, got {entry!r}"
                )
            kinds.add(entry["kind"])
        if kinds and not secrets_dir:
            raise RuntimeConfigError("secrets_dir: required when secrets are given")
        self.kinds = kinds
        self.secrets_dir = secrets_dir

    def path(self, kind: str) -> str | None:
        return f"{self.secrets_dir}/{SECRET_NAMES[kind]}" if kind in self.kinds else None

    def security_section(self) -> dict[str, Any]:
        return {
            "tls": {
                "cert_file": self.path("cert"),
                "key_file": self.path("key"),
                "ca_file": self.path("ca"),
                "client_ca_file": self.path("client_ca"),
            },
            "auth": {"token_file": self.path("token")},
        }


def rest_section(service: dict[str, Any], rest_workers: Any, bind: Any = BIND_ALL) -> dict[str, Any]:
    return {
        "bind": as_bind(bind),
        "port": as_int("service.port", service.get("port")),
        "workers": as_int("rest_workers", rest_workers),
        "next_hops": plain(service.get("next_hops", [])),
    }


def stream_section(
    service: dict[str, Any],
    broker: dict[str, Any],
    bind: Any = BIND_ALL,
    secrets: SecretPaths | None = None,
    mqtt_username: Any = None,
) -> dict[str, Any]:
    """The MQTT settings: the broker (TLS fields left unset or null keep their defaults) and the topics.

    With ``secrets``, the password and the broker's CA and client certificate are files in the service's
    secrets folder, so the configuration itself holds no secret.
    """
    tls = plain(normalise_tls(broker.get("tls")))
    username = broker.get("username")
    password = broker.get("password")
    password_file = None
    if secrets is not None:
        for key, kind in (
            ("ca_file", "broker_ca"),
            ("cert_file", "broker_client_cert"),
            ("key_file", "broker_client_key"),
        ):
            tls[key] = secrets.path(kind)
        password_file = secrets.path("mqtt_password")
        password = None
        username = mqtt_username if mqtt_username is not None else username
    section_broker = {
        "host": broker.get("host", ""),
        "port": as_int("broker.port", broker.get("port", DEFAULT_BROKER_PORT)),
        "username": username,
        "password": password,
        "tls": tls,
    }
    if password_file:
        section_broker["password_file"] = password_file
    return {
        "broker": section_broker,
        "input_topic": service.get("input_topic", ""),
        "output_topic": service.get("output_topic", ""),
        "output_kind": service.get("output_kind") or OUTPUT_PREDICTIONS,
        "error_topic": service.get("error_topic"),
        "client_id": service.get("client_id"),
        "share_group": service.get("share_group"),
        "health_bind": as_bind(bind),
        "health_port": as_int("service.port", service.get("port")),
    }


def runtime_config(
    service: dict[str, Any],
    stages: list[dict[str, Any]],
    *,
    pipeline: str,
    mode: str,
    release_dir: str,
    code_dir: str | None = None,
    broker: dict[str, Any] | None = None,
    rest_workers: Any = 2,
    allow_version_mismatch: Any = False,
    bind: Any = BIND_ALL,
    secrets: list[dict[str, Any]] | None = None,
    secrets_dir: str | None = None,
    credentials: dict[str, Any] | None = None,
    request_limits: dict[str, Any] | None = None,
    resilience: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The runtime configuration of ``service`` (one entry of the plan's ``services``).

    ``stages`` are the service's stages in order (plan stage + ``sha256`` and ``versions``), ``release_dir``
    the release folder on the host (or the same path inside the image), ``code_dir`` the controller's code
    folder of function stages (shipped to ``<release_dir>/code``) or None, ``broker`` the resolved broker with
    its password (stream mode). REST mode writes the ``rest`` section, stream mode the ``stream`` section.
    ``bind`` is where the service listens (an address or a list); ``secrets`` (mlpacker.core.service_secrets'
    entries) the credential files shipped to ``secrets_dir``: the ``security`` section and the broker's
    password, CA and client certificate point at them; on the managed broker the service connects as its own
    user of ``credentials`` (what mlpacker.core.pipeline_credentials returned). ``request_limits`` (the
    ``mlpacker_request_limits`` setting) sets the limits of the ``rest`` or ``stream`` section; None leaves
    them at the runtime's defaults. ``resilience`` (what mlpacker.core.resilience_settings returned) sets the
    next-hop timeout, retry and ejection of the ``rest`` section or the refusals of the ``stream`` section;
    None leaves them at the runtime's defaults.
    """
    if mode not in MODES:
        raise RuntimeConfigError("mode: {!r} is not one of {}".format(mode, ", ".join(MODES)))
    if not isinstance(service, dict) or "id" not in service:
        raise RuntimeConfigError(f"service: expected a plan service with an 'id', got {service!r}")
    if not isinstance(stages, list) or not all(isinstance(stage, dict) for stage in stages):
        raise RuntimeConfigError(f"stages: expected a list of stage dicts, got {stages!r}")
    if broker is not None and not isinstance(broker, dict):
        raise RuntimeConfigError(f"broker: expected a dict, got {broker!r}")
    config: dict[str, Any] = {
        "pipeline": pipeline,
        "service": service["id"],
        "mode": mode,
        "code_dir": release_dir + "/code" if code_dir is not None else None,
        "allow_version_mismatch": as_bool("allow_version_mismatch", allow_version_mismatch),
        "stages": [stage_config(stage, index, release_dir) for index, stage in enumerate(stages)],
    }
    paths = SecretPaths(secrets, secrets_dir)
    try:
        limits = {
            "rest": rest_limits(request_limits) if request_limits is not None else {},
            "stream": stream_limits(request_limits) if request_limits is not None else {},
        }
    except RequestLimitsError as exc:
        raise RuntimeConfigError(str(exc)) from None
    try:
        fault_keys = {
            "rest": rest_keys(resilience) if resilience is not None else {},
            "stream": stream_keys(resilience) if resilience is not None else {},
        }
    except ResilienceError as exc:
        raise RuntimeConfigError(str(exc)) from None
    if mode == "rest":
        config["rest"] = {**rest_section(service, rest_workers, bind), **limits["rest"], **fault_keys["rest"]}
    else:
        config["stream"] = stream_section(
            service,
            broker or {},
            bind,
            paths if secrets is not None else None,
            mqtt_username(service, broker or {}, credentials),
        )
        config["stream"]["share_group"] = mqtt_share_group(service, broker or {}, credentials)
        config["stream"].update(limits["stream"])
        config["stream"].update(fault_keys["stream"])
    if paths.kinds:
        config["security"] = paths.security_section()
    return config
