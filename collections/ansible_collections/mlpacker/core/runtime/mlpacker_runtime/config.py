"""Runtime configuration: load the JSON file, apply env overrides, fill defaults, validate.

The format is the contract in docs/architecture.md ("Runtime configuration"). The validated config is a
plain dict with every default filled in, so the rest of the runtime never has to guess.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlpacker_runtime import input_signature
from mlpacker_runtime.outliers import EjectionPolicy

FORMATS = ("joblib", "pickle", "skops", "onnx", "function")
METHODS = ("predict", "predict_proba", "transform", "decision_function", "call")
MODES = ("rest", "stream")
OUTPUT_KINDS = ("instances", "predictions")
# stream.dedup_window remembers a 16-byte digest per id (about 100 bytes with the dict): 1e6 ids ~ 100 MB.
MAX_DEDUP_WINDOW = 1_000_000
EXTENSION_FORMATS = {
    ".joblib": "joblib",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".skops": "skops",
    ".onnx": "onnx",
}
ENV_PREFIX = "MLPACKER_"
log = logging.getLogger("mlpacker_runtime.config")
# MLPACKER_RUNTIME_* vars are the runtime's own settings (config path, log level), not config overrides.
ENV_RESERVED_PREFIX = "MLPACKER_RUNTIME_"

DEFAULTS: dict[str, Any] = {
    "pipeline": None,
    "service": None,
    "mode": "rest",
    "code_dir": None,
    "allow_version_mismatch": False,
    "stages": [],
    "rest": {
        "bind": "0.0.0.0",
        "port": 8000,
        "workers": 2,
        "threads": 4,
        "keepalive_s": 30,
        "max_body_bytes": 10 * 1024 * 1024,
        # Rows one request may hold (more: 413 naming rest.max_instances).
        "max_instances": 10000,
        # The longest a client may stay silent while sending its request (TLS handshake, headers, body):
        # past it the request gets 408 and the connection is closed.
        "body_read_timeout_s": 10,
        # Connections one worker holds at most (gunicorn's worker_connections); the rest wait in the backlog.
        "max_connections": 100,
        "next_hops": [],
        "hop_timeout_s": 10.0,
        # A next-hop replica failing this many requests in a row leaves the rotation for base_s, doubled on
        # each ejection in a row up to max_s, and is probed before it comes back (outliers.py). 0: never.
        "hop_ejection": dataclasses.asdict(EjectionPolicy()),
        # Whether a hop request that timed out is tried on the next replica (doubles the wait; predictions
        # are idempotent). Connection failures and 503s always are.
        "hop_retry_timeouts": False,
    },
    "stream": {
        "broker": {
            "host": "127.0.0.1",
            "port": 1883,
            "username": None,
            "password": None,
            # The password read from a file at start, so the config file need hold no secret.
            "password_file": None,
            "tls": {
                "enabled": False,
                "ca_file": None,
                "cert_file": None,
                "key_file": None,
                "insecure": False,
            },
        },
        "input_topic": None,
        "output_topic": None,
        "error_topic": None,
        "output_kind": "predictions",
        "client_id": None,
        "share_group": None,
        "qos": 1,
        "session_expiry_s": 86400,
        "keepalive_s": 30,
        "drain_timeout_s": 10.0,
        # Publishes the broker refuses in a row (an ACL, a quota) before /health/ready says not ready.
        "max_consecutive_refusals": 10,
        # Ids of the last N results published: a message repeating one is dropped (acknowledged,
        # counted). 0: off. Per process, lost at restart (stream/consumer.py, RecentIds).
        "dedup_window": 0,
        # Larger messages are not parsed: they go to the error topic truncated, with their size.
        "max_message_bytes": 1024 * 1024,
        "health_bind": "0.0.0.0",
        "health_port": 8000,
    },
    # docs/security.md: TLS of the service's HTTP server and of its next hops, bearer token auth.
    "security": {
        "tls": {
            "cert_file": None,
            "key_file": None,
            "ca_file": None,
            "client_ca_file": None,
            "client_cert_file": None,
            "client_key_file": None,
        },
        "auth": {"token_file": None},
    },
}
STAGE_DEFAULTS: dict[str, Any] = {
    "name": None,
    "artifact": None,
    "format": None,
    "function": None,
    "method": None,
    "sha256": None,
    "versions": {},
    "trusted_types": [],
    # What the first stage takes, per column (mlpacker_runtime.input_signature); null: not recorded.
    "input_signature": None,
}


class ConfigError(Exception):
    """Invalid configuration; ``problems`` holds one line per bad field, each naming the field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid runtime configuration:\n" + "\n".join(f"  {p}" for p in problems))


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read, override from the environment, fill defaults and validate; raise ConfigError on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"config file {str(path)!r}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [f"config file {str(path)!r}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"]
        ) from exc
    return build_config(raw, environ=os.environ if environ is None else environ)


def build_config(raw: Any, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Like load_config for an already parsed document (used by tests and the Flask factory)."""
    if not isinstance(raw, dict):
        raise ConfigError([f"<root>: expected a JSON object, got {type(raw).__name__}"])
    merged = _merge_defaults(DEFAULTS, raw)
    problems: list[str] = []
    if environ:
        problems += apply_env_overrides(merged, environ)
    problems += _validate(merged)
    if problems:
        raise ConfigError(problems)
    return merged


def _merge_defaults(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(defaults)
    for key, value in given.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = _merge_defaults(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _parse_env_value(text: str) -> Any:
    # Values are JSON when they parse (numbers, booleans, null, lists), else plain strings.
    try:
        return json.loads(text)
    except ValueError:
        return text


def _find_key_path(section: dict[str, Any], parts: list[str]) -> list[str] | None:
    """Match MLPACKER_ suffix parts (split on '_') to a key path, since keys contain '_' themselves."""
    for cut in range(len(parts), 0, -1):
        key = "_".join(parts[:cut])
        if key not in section:
            continue
        if cut == len(parts):
            return [key]
        if isinstance(section[key], dict):
            rest = _find_key_path(section[key], parts[cut:])
            if rest is not None:
                return [key, *rest]
    return None


def apply_env_overrides(config: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Apply MLPACKER_<SECTION>_<FIELD> overrides in place; return problems (values are validated later)."""
    problems = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name.startswith(ENV_RESERVED_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("_")
        key_path = _find_key_path(DEFAULTS, parts)
        if key_path == ["stages"]:
            problems.append(f"env {name}: stages cannot be overridden from the environment")
            continue
        if key_path is None:
            # Other MLPacker tools may export MLPACKER_* variables too: warn, do not refuse to start.
            log.warning("env %s does not name a runtime configuration field; ignored", name)
            continue
        target = config
        for key in key_path[:-1]:
            target = target[key]
        target[key_path[-1]] = _parse_env_value(environ[name])
    return problems


# ---------------------------------------------------------------- validation


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check(problems: list[str], field: str, value: Any, kind: str, *, nullable: bool = False) -> bool:
    if value is None and nullable:
        return True
    ok = {
        "str": isinstance(value, str) and value != "",
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list),
        "dict": isinstance(value, dict),
    }[kind]
    if not ok:
        wanted = "a non-empty string" if kind == "str" else f"a {kind}"
        problems.append(f"{field}: expected {wanted}{' or null' if nullable else ''}, got {value!r}")
    return ok


def _check_choice(problems: list[str], field: str, value: Any, choices: tuple[str, ...]) -> bool:
    if value not in choices:
        problems.append(f"{field}: {value!r} is not one of {', '.join(choices)}")
        return False
    return True


def _check_port(problems: list[str], field: str, value: Any) -> None:
    if _check(problems, field, value, "int") and not 0 <= value <= 65535:
        problems.append(f"{field}: {value} is not a TCP port (0-65535)")


def _check_positive(problems: list[str], field: str, value: Any, kind: str = "int") -> None:
    if _check(problems, field, value, kind) and value <= 0:
        problems.append(f"{field}: must be > 0, got {value!r}")


def _check_bind(problems: list[str], field: str, value: Any) -> None:
    """One listen address, or a list of them (the deploy's default: the host's address plus loopback)."""
    if not isinstance(value, list):
        _check(problems, field, value, "str")
        return
    if not value:
        problems.append(f"{field}: expected an address or a non-empty list of addresses, got []")
    for index, address in enumerate(value):
        _check(problems, f"{field}[{index}]", address, "str")
    if len(set(map(str, value))) != len(value):
        problems.append(f"{field}: an address is listed twice: {value!r}")


def bind_addresses(bind: str | list[str]) -> list[str]:
    """The addresses of a validated rest.bind or stream.health_bind."""
    return list(bind) if isinstance(bind, list) else [bind]


def _check_unknown_keys(
    problems: list[str], prefix: str, given: dict[str, Any], known: dict[str, Any]
) -> None:
    for key in given:
        if key not in known:
            problems.append(f"{prefix}{key}: unknown field (known: {', '.join(sorted(known))})")


def _validate(config: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    _check_unknown_keys(problems, "", config, DEFAULTS)
    _check(problems, "pipeline", config["pipeline"], "str")
    _check(problems, "service", config["service"], "str")
    _check_choice(problems, "mode", config["mode"], MODES)
    _check(problems, "code_dir", config["code_dir"], "str", nullable=True)
    _check(problems, "allow_version_mismatch", config["allow_version_mismatch"], "bool")
    _validate_stages(problems, config)
    if _check(problems, "rest", config["rest"], "dict"):
        _validate_rest(problems, config["rest"])
    if _check(problems, "stream", config["stream"], "dict"):
        _validate_stream(problems, config["stream"], required=config["mode"] == "stream")
    if _check(problems, "security", config["security"], "dict"):
        _validate_security(problems, config["security"])
    return problems


def _validate_stages(problems: list[str], config: dict[str, Any]) -> None:
    stages = config["stages"]
    if not _check(problems, "stages", stages, "list"):
        return
    if not stages:
        problems.append("stages: at least one stage is required")
        return
    seen: set[str] = set()
    for index, given in enumerate(stages):
        field = f"stages[{index}]"
        if not isinstance(given, dict):
            problems.append(f"{field}: expected an object, got {given!r}")
            continue
        _check_unknown_keys(problems, f"{field}.", given, STAGE_DEFAULTS)
        stage = {**copy.deepcopy(STAGE_DEFAULTS), **given}
        stages[index] = stage
        if _check(problems, f"{field}.name", stage["name"], "str"):
            if stage["name"] in seen:
                problems.append(f"{field}.name: duplicate stage name {stage['name']!r}")
            seen.add(stage["name"])
        _check(problems, f"{field}.artifact", stage["artifact"], "str", nullable=True)
        _check(problems, f"{field}.function", stage["function"], "str", nullable=True)
        if stage["format"] is None:
            stage["format"] = _infer_format(stage)
            if stage["format"] is None:
                problems.append(
                    f"{field}.format: not given and not inferable from artifact {stage['artifact']!r} "
                    f"(use one of {', '.join(FORMATS)})"
                )
        elif _check_choice(problems, f"{field}.format", stage["format"], FORMATS):
            pass
        if stage["format"] == "function":
            if not stage["function"] or not _is_function_ref(stage["function"]):
                problems.append(
                    f"{field}.function: function stages need 'package.module:callable', "
                    f"got {stage['function']!r}"
                )
            if not config["code_dir"]:
                problems.append(f"code_dir: required because {field} is a function stage")
        elif stage["format"] in FORMATS and not stage["artifact"]:
            problems.append(f"{field}.artifact: required for format {stage['format']!r}")
        if stage["method"] is None:
            stage["method"] = _default_method(stage, is_last=index == len(stages) - 1)
        else:
            _check_choice(problems, f"{field}.method", stage["method"], METHODS)
        if _check(problems, f"{field}.sha256", stage["sha256"], "str", nullable=True) and stage["sha256"]:
            digest = stage["sha256"].lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                problems.append(f"{field}.sha256: expected 64 hex digits, got {stage['sha256']!r}")
            stage["sha256"] = digest
        if _check(problems, f"{field}.versions", stage["versions"], "dict"):
            for dist, version in stage["versions"].items():
                _check(problems, f"{field}.versions.{dist}", version, "str")
        input_signature.validate(problems, f"{field}.input_signature", stage["input_signature"])
        if _check(problems, f"{field}.trusted_types", stage["trusted_types"], "list"):
            for pos, name in enumerate(stage["trusted_types"]):
                _check(problems, f"{field}.trusted_types[{pos}]", name, "str")


def _infer_format(stage: dict[str, Any]) -> str | None:
    if stage["function"] and not stage["artifact"]:
        return "function"
    if isinstance(stage["artifact"], str):
        return EXTENSION_FORMATS.get(Path(stage["artifact"]).suffix.lower())
    return None


def _is_function_ref(ref: str) -> bool:
    module, _colon, attr = ref.partition(":")
    return bool(module) and bool(attr) and all(part.isidentifier() for part in [*module.split("."), attr])


def _default_method(stage: dict[str, Any], *, is_last: bool) -> str:
    if stage["format"] == "function":
        return "call"
    return "predict" if is_last else "transform"


def _validate_rest(problems: list[str], rest: dict[str, Any]) -> None:
    _check_unknown_keys(problems, "rest.", rest, DEFAULTS["rest"])
    _check_bind(problems, "rest.bind", rest["bind"])
    _check_port(problems, "rest.port", rest["port"])
    _check_positive(problems, "rest.workers", rest["workers"])
    _check_positive(problems, "rest.threads", rest["threads"])
    _check_positive(problems, "rest.keepalive_s", rest["keepalive_s"])  # gunicorn takes whole seconds
    _check_positive(problems, "rest.max_body_bytes", rest["max_body_bytes"])
    _check_positive(problems, "rest.max_instances", rest["max_instances"])
    _check_positive(problems, "rest.body_read_timeout_s", rest["body_read_timeout_s"], "number")
    _check_positive(problems, "rest.max_connections", rest["max_connections"])
    if isinstance(rest["max_connections"], int) and isinstance(rest["threads"], int):
        if 0 < rest["max_connections"] <= rest["threads"]:
            problems.append(
                f"rest.max_connections: must be more than rest.threads ({rest['threads']}) so that "
                f"kept-alive connections and health probes fit, got {rest['max_connections']!r}"
            )
    _check_positive(problems, "rest.hop_timeout_s", rest["hop_timeout_s"], "number")
    _validate_hop_ejection(problems, rest["hop_ejection"])
    _check(problems, "rest.hop_retry_timeouts", rest["hop_retry_timeouts"], "bool")
    if _check(problems, "rest.next_hops", rest["next_hops"], "list"):
        for index, url in enumerate(rest["next_hops"]):
            if not (isinstance(url, str) and url.startswith(("http://", "https://"))):
                problems.append(f"rest.next_hops[{index}]: expected an http(s) URL, got {url!r}")


def _validate_hop_ejection(problems: list[str], ejection: Any) -> None:
    if not _check(problems, "rest.hop_ejection", ejection, "dict"):
        return
    _check_unknown_keys(problems, "rest.hop_ejection.", ejection, DEFAULTS["rest"]["hop_ejection"])
    field, failures = "rest.hop_ejection.consecutive_failures", ejection["consecutive_failures"]
    if _check(problems, field, failures, "int") and failures < 0:
        problems.append(f"{field}: must be >= 0 (0: never eject), got {failures}")
    _check_positive(problems, "rest.hop_ejection.base_s", ejection["base_s"], "number")
    _check_positive(problems, "rest.hop_ejection.max_s", ejection["max_s"], "number")
    base, longest = ejection["base_s"], ejection["max_s"]
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (base, longest))
    if numbers and 0 < longest < base:
        problems.append(f"rest.hop_ejection.max_s: {longest!r} is shorter than base_s ({base!r})")


def _validate_stream(problems: list[str], stream: dict[str, Any], *, required: bool) -> None:
    _check_unknown_keys(problems, "stream.", stream, DEFAULTS["stream"])
    broker = stream["broker"]
    if _check(problems, "stream.broker", broker, "dict"):
        _check_unknown_keys(problems, "stream.broker.", broker, DEFAULTS["stream"]["broker"])
        _check(problems, "stream.broker.host", broker["host"], "str")
        _check_port(problems, "stream.broker.port", broker["port"])
        _check(problems, "stream.broker.username", broker["username"], "str", nullable=True)
        _check(problems, "stream.broker.password", broker["password"], "str", nullable=True)
        _check(problems, "stream.broker.password_file", broker["password_file"], "str", nullable=True)
        if broker["password"] is not None and broker["password_file"] is not None:
            problems.append(
                "stream.broker.password_file: give stream.broker.password or stream.broker.password_file, "
                "not both"
            )
        if broker["password_file"] is not None and broker["username"] is None:
            problems.append("stream.broker.password_file: needs stream.broker.username")
        tls = broker["tls"]
        if _check(problems, "stream.broker.tls", tls, "dict"):
            _check_unknown_keys(problems, "stream.broker.tls.", tls, DEFAULTS["stream"]["broker"]["tls"])
            _check(problems, "stream.broker.tls.enabled", tls["enabled"], "bool")
            _check(problems, "stream.broker.tls.insecure", tls["insecure"], "bool")
            for key in ("ca_file", "cert_file", "key_file"):
                _check(problems, f"stream.broker.tls.{key}", tls[key], "str", nullable=True)
    for key in ("input_topic", "output_topic", "error_topic", "client_id"):
        # Only stream mode needs the topics; a REST config may leave the section at its defaults.
        _check(problems, f"stream.{key}", stream[key], "str", nullable=not required)
    for key in ("input_topic", "error_topic", "output_topic"):
        topic = stream[key]
        if isinstance(topic, str) and key != "input_topic" and ("+" in topic or "#" in topic):
            problems.append(f"stream.{key}: wildcards are not allowed in a publish topic: {topic!r}")
    _check(problems, "stream.share_group", stream["share_group"], "str", nullable=True)
    if isinstance(stream["share_group"], str) and any(c in stream["share_group"] for c in "/+#"):
        problems.append(f"stream.share_group: must not contain '/', '+' or '#': {stream['share_group']!r}")
    _check_choice(problems, "stream.output_kind", stream["output_kind"], OUTPUT_KINDS)
    if stream["qos"] not in (1, 2):
        problems.append(f"stream.qos: {stream['qos']!r} is not one of 1, 2 (at-least-once needs QoS >= 1)")
    _check_positive(problems, "stream.session_expiry_s", stream["session_expiry_s"])
    _check_positive(problems, "stream.keepalive_s", stream["keepalive_s"])
    _check_positive(problems, "stream.drain_timeout_s", stream["drain_timeout_s"], "number")
    _check_positive(problems, "stream.max_message_bytes", stream["max_message_bytes"])
    _check_positive(problems, "stream.max_consecutive_refusals", stream["max_consecutive_refusals"])
    window = stream["dedup_window"]
    if _check(problems, "stream.dedup_window", window, "int") and not 0 <= window <= MAX_DEDUP_WINDOW:
        problems.append(f"stream.dedup_window: must be 0 (off) to {MAX_DEDUP_WINDOW} ids, got {window}")
    _check_bind(problems, "stream.health_bind", stream["health_bind"])
    _check_port(problems, "stream.health_port", stream["health_port"])


def _validate_security(problems: list[str], security: dict[str, Any]) -> None:
    _check_unknown_keys(problems, "security.", security, DEFAULTS["security"])
    tls = security.get("tls")
    if _check(problems, "security.tls", tls, "dict"):
        _check_unknown_keys(problems, "security.tls.", tls, DEFAULTS["security"]["tls"])
        for key in DEFAULTS["security"]["tls"]:
            _check(problems, f"security.tls.{key}", tls[key], "str", nullable=True)
        _check_pair(problems, tls, "cert_file", "key_file", "the service's HTTPS server")
        _check_pair(problems, tls, "client_cert_file", "client_key_file", "the certificate hops present")
        if tls["client_ca_file"] is not None and tls["cert_file"] is None:
            problems.append(
                "security.tls.client_ca_file: needs security.tls.cert_file and key_file "
                "(client certificates are asked for by an HTTPS server)"
            )
    auth = security.get("auth")
    if _check(problems, "security.auth", auth, "dict"):
        _check_unknown_keys(problems, "security.auth.", auth, DEFAULTS["security"]["auth"])
        _check(problems, "security.auth.token_file", auth["token_file"], "str", nullable=True)


def _check_pair(problems: list[str], tls: dict[str, Any], first: str, second: str, what: str) -> None:
    """A certificate and its key go together: name the missing one."""
    for given, missing in ((first, second), (second, first)):
        if tls[given] is not None and tls[missing] is None:
            problems.append(f"security.tls.{missing}: required with security.tls.{given} ({what})")
