"""Deploy benchmark: MLPacker's deploy vs a minimal hand-written playbook, on 3 SSH test-bed hosts.

The same 3-stage distributed REST pipeline (iris: scale on edge1 -> reduce on fog1 -> classify on cloud1)
is deployed by ``playbooks/deploy.yml`` and by ``bench/deploy/handwritten.yml`` (plain ansible.builtin,
same wheelhouse, same requirement set, same runtime, supervisord). Timed: the cold deploy (nothing on the
hosts; the controller's wheelhouse cache already filled by a warm-up, so both ship the same tarball) and an
idempotent re-run. Per repeat, order rotated: [cold, re-run, teardown (not timed)] for each side. Ratios
are computed per repeat; their median is reported.

    .venv/bin/python bench/deploy/bench_deploy.py --repeats 3

Needs root (the test bed). Holds the test bed's lock while it runs, so a pytest session waits for it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import yaml

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the test bed and the deploy tests' helpers live in tests/

from tests.deploy.helpers import (  # noqa: E402
    IRIS_SAMPLES,
    controller_settings,
    in_process_predictions,
    iris_spec,
    parse_recap,
    train_iris,
)
from tests.testbed import testbed as tb  # noqa: E402

VENV_BIN = REPO_ROOT / ".venv" / "bin"
PIPELINE = "benchdep"
OURS_PORT = 8400  # edge1, fog1, cloud1 get 8400, 8401, 8402 (each host has its own network namespace)
HAND_PORT = 8500  # different ports, so a leftover of one side can never answer for the other
BENCH_HOSTS = {"edge": "edge1", "fog": "fog1", "cloud": "cloud1"}
LOCK_WAIT_S = 3600
PLAYBOOK_TIMEOUT_S = 1200
TARGETS = {"cold": 1.3, "rerun": 1.2}
# The hand playbook's two ways of installing the venvs (see handwritten.yml): both are timed.
HAND_INSTALLS = ("pip", "marker")
# What each side puts on a host (paths, user; its processes run from these paths): none of it may be there
# before a cold deploy or after a teardown.
SIDE_FOOTPRINT = {
    "ours": ("mlpacker", ["/opt/mlpacker", "/etc/mlpacker", "/var/log/mlpacker", "/run/mlpacker"]),
    "hand": ("handbench", ["/opt/handbench", "/etc/handbench", "/var/log/handbench", "/run/handbench"]),
}


class BenchError(RuntimeError):
    """A deploy failed or left the hosts in a state the benchmark cannot compare; the message says which."""


@dataclass
class PlaybookRun:
    label: str
    seconds: float
    rc: int
    recap: dict[str, dict[str, int]]
    log: Path

    def changed(self) -> int:
        return sum(counts["changed"] for counts in self.recap.values())


@dataclass
class Side:
    """One way of deploying: its playbooks, their extra-vars files and the edge1 entry point."""

    name: str
    footprint: str  # key of SIDE_FOOTPRINT
    deploy: Path
    teardown: Path
    vars_files: list[Path]
    entry_url: str


class Runner:
    """Runs ansible-playbook from the repository root (its ansible.cfg, the same for both sides)."""

    def __init__(self, inventory: Path, log_dir: Path):
        self.inventory = inventory
        self.log_dir = log_dir
        self.count = 0
        self.env = dict(os.environ)
        self.env.update(
            PATH=f"{VENV_BIN}:{self.env.get('PATH', '')}",
            ANSIBLE_COLLECTIONS_PATH=str(REPO_ROOT / "collections"),
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_HOST_KEY_CHECKING="False",
        )

    def run(self, label: str, playbook: Path, vars_files: list[Path], *, check: bool = True) -> PlaybookRun:
        argv = [str(VENV_BIN / "ansible-playbook"), str(playbook), "-i", str(self.inventory)]
        for path in vars_files:
            argv += ["-e", f"@{path}"]
        self.count += 1
        log = self.log_dir / f"{self.count:02d}-{label}.log"
        started = time.monotonic()
        result = subprocess.run(
            argv,
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=PLAYBOOK_TIMEOUT_S,
            check=False,
        )
        seconds = time.monotonic() - started
        output = result.stdout + result.stderr
        log.write_text(output)
        run = PlaybookRun(label, seconds, result.returncode, parse_recap(output), log)
        print(f"  {label:<20} {seconds:7.1f}s  rc={run.rc} changed={run.changed()}  ({log.name})", flush=True)
        if check and run.rc != 0:
            raise BenchError(f"{label} failed (exit {run.rc}); log {log}:\n{output[-4000:]}")
        return run


# ------------------------------------------------------------------------------------------- set-up


@contextlib.contextmanager
def testbed_session(keep: bool) -> Iterator[tb.Testbed]:
    """The test bed under its lock: reused when already up, else brought up (and down at the end)."""
    state_dir = tb.state_dir_from_env()
    print(f"taking the test bed lock {state_dir / 'lock'} (waits while a pytest session uses it)", flush=True)
    with tb.file_lock(state_dir / "lock", timeout=LOCK_WAIT_S):
        bed = tb.load(state_dir) if tb.status(state_dir)["up"] else None
        brought_up = bed is None
        if bed is None:
            started = time.monotonic()
            bed = tb.up(state_dir=state_dir)
            print(f"test bed up in {time.monotonic() - started:.1f}s", flush=True)
        else:
            print("test bed already up: reusing it (and leaving it up)", flush=True)
        try:
            yield bed
        finally:
            if brought_up and not keep:
                tb.teardown(state_dir)
                print("test bed down", flush=True)


def bench_inventory(bed: tb.Testbed, path: Path) -> Path:
    """The test bed's inventory reduced to one host per group (edge1, fog1, cloud1): 3 hosts each side."""
    source = yaml.safe_load(Path(bed.inventory_path).read_text())
    children = source["all"]["children"]
    inventory = {
        "all": {
            "children": {
                group: {"hosts": {host: children[group]["hosts"][host]}}
                for group, host in BENCH_HOSTS.items()
            }
        }
    }
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))


def hand_vars(record: dict[str, Any], wheelhouse: Path, models: dict[str, Path]) -> dict[str, Any]:
    """The hand playbook's inputs from our deployment record: same requirements, hosts and topology."""
    stages = {stage["name"]: stage for stage in record["stages"]}
    artifacts = {"scale": models["scaler"], "reduce": models["pca"], "classify": models["classifier"]}
    services = {}
    for service in record["services"]:
        (stage_name,) = service["stages"]
        stage = stages[stage_name]
        services[service["host"]] = {
            "name": f"handbench-{stage_name}",
            "stage": stage_name,
            "artifact": str(artifacts[stage_name]),
            "method": stage["method"],
            "sha256": stage["sha256"],
            "versions": stage["versions"],
            "port": service["port"] - OURS_PORT + HAND_PORT,
            "next_hops": [
                with_port(hop, urlsplit(hop).port - OURS_PORT + HAND_PORT) for hop in service["next_hops"]
            ],
        }
    if set(services) != set(BENCH_HOSTS.values()):
        raise BenchError(f"our deploy placed services on {sorted(services)}, expected {BENCH_HOSTS}")
    return {
        "handbench_wheelhouse": str(wheelhouse),
        "handbench_requirements": record["requirements"],
        "handbench_services": services,
    }


def find_wheelhouse(cache_dir: Path) -> Path:
    tars = sorted((cache_dir / "wheelhouse").glob("*.tar"), key=lambda path: path.stat().st_mtime)
    if not tars:
        raise BenchError(f"no wheelhouse in {cache_dir / 'wheelhouse'} after our deploy")
    return tars[-1]


# ------------------------------------------------------------------------------------------- checks


def check_answers(side: Side, expected: list[Any]) -> None:
    response = requests.post(side.entry_url, json={"instances": IRIS_SAMPLES}, timeout=60)
    if response.status_code != 200 or response.json().get("predictions") != expected:
        raise BenchError(
            f"{side.name}: POST {side.entry_url} answered {response.status_code} {response.text[:300]!r},"
            f" expected predictions {expected}"
        )


def host_processes(bed: tb.Testbed, host: str, side: str) -> str:
    _user, paths = SIDE_FOOTPRINT[side]
    # [/]: the pattern must not match this shell's own command line.
    pattern = "|".join(f"[/]{path.strip('/')}/" for path in paths[:2])
    return bed.run(host, f"pgrep -af '{pattern}' || true", check=False).stdout.strip()


def host_files(bed: tb.Testbed, host: str, side: str) -> str:
    user, paths = SIDE_FOOTPRINT[side]
    return bed.run(
        host, f"ls -d {' '.join(paths)} 2>/dev/null; getent passwd {user}", check=False
    ).stdout.strip()


def check_clean(bed: tb.Testbed, side: str) -> None:
    for host in BENCH_HOSTS.values():
        leftovers = "\n".join(filter(None, [host_files(bed, host, side), host_processes(bed, host, side)]))
        if leftovers:
            raise BenchError(f"{side}: {host} still has after teardown:\n{leftovers}")


def make_hosts_cold(bed: tb.Testbed) -> None:
    """Remove both sides' files and users from the bench hosts. Needed because a host's filesystem is an
    overlay over this machine's own /: a local MLPacker deploy on the machine (its /opt/mlpacker, its
    supervisor venv, the mlpacker user) shows through in every host. Only the host's upper layer changes."""
    for host in BENCH_HOSTS.values():
        for side, (user, paths) in SIDE_FOOTPRINT.items():
            running = host_processes(bed, host, side)
            if running:
                raise BenchError(
                    f"{host} runs {side} processes of another session (take the test bed down first):"
                    f"\n{running}"
                )
            bed.run(
                host, f"rm -rf {' '.join(paths)}; if getent passwd {user} >/dev/null; then userdel {user}; fi"
            )


# ------------------------------------------------------------------------------------------- the run


def measure(runner: Runner, bed: tb.Testbed, side: Side, expected: list[Any]) -> dict[str, Any]:
    cold = runner.run(f"{side.name}-cold", side.deploy, side.vars_files)
    check_answers(side, expected)
    rerun = runner.run(f"{side.name}-rerun", side.deploy, side.vars_files)
    check_answers(side, expected)
    runner.run(f"{side.name}-teardown", side.teardown, side.vars_files)
    check_clean(bed, side.footprint)
    return {"cold": cold.seconds, "rerun": rerun.seconds, "rerun_changed": rerun.changed()}


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(repeats: list[dict[str, Any]], hands: list[str]) -> str:
    """Per-repeat seconds and ratios, then the median of the per-repeat ratios against each hand variant."""
    ratios = {(hand, kind): [] for hand in hands for kind in TARGETS}
    lines = ["", "per repeat (seconds; ratio = ours / hand):"]
    for index, rep in enumerate(repeats):
        lines.append(f"  repeat {index + 1} (order {rep['order']}):")
        ours = rep["ours"]
        for hand in hands:
            row = [f"    ours vs {hand:<12}"]
            for kind in TARGETS:
                ratio = ours[kind] / rep[hand][kind]
                ratios[(hand, kind)].append(ratio)
                row.append(f"{kind} {ours[kind]:6.1f} / {rep[hand][kind]:6.1f} = {ratio:4.2f}x")
            row.append(f"re-run changed {ours['rerun_changed']}/{rep[hand]['rerun_changed']}")
            lines.append("  ".join(row))
    lines += [
        "",
        "| metric | reference | ours/hand (median of per-repeat ratios) | per repeat | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for kind, label in (("cold", "cold deploy"), ("rerun", "idempotent re-run")):
        for hand in hands:
            values = ratios[(hand, kind)]
            value = median(values)
            met = "yes" if value <= TARGETS[kind] else "no"
            per_repeat = ", ".join(f"{ratio:.2f}" for ratio in values)
            lines.append(f"| {label} | {hand} | {value:.2f}x | {per_repeat} | <= {TARGETS[kind]}x | {met} |")
    lines += ["", "| context: median seconds | " + " | ".join(["ours", *hands]) + " |"]
    lines.append("|---" * (len(hands) + 2) + "|")
    for kind, label in (("cold", "cold deploy"), ("rerun", "re-run")):
        cells = [f"{median([rep[name][kind] for rep in repeats]):.1f}" for name in ["ours", *hands]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_bench(args: argparse.Namespace, bed: tb.Testbed) -> list[dict[str, dict[str, Any]]]:
    work = args.work_dir
    logs = work / "logs" / time.strftime("%Y%m%dT%H%M%S")
    logs.mkdir(parents=True)
    inventory = bench_inventory(bed, work / "inventory.yml")
    models = train_iris(work / "models")
    expected = in_process_predictions([models["scaler"], models["pca"], models["classifier"]], IRIS_SAMPLES)
    controller = controller_settings(work)
    spec = iris_spec(PIPELINE, "rest", "distributed", models, OURS_PORT)
    ours = Side(
        "ours",
        "ours",
        REPO_ROOT / "playbooks" / "deploy.yml",
        REPO_ROOT / "playbooks" / "undeploy.yml",
        [write_yaml(work / "pipeline.yml", spec), write_yaml(work / "controller.yml", controller)],
        f"http://{bed.address('edge1')}:{OURS_PORT}/predict",
    )
    runner = Runner(inventory, logs)
    print(f"logs: {logs}", flush=True)

    sides = [ours]  # what to clean up on a failure (the hand side exists after our warm-up)
    try:
        warm_up(runner, bed, sides, work, models, expected)
        repeats = [
            run_repeat(runner, bed, index, args.repeats, sides, expected) for index in range(args.repeats)
        ]
    except BaseException:
        # Leave nothing deployed, also on a failure or Ctrl-C (errors here must not hide the first one).
        for side in sides:
            with contextlib.suppress(Exception):
                runner.run(f"{side.name}-cleanup", side.teardown, side.vars_files, check=False)
        raise
    (logs / "results.json").write_text(json.dumps(repeats, indent=2) + "\n")
    return repeats


def warm_up(
    runner: Runner,
    bed: tb.Testbed,
    sides: list[Side],
    work: Path,
    models: dict[str, Path],
    expected: list[Any],
) -> None:
    """Not timed: fills the controller's caches (runtime wheel, wheelhouse), checks both sides once and
    derives the hand side's inputs from our deployment record and wheelhouse (appended to ``sides``)."""
    (ours,) = sides
    print("warm-up (not timed):", flush=True)
    make_hosts_cold(bed)
    check_clean(bed, "ours")
    check_clean(bed, "hand")
    runner.run("ours-warmup", ours.deploy, ours.vars_files)
    check_answers(ours, expected)
    record = json.loads((work / "state" / f"{PIPELINE}.json").read_text())
    wheelhouse = find_wheelhouse(work / "cache")
    runner.run("ours-teardown", ours.teardown, ours.vars_files)
    check_clean(bed, "ours")
    print(f"  wheelhouse {wheelhouse.name}, requirements {record['requirements']}", flush=True)
    hand_inputs = write_yaml(work / "hand-vars.yml", hand_vars(record, wheelhouse, models))
    for install in HAND_INSTALLS:
        hand = Side(
            f"hand-{install}",
            "hand",
            HERE / "handwritten.yml",
            HERE / "cleanup.yml",
            [hand_inputs, write_yaml(work / f"hand-{install}.yml", {"handbench_install": install})],
            f"http://{bed.address('edge1')}:{HAND_PORT}/predict",
        )
        sides.append(hand)
        runner.run(f"{hand.name}-warmup", hand.deploy, hand.vars_files)
        check_answers(hand, expected)
        runner.run(f"{hand.name}-teardown", hand.teardown, hand.vars_files)
        check_clean(bed, "hand")


def run_repeat(
    runner: Runner, bed: tb.Testbed, index: int, count: int, sides: list[Side], expected: list[Any]
) -> dict[str, Any]:
    """One repeat: each side's cold deploy, re-run and teardown; the order rotates from repeat to repeat."""
    shift = index % len(sides)
    order = sides[shift:] + sides[:shift]
    print(f"repeat {index + 1}/{count}:", flush=True)
    rep: dict[str, Any] = {"order": "/".join(side.name for side in order)}
    for side in order:
        rep[side.name] = measure(runner, bed, side, expected)
        if rep[side.name]["rerun_changed"] != 0:
            print(f"  warning: {side.name} re-run reported changed={rep[side.name]['rerun_changed']}")
    return rep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="measured repeats (default 3)")
    parser.add_argument(
        "--keep-testbed", action="store_true", help="leave the test bed up if this run brought it up"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/var/tmp/mlpacker-bench-deploy"),
        help="models, controller cache (kept between runs: the wheelhouse downloads once), logs",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    try:
        with testbed_session(args.keep_testbed) as bed:
            repeats = run_bench(args, bed)
    except (BenchError, tb.TestbedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report(repeats, [f"hand-{install}" for install in HAND_INSTALLS]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
