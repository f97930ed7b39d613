# Copyright (c) MLPacker contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Action plugin mlpacker.core.pipeline_credentials: a pipeline's credentials made on the controller.

Runs entirely on the controller whatever host the task targets (no module is sent anywhere): the pipeline
CA, a server certificate per host, a client certificate, the bearer token, the MQTT users with their
password-file lines and ACL, and the managed brokers' CA with a listener certificate per broker host, laid
out as docs/security.md ("Controller credentials") says. Returns paths, never a secret.

A new token (a rotation, or a changed user token) goes first to ``<pipeline>/token.pending``, which is what
the services get, and becomes ``<pipeline>/token`` (what clients read) only with ``promote_token``, the last
step of a deploy once every service accepts it; a run that finds a pending token carries it on.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import re

from ansible.errors import AnsibleActionFail
from ansible.module_utils.basic import missing_required_lib
from ansible.plugins.action import ActionBase
from ansible_collections.mlpacker.core.plugins.module_utils import bearer_token, mqtt_credentials, pki
from ansible_collections.mlpacker.core.plugins.module_utils.atomic_file import write_atomically
from ansible_collections.mlpacker.core.plugins.module_utils.private_files import (
    apply_changes,
    pending_changes,
    read_file,
)
from ansible_collections.mlpacker.core.plugins.module_utils.spec_validation import NAME_PATTERN

DEFAULT_VALIDITY_DAYS = 825
DEFAULT_CA_VALIDITY_DAYS = 3650
BROKER_DIR = "_broker"

ARGUMENT_SPEC = {
    "path": {"type": "path", "default": "~/.mlpacker/credentials"},
    "pipeline": {"type": "str", "required": True},
    "hosts": {"type": "dict", "default": {}},
    "broker_hosts": {"type": "dict", "default": {}},
    # A plan's services may be given as they are: their other keys are ignored, so the four that count are
    # checked by mqtt_credentials.service_topics instead of suboptions (which refuse unknown keys).
    "mqtt_services": {"type": "list", "elements": "dict", "default": []},
    "mqtt_client_topics": {
        "type": "dict",
        "options": {
            "input": {"type": "str", "required": True},
            "output": {"type": "str", "required": True},
            "error": {"type": "str", "required": True, "aliases": ["errors"]},
        },
    },
    "ca_cert_file": {"type": "path"},
    "ca_key_file": {"type": "path"},
    "token_file": {"type": "path"},
    "rotate": {"type": "bool", "default": False},
    "promote_token": {"type": "bool", "default": False},
    "validity_days": {"type": "int", "default": DEFAULT_VALIDITY_DAYS},
    "ca_validity_days": {"type": "int", "default": DEFAULT_CA_VALIDITY_DAYS},
}
REQUIRED_TOGETHER = [("ca_cert_file", "ca_key_file")]


class CredentialsError(Exception):
    """A problem with the options or the files, the message naming the option and the file."""


def read_own(path):
    """A credentials file's bytes (None when missing); an unreadable one fails naming it."""
    try:
        return read_file(path)
    except OSError as exc:
        raise CredentialsError(f"path: cannot read {path}: {exc.strerror or exc}") from exc


def read_user_file(option, path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise CredentialsError(f"{option}: cannot read {path}: {exc.strerror or exc}") from exc


def check_file_name(name, option):
    text = str(name)
    if not text or text.startswith(".") or "/" in text or "\0" in text or text != text.strip():
        raise CredentialsError(
            f"{option}: inventory name {text!r} cannot name a file (no '/', no leading '.' or spaces)"
        )


def host_sans(option, name, address):
    try:
        return pki.subject_alt_names(address, name)
    except ValueError as exc:
        raise CredentialsError(f"{option}.{name}: {exc}") from exc


class Layout:
    """The wanted files (``{path relative to the credentials folder: bytes}``), folders and why each made
    file is new."""

    def __init__(self, root):
        self.root = root
        self.dirs = ["."]
        self.files = {}
        self.reasons = {}
        self.existing = {}
        # Files to remove (relative paths), with why.
        self.removed = {}

    def path(self, rel):
        return os.path.join(self.root, rel)

    def current(self, rel):
        if rel not in self.existing:
            self.existing[rel] = read_own(self.path(rel))
        return self.existing[rel]

    def keep(self, rel):
        self.files[rel] = self.current(rel)

    def put(self, rel, data, reason):
        self.files[rel] = data
        if data != self.current(rel):
            self.reasons[rel] = reason

    def remove(self, rel, reason):
        if self.current(rel) is not None:
            self.removed[rel] = reason


class CredentialsBuilder:
    """Works out every file of the credentials folder from what is there and the options."""

    def __init__(self, args, now):
        self.args = args
        self.now = now
        self.pipeline = args["pipeline"]
        self.layout = Layout(args["path"])
        self.warnings = []

    def build(self):
        pipeline = self.pipeline
        self.layout.dirs += [pipeline, f"{pipeline}/hosts"]
        ca_key, ca_cert = self.pipeline_ca()
        hosts = {}
        for name, address in self.args["hosts"].items():
            sans = host_sans("hosts", name, address or name)
            hosts[name] = self.leaf(
                ca_key, ca_cert, f"{pipeline}/hosts/{name}", str(name), sans, ("server", "client")
            )
        client = self.leaf(
            ca_key, ca_cert, f"{pipeline}/client", mqtt_credentials.client_username(pipeline), [], ("client",)
        )
        token_rel = f"{pipeline}/token"
        services_token_rel = self.token(token_rel, f"{pipeline}/token.pending")
        return {
            "dir": self.layout.path(pipeline),
            "ca_file": self.layout.path(f"{pipeline}/ca.crt"),
            "token_file": self.layout.path(token_rel),
            "service_token_file": self.layout.path(services_token_rel),
            "token_pending": services_token_rel != token_rel,
            "client": client,
            "hosts": hosts,
            "broker": self.broker(),
            "mqtt": self.mqtt(),
        }

    def check_options(self):
        if not re.match(NAME_PATTERN, self.pipeline):
            raise CredentialsError(f"pipeline: {self.pipeline!r} must match {NAME_PATTERN}")
        for option in ("validity_days", "ca_validity_days"):
            if self.args[option] <= pki.RENEW_BEFORE_DAYS:
                raise CredentialsError(
                    f"{option}: {self.args[option]} must be more than {pki.RENEW_BEFORE_DAYS} (certificates"
                    f" that expire within {pki.RENEW_BEFORE_DAYS} days are renewed on every run)"
                )
        for option in ("hosts", "broker_hosts"):
            for name, address in self.args[option].items():
                check_file_name(name, option)
                if address is not None and not isinstance(address, str):
                    raise CredentialsError(f"{option}.{name}: the address must be a string, not {address!r}")

    def pipeline_ca(self):
        rel_cert, rel_key = f"{self.pipeline}/ca.crt", f"{self.pipeline}/ca.key"
        if self.args["ca_cert_file"]:
            ca_key, ca_cert = self.user_ca()
            self.layout.put(rel_cert, pki.certificate_pem(ca_cert), "copy of ca_cert_file")
            self.layout.put(rel_key, pki.private_key_pem(ca_key), "copy of ca_key_file")
            return ca_key, ca_cert
        return self.generated_ca(rel_cert, rel_key, f"MLPacker {self.pipeline} CA")

    def user_ca(self):
        cert_path, key_path = self.args["ca_cert_file"], self.args["ca_key_file"]
        try:
            ca_cert = pki.load_certificate(read_user_file("ca_cert_file", cert_path))
        except ValueError as exc:
            raise CredentialsError(f"ca_cert_file: {cert_path}: {exc}") from exc
        try:
            ca_key = pki.load_private_key(read_user_file("ca_key_file", key_path))
        except ValueError as exc:
            raise CredentialsError(f"ca_key_file: {key_path}: {exc}") from exc
        if not pki.key_matches(ca_key, ca_cert):
            raise CredentialsError(
                f"ca_key_file: {key_path} is not the key of the certificate in ca_cert_file {cert_path}"
            )
        if not pki.is_ca(ca_cert):
            raise CredentialsError(
                f"ca_cert_file: {cert_path} is not a CA certificate (basicConstraints CA:FALSE)"
            )
        expiring = pki.expiry_reason(ca_cert, self.now)
        if expiring:
            self.warnings.append(
                f"ca_cert_file: {cert_path} {expiring}; certificates it signs expire with it, give a new CA"
            )
        return ca_key, ca_cert

    def generated_ca(self, rel_cert, rel_key, common_name):
        reason = pki.ca_renewal_reason(self.layout.current(rel_cert), self.layout.current(rel_key), self.now)
        if reason is None:
            self.layout.keep(rel_cert)
            self.layout.keep(rel_key)
            return (
                pki.load_private_key(self.layout.files[rel_key]),
                pki.load_certificate(self.layout.files[rel_cert]),
            )
        ca_key, ca_cert = pki.make_ca(common_name, self.args["ca_validity_days"], self.now)
        self.layout.put(rel_cert, pki.certificate_pem(ca_cert), f"new CA ({reason})")
        self.layout.put(rel_key, pki.private_key_pem(ca_key), f"new CA key ({reason})")
        return ca_key, ca_cert

    def leaf(self, ca_key, ca_cert, rel_stem, common_name, sans, purposes):
        rel_cert, rel_key = f"{rel_stem}.crt", f"{rel_stem}.key"
        if self.args["rotate"]:
            reason = "rotated"
        else:
            reason = pki.leaf_renewal_reason(
                self.layout.current(rel_cert), self.layout.current(rel_key), ca_cert, sans, self.now
            )
        if reason is None:
            self.layout.keep(rel_cert)
            self.layout.keep(rel_key)
        else:
            key, cert = pki.issue_certificate(
                ca_key, ca_cert, common_name, sans, self.args["validity_days"], self.now, purposes
            )
            self.layout.put(rel_cert, pki.certificate_pem(cert), f"new certificate ({reason})")
            self.layout.put(rel_key, pki.private_key_pem(key), f"new key ({reason})")
        return {"cert_file": self.layout.path(rel_cert), "key_file": self.layout.path(rel_key)}

    def token(self, rel, pending_rel):
        """Lay out the token files; returns the one the services get (relative path).

        Clients read line 1 of ``rel``. A new token is not put there at once: services still running with the
        old file would refuse it. It goes to ``pending_rel`` (the new token, then the current one), which the
        services get; ``promote_token`` moves it to ``rel`` once every service runs with it. A pending token
        found here (a deploy that stopped before its end) is carried on, not replaced.
        """
        user_token = None
        if self.args["token_file"]:
            path = self.args["token_file"]
            try:
                lines = bearer_token.token_lines(read_user_file("token_file", path).decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise CredentialsError(f"token_file: {path} is not UTF-8 text") from exc
            if not lines:
                raise CredentialsError(f"token_file: {path} is empty")
            problem = bearer_token.token_problem(lines[0])
            if problem:
                raise CredentialsError(f"token_file: the token in {path} {problem}")
            user_token = lines[0]
        existing = self.layout.current(rel)
        current = usable_tokens(existing)
        pending = usable_tokens(self.layout.current(pending_rel))
        if pending and (user_token is None or pending[0] == user_token):
            tokens = pending
            reason = "rotation carried on (the pending token waits until every service accepts it)"
        else:
            tokens = bearer_token.next_tokens(current, user_token, self.args["rotate"])
            if user_token is not None:
                reason = "token from token_file"
            elif current and self.args["rotate"]:
                reason = "rotated (the previous token is line 2)"
            else:
                reason = "new token" if existing is None else "new token (the file held no usable token)"
        text = bearer_token.token_file_text(tokens).encode("ascii")
        if not current or tokens == current[:2]:
            # No service runs with a token of this file yet (or it does not change): no need to wait.
            self.layout.put(rel, text, reason)
            self.layout.remove(pending_rel, "promoted (the token file holds it)")
            return rel
        self.layout.keep(rel)
        self.layout.put(pending_rel, text, f"{reason}; pending until every service accepts it")
        return pending_rel

    def mqtt_topics(self):
        try:
            services = mqtt_credentials.service_topics(self.args["mqtt_services"])
        except ValueError as exc:
            raise CredentialsError(str(exc)) from exc
        client = self.args["mqtt_client_topics"]
        if client is None:
            client = mqtt_credentials.client_topics(services)
            missing = [key for key, topic in client.items() if topic is None]
            if missing:
                raise CredentialsError(
                    "mqtt_client_topics: the client's {} topic cannot be derived from mqtt_services;"
                    " give mqtt_client_topics".format(" and ".join(missing))
                )
        problems = [
            mqtt_credentials.check_topic(client[key], f"mqtt_client_topics.{key}")
            for key in mqtt_credentials.CLIENT_TOPIC_KEYS
        ]
        problems = [problem for problem in problems if problem]
        if problems:
            raise CredentialsError("; ".join(problems))
        return services, client

    def mqtt(self):
        if not self.args["mqtt_services"] and not self.args["mqtt_client_topics"]:
            return None
        services, client = self.mqtt_topics()
        pipeline = self.pipeline
        self.layout.dirs.append(f"{pipeline}/mqtt")
        users = [
            (service["id"], mqtt_credentials.service_username(pipeline, service["id"]))
            for service in services
        ]
        users.append((None, mqtt_credentials.client_username(pipeline)))
        salt_rel = f"{pipeline}/mqtt/share_group.salt"
        salt_data = self.layout.current(salt_rel)
        salt = salt_data.decode("ascii", errors="replace").strip() if salt_data else ""
        if len(salt) < 32:
            salt = mqtt_credentials.new_password()
            self.layout.put(salt_rel, f"{salt}\n".encode(), "new share-group secret")
        else:
            # Never rotated: replicas restarted one by one must stay in one group.
            self.layout.keep(salt_rel)
        passwords = []
        returned = {"users": {}, "client": None}
        for service_id, username in users:
            rel = f"{pipeline}/mqtt/{username}.password"
            existing = self.layout.current(rel)
            password = None
            if existing is not None and not self.args["rotate"]:
                lines = existing.decode("utf-8", errors="replace").strip().splitlines()
                password = lines[0].strip() if len(lines) == 1 and lines[0].strip() else None
            if password is None:
                password = mqtt_credentials.new_password()
                reason = "rotated" if self.args["rotate"] and existing is not None else "new password"
                self.layout.put(rel, f"{password}\n".encode(), reason)
            else:
                self.layout.keep(rel)
            passwords.append((username, password))
            entry = {"username": username, "password_file": self.layout.path(rel)}
            if service_id is None:
                returned["client"] = entry
            else:
                entry["share_group"] = mqtt_credentials.share_group(service_id, salt)
                returned["users"][service_id] = entry
        passwd_rel, acl_rel = f"{pipeline}/mqtt/passwd", f"{pipeline}/mqtt/acl"
        existing_passwd = self.layout.current(passwd_rel)
        known = (
            mqtt_credentials.parse_passwd(existing_passwd.decode("utf-8", errors="replace"))
            if existing_passwd
            else {}
        )
        self.layout.put(
            passwd_rel, mqtt_credentials.passwd_text(passwords, known).encode("utf-8"), "password hashes"
        )
        self.layout.put(
            acl_rel,
            mqtt_credentials.acl_text(pipeline, services, client).encode("utf-8"),
            "ACL of the topics",
        )
        returned.update(passwd_file=self.layout.path(passwd_rel), acl_file=self.layout.path(acl_rel))
        return returned

    def broker(self):
        if not self.args["broker_hosts"]:
            return None
        self.layout.dirs.append(BROKER_DIR)
        ca_key, ca_cert = self.generated_ca(
            f"{BROKER_DIR}/ca.crt", f"{BROKER_DIR}/ca.key", "MLPacker broker CA"
        )
        hosts = {}
        for name, address in self.args["broker_hosts"].items():
            sans = host_sans("broker_hosts", name, address or name)
            hosts[name] = self.leaf(ca_key, ca_cert, f"{BROKER_DIR}/{name}", str(name), sans, ("server",))
        return {"ca_file": self.layout.path(f"{BROKER_DIR}/ca.crt"), "hosts": hosts}


def usable_tokens(data):
    """The usable tokens of a token file's bytes (at most two); none when missing or line 1 is unusable."""
    if data is None:
        return []
    lines = bearer_token.token_lines(data.decode("utf-8", errors="replace"))
    if not lines or bearer_token.token_problem(lines[0]) is not None:
        return []
    return [line for line in lines[:2] if bearer_token.token_problem(line) is None]


def promote_token(args, check_mode):
    """Move ``<pipeline>/token.pending`` to ``<pipeline>/token`` (the deploy's last step, once every service
    runs with the pending token); returns (result paths, changes) like make_credentials. Raises
    CredentialsError."""
    root = args["path"]
    pipeline = args["pipeline"]
    token_rel, pending_rel = f"{pipeline}/token", f"{pipeline}/token.pending"
    paths = {"token_file": os.path.join(root, token_rel), "token_pending": False}
    if not os.path.isdir(os.path.join(root, pipeline)):
        return paths, []
    descriptor = None if check_mode else lock_folder(root)
    try:
        data = read_own(os.path.join(root, pending_rel))
        if data is None:
            return paths, []
        if not usable_tokens(data):
            raise CredentialsError(
                f"promote_token: {os.path.join(root, pending_rel)} holds no usable token"
                " (remove it and deploy again)"
            )
        changes = [
            (token_rel, "written", "promoted the pending token (every service accepts it)"),
            (pending_rel, "removed", "promoted"),
        ]
        if not check_mode:
            try:
                write_atomically(os.path.join(root, token_rel), data, 0o600)
                os.unlink(os.path.join(root, pending_rel))
            except OSError as exc:
                raise CredentialsError(f"path: cannot write under {root}: {exc.strerror or exc}") from exc
        return paths, changes
    finally:
        if descriptor is not None:
            os.close(descriptor)


def lock_folder(path):
    """An exclusive lock on the credentials folder (held until the returned descriptor is closed), so two
    runs (two forks, two pipelines sharing _broker/) never interleave."""
    descriptor = os.open(path, os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    return descriptor


def make_credentials(args, check_mode, now=None):
    """Work out and (unless ``check_mode``) write the credentials; returns (result paths, changes as
    ``[(relative path, what changes, why)]``, warnings). Raises CredentialsError."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    root = args["path"]
    descriptor = None
    created_root = not os.path.isdir(root)
    builder = CredentialsBuilder(args, now)
    builder.check_options()  # before anything is created
    try:
        if not check_mode:
            try:
                os.makedirs(root, mode=0o700, exist_ok=True)
                descriptor = lock_folder(root)
            except OSError as exc:
                raise CredentialsError(f"path: cannot create or lock {root}: {exc.strerror or exc}") from exc
        paths = builder.build()
        layout = builder.layout
        try:
            changes = pending_changes(root, layout.dirs, layout.files)
        except OSError as exc:
            raise CredentialsError(f"path: {exc}") from exc
        if created_root and not any(change[0] == "." for change in changes):
            changes.insert(0, (".", "created"))
        removals = [(rel, "removed") for rel in sorted(layout.removed)]
        layout.reasons.update(layout.removed)
        if not check_mode:
            try:
                apply_changes(root, layout.files, changes)
                for rel in layout.removed:
                    os.unlink(layout.path(rel))
                os.chmod(root, 0o700)
            except OSError as exc:
                raise CredentialsError(f"path: cannot write under {root}: {exc.strerror or exc}") from exc
        elif paths["token_pending"] and not os.path.exists(paths["service_token_file"]):
            # Nothing written in check mode: the services would get the pending file, which is not there yet.
            paths["service_token_file"] = paths["token_file"]
        changes += removals
        return paths, [(rel, what, layout.reasons.get(rel, what)) for rel, what in changes], builder.warnings
    finally:
        if descriptor is not None:
            os.close(descriptor)


class ActionModule(ActionBase):
    """mlpacker.core.pipeline_credentials (documentation: plugins/modules/pipeline_credentials.py)."""

    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        try:
            if not pki.HAS_CRYPTOGRAPHY:
                raise AnsibleActionFail(
                    missing_required_lib("cryptography", reason="on the controller"),
                    result={"exception": pki.CRYPTOGRAPHY_IMPORT_ERROR},
                )
            args = self.validate_argument_spec(ARGUMENT_SPEC, required_together=REQUIRED_TOGETHER)[1]
            if args["promote_token"]:
                CredentialsBuilder(args, None).check_options()
                paths, changes = promote_token(args, check_mode=bool(self._task.check_mode))
                warnings = []
            else:
                paths, changes, warnings = make_credentials(args, check_mode=bool(self._task.check_mode))
        except AnsibleActionFail as exc:
            result.update(exc.result)
            return result
        except CredentialsError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        except Exception as exc:  # pylint: disable=broad-except
            # No traceback in the task result: name the failure (never a secret: nothing here holds one).
            result.update(failed=True, msg=f"cannot make the credentials: {type(exc).__name__}: {exc}")
            return result
        result.update(paths)
        result["changed"] = bool(changes)
        result["changes"] = [
            {"path": os.path.normpath(os.path.join(args["path"], rel)), "change": why}
            for rel, unused_what, why in changes
        ]
        if warnings:
            result["warnings"] = result.get("warnings", []) + warnings
        if self._task.diff and changes:
            result["diff"] = {
                "before_header": args["path"],
                "after_header": args["path"],
                "before": "".join(f"{rel}\n" for rel, what, unused_why in changes if what != "created"),
                "after": "".join(f"{rel}: {why}\n" for rel, unused_what, why in changes),
            }
        return result
