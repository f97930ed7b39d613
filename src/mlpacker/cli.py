"""The ``mlpacker`` command: deploy, status, probe and undeploy a pipeline through ansible-runner."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from mlpacker.errors import InventoryError, MLPackerError, SpecError
from mlpacker.results import EXIT_BAD_SPEC, EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, RunResult

EXIT_INTERNAL = 1

DESCRIPTION = """\
Deploy fitted ML pipeline stages as REST or MQTT services with Ansible (through ansible-runner).

PIPELINE is a YAML spec file with a top-level 'mlpacker_pipeline' mapping (the same file
`ansible-playbook playbooks/deploy.yml -e @PIPELINE` takes); INVENTORY an Ansible inventory.
Progress goes to stderr; results (entry points, status, probe results) go to stdout.
"""

EPILOG = f"""\
exit codes:
  {EXIT_OK}  success
  {EXIT_INTERNAL}  mlpacker itself could not run (no project/playbook found, ansible-runner error)
  {EXIT_BAD_SPEC}  bad pipeline spec: the file does not load, has no 'mlpacker_pipeline' mapping, or
     the playbook's validation task rejected it (the message names the field); also bad arguments
  {EXIT_UNREACHABLE}  a host of the inventory could not be reached
  {EXIT_FAILED}  a task failed (e.g. a stage's artifact does not load, a service does not start)

examples:
  mlpacker deploy examples/iris/pipelines/rest-distributed.yml -i inventories/local
  mlpacker status examples/iris/pipelines/rest-distributed.yml -i inventories/local --json
  mlpacker undeploy examples/iris/pipelines/rest-distributed.yml -i inventories/local
"""


def _parse_broker(text: str) -> dict[str, Any]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return {"host": text}
    if not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"--broker must be HOST or HOST:PORT, got {text!r}")
    return {"host": host.strip("[]"), "port": int(port)}


def _parse_extra(values: Sequence[str]) -> dict[str, Any]:
    """``-e`` like ansible-playbook: ``key=value``, ``@file.yml`` or a JSON/YAML mapping."""
    merged: dict[str, Any] = {}
    for value in values:
        if value.startswith("@"):
            path = Path(value[1:])
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise SpecError(f"cannot load extra vars: {exc}", source=str(path)) from None
        elif value.lstrip().startswith("{"):
            try:
                loaded = yaml.safe_load(value)
            except yaml.YAMLError as exc:
                raise SpecError(f"extra vars are not a valid mapping: {exc}", source="-e") from None
        else:
            loaded = {}
            # Quoting as in a shell, like ansible-playbook's key=value parsing: a='b c' is one pair.
            try:
                pairs = shlex.split(value)
            except ValueError as exc:
                raise SpecError(f"cannot parse {value!r}: {exc}", source="-e") from None
            for pair in pairs:
                key, sep, item = pair.partition("=")
                if not sep or not key:
                    raise SpecError(f"expected key=value, got {pair!r}", source="-e")
                loaded[key] = item
        if not isinstance(loaded, dict):
            raise SpecError(f"extra vars must be a mapping, got {type(loaded).__name__}", source=value)
        merged.update(loaded)
    return merged


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlpacker",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from mlpacker import __version__

    parser.add_argument("--version", action="version", version=f"mlpacker {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    helps = {
        "deploy": "deploy the pipeline and print its entry points",
        "status": "show the deployed services' state",
        "probe": "send a request to every entry point and report the answers",
        "undeploy": "stop and remove the pipeline's services",
    }
    for name, text in helps.items():
        sub = commands.add_parser(
            name,
            help=text,
            description=text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("pipeline", metavar="PIPELINE", help="pipeline spec YAML file")
        sub.add_argument("-i", "--inventory", required=True, help="Ansible inventory (file or folder)")
        sub.add_argument(
            "--broker",
            type=_parse_broker,
            metavar="HOST[:PORT]",
            help="MQTT broker for stream mode (extra var mlpacker_broker)",
        )
        sub.add_argument("--state-dir", help="deployment records folder (extra var mlpacker_state_dir)")
        sub.add_argument(
            "-e",
            "--extra-vars",
            action="append",
            default=[],
            metavar="VARS",
            help="more extra vars: key=value, @file.yml or a JSON mapping (repeatable)",
        )
        sub.add_argument("-l", "--limit", help="limit the run to these hosts/groups (Ansible pattern)")
        sub.add_argument(
            "--project-dir",
            help="an MLPacker project (folder with playbooks/); default: this checkout, else the collection "
            "installed with mlpacker",
        )
        sub.add_argument(
            "--keep-artifacts",
            metavar="DIR",
            help="use DIR as ansible-runner private data dir and keep it (job events, stdout)",
        )
        sub.add_argument("--json", action="store_true", help="print the whole result as JSON on stdout")
        sub.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=0,
            help="show every host outcome; -vv and more also show Ansible's own output",
        )
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    return parser


def result_to_json(result: RunResult) -> dict[str, Any]:
    """The result as plain JSON data (for ``--json``)."""
    return {
        "operation": result.operation,
        "status": result.status,
        "exit_code": result.exit_code,
        "rc": result.rc,
        "hosts": {name: vars(stats) for name, stats in result.hosts.items()},
        "failures": [vars(f) for f in result.failures],
        "entry_points": result.entry_points,
        "credentials": result.credentials,
        "client_commands": result.client_commands,
        "stats": result.stats_data,
    }


def _print_summary(result: RunResult, err: TextIO) -> None:
    for stats in result.hosts.values():
        err.write(
            f"  {stats.host}: ok={stats.ok} changed={stats.changed} failed={stats.failed} "
            f"unreachable={stats.unreachable} skipped={stats.skipped}\n"
        )
    if result.ok:
        err.write(f"{result.operation}: successful\n")
        return
    kind = "bad pipeline spec" if result.spec_error else result.status
    err.write(f"{result.operation}: {kind}\n")
    for failure in result.failures:
        err.write(f"  {failure.describe()}\n")


def _print_result(result: RunResult, out: TextIO) -> None:
    sections: dict[str, Any] = {}
    if result.operation == "deploy" and result.entry_points is not None:
        sections["entry_points"] = result.entry_points
        if result.credentials:
            sections["credentials"] = result.credentials
        if result.client_commands:
            sections["try"] = result.client_commands
    elif result.operation == "status" and result.stats_data:
        sections = dict(result.stats_data)
    elif result.operation == "probe" and result.stats_data:
        sections = dict(result.stats_data)
    if sections:
        out.write(yaml.safe_dump(sections, sort_keys=False, default_flow_style=False))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out, err = sys.stdout, sys.stderr

    from mlpacker import api
    from mlpacker.progress import ProgressDisplay
    from mlpacker.spec import load_spec

    try:
        extra = _parse_extra(args.extra_vars)
    except SpecError as exc:
        err.write(f"mlpacker: bad extra vars: {exc}\n")
        return EXIT_BAD_SPEC
    try:
        # Load once, before starting Ansible: a spec that does not load is reported against the file at once
        # (and a pipe such as <(...) is read only once).
        spec = load_spec(args.pipeline)
        operation = getattr(api, args.command)
        display = ProgressDisplay(err, verbose=args.verbose > 0)
        with display:
            result = operation(
                spec,
                args.inventory,
                broker=args.broker,
                state_dir=args.state_dir,
                extravars=extra,
                progress=None if args.quiet else display,
                limit=args.limit,
                project_dir=args.project_dir,
                private_data_dir=args.keep_artifacts,
                verbosity=max(0, args.verbose - 1),
                show_output=args.verbose > 1,
            )
    except SpecError as exc:
        err.write(f"mlpacker: bad pipeline spec: {exc}\n")
        return EXIT_BAD_SPEC
    except InventoryError as exc:
        err.write(f"mlpacker: {exc}\n")
        return EXIT_BAD_SPEC
    except MLPackerError as exc:
        err.write(f"mlpacker: {exc}\n")
        return EXIT_INTERNAL

    _print_summary(result, err)
    if result.exit_code == EXIT_UNREACHABLE:
        err.write("mlpacker: a host could not be reached (exit 3)\n")
    err.flush()
    # Results last, on stdout, so that they end the output and can be piped on their own.
    if args.json:
        out.write(json.dumps(result_to_json(result), indent=2, default=str) + "\n")
    else:
        _print_result(result, out)
    return result.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
