"""``mlpacker-runtime check|serve --config FILE`` (also ``python -m mlpacker_runtime``)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from mlpacker_runtime import __version__
from mlpacker_runtime.config import ConfigError, load_config
from mlpacker_runtime.loading import StageLoadError, load_stage
from mlpacker_runtime.logs import setup_logging
from mlpacker_runtime.metrics import MULTIPROC_ENV
from mlpacker_runtime.rest import CONFIG_AS_GIVEN_ENV
from mlpacker_runtime.security_check import check_security_files

EXIT_INVALID = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlpacker-runtime", description="MLPacker stage runtime")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("check", "validate the config and load every stage (sha256 and version checks), then exit"),
        ("serve", "run the service in the foreground (REST: exec gunicorn; stream: MQTT consumer)"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--config", "-c", required=True, help="runtime config JSON file")
        command.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")
    return parser


def _print_problems(problems: list[str]) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)


def check(config_path: str) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _print_problems(exc.problems)
        return EXIT_INVALID
    problems = check_security_files(config)
    for index in range(len(config["stages"])):
        try:
            load_stage(config, index)
        except StageLoadError as exc:
            problems.append(str(exc))
    if problems:
        _print_problems(problems)
        return EXIT_INVALID
    names = ", ".join(stage["name"] for stage in config["stages"])
    print(f"ok: {config['pipeline']}/{config['service']} ({config['mode']}): stages {names} load")
    return 0


def serve(config_path: str) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _print_problems(exc.problems)
        return EXIT_INVALID
    # Refuse to start rather than fail every TLS handshake or answer 401 to every caller.
    problems = check_security_files(config)
    if problems:
        _print_problems(problems)
        return EXIT_INVALID
    if config["mode"] == "rest":
        _exec_gunicorn(config_path)  # does not return
    from mlpacker_runtime.stream.consumer import StreamConsumer

    return StreamConsumer(config).run()


def _exec_gunicorn(config_path: str) -> None:
    env = dict(os.environ)
    # The release's own file (the 'current' link resolved), so a worker gunicorn replaces later reads the
    # configuration its master started with; a reload (SIGHUP, gunicorn_conf.on_reload) resolves the path as
    # given again, and so moves to the release 'current' names then.
    env["MLPACKER_RUNTIME_CONFIG"] = str(Path(config_path).resolve())
    env[CONFIG_AS_GIVEN_ENV] = str(Path(config_path).absolute())
    if not env.get(MULTIPROC_ENV):
        # Per-service metrics directory shared by the gunicorn workers (removed by gunicorn_conf.on_exit).
        env[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="mlpacker-metrics-")
        env["MLPACKER_RUNTIME_OWNS_METRICS_DIR"] = "1"
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:mlpacker_runtime.rest.gunicorn_conf",
        "mlpacker_runtime.rest.wsgi:app",
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child process: the supervisor then tracks (and signals) the real gunicorn master.
    os.execve(sys.executable, argv, env)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.log_level:
        os.environ["MLPACKER_RUNTIME_LOG_LEVEL"] = args.log_level.upper()
    # check prints its own one-line-per-problem report; keep INFO chatter out of it.
    setup_logging(None if args.log_level or args.command == "serve" else "WARNING")
    if args.command == "check":
        return check(args.config)
    return serve(args.config)


if __name__ == "__main__":
    sys.exit(main())
