"""mlpacker_log_rotation, as the roles render it: supervisord programs (service, canary, broker) and
supervisord's own log, the logrotate drop-in of the systemd path, and the container role's json-file
options; a bad setting is refused by the roles' preflight with a message naming it. Renders only (ansible's
template module over the roles' own templates and defaults): nothing is deployed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.helpers import REPO_ROOT, run_playbook, write_vars_file
from tests.outcomes import missing

SUPERVISORD = Path(sys.executable).with_name("supervisord")

ROLES = REPO_ROOT / "collections" / "ansible_collections" / "mlpacker" / "core" / "roles"
RENDER_PLAYBOOK = """
- name: Render what mlpacker_log_rotation sets
  hosts: localhost
  gather_facts: false
  vars_files:
    - {roles}/host/vars/main.yml
    - {roles}/service/defaults/main.yml
    - {roles}/service/vars/main.yml
    - {roles}/service_container/defaults/main.yml
  tasks:
    - name: Check the setting as the service role does
      ansible.builtin.include_tasks: {roles}/service/tasks/preflight.yml
      vars:
        _mlpacker_service_mode: rest
        _mlpacker_service_stages: []
    - name: Render
      ansible.builtin.template:
        src: "{{{{ item.src }}}}"
        dest: "{{{{ out_dir }}}}/{{{{ item.dest }}}}"
        mode: "0644"
      loop:
        - {{src: {roles}/service/templates/supervisor-program.conf.j2, dest: program.conf}}
        - {{src: {roles}/service/templates/supervisor-canary.conf.j2, dest: canary.conf}}
        - {{src: {roles}/service/templates/logrotate.j2, dest: logrotate}}
        - {{src: {roles}/host/templates/supervisord.conf.j2, dest: supervisord.conf}}
      vars:
        _mlpacker_service_canary_port: 40123
    - name: Write the container role's json-file options
      ansible.builtin.copy:
        content: "{{{{ {{'max-size': mlpacker_service_container_log_max_size | string,
                        'max-file': mlpacker_service_container_log_max_file | string}} | to_json }}}}"
        dest: "{{{{ out_dir }}}}/docker.json"
        mode: "0644"
"""


def render(tmp_path: Path, settings: dict[str, Any], **layout: Any) -> tuple[Any, Path]:
    playbook = tmp_path / "render.yml"
    playbook.write_text(RENDER_PLAYBOOK.format(roles=ROLES))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    variables = write_vars_file(
        tmp_path / "vars.yml",
        {
            "out_dir": str(out_dir),
            "mlpacker_host_log_root": "/var/log/mlpacker",
            "mlpacker_host_pipeline": "iris",
            "mlpacker_service": {"id": "iris-scale", "port": 8000, "stages": ["scale"]},
            "mlpacker_service_deployment": {
                "pipeline": "iris",
                "mode": "rest",
                "stages": {"scale": {"name": "scale", "artifact": "/a", "sha256": "0" * 64}},
                "wheelhouse_id": "w",
            },
            "_mlpacker_service_release_id": "0123456789ab",
            **layout,
            **settings,
        },
    )
    return run_playbook(str(playbook), REPO_ROOT / "inventories" / "local", [variables]), out_dir


def lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()]


def test_every_log_is_rotated_as_set(tmp_path: Path) -> None:
    run, out = render(tmp_path, {"mlpacker_log_rotation": {"max_bytes": 4096, "backups": 2}})
    assert run.rc == 0, run.describe()
    for name in ("program.conf", "canary.conf"):
        rendered = lines(out / name)
        assert "stdout_logfile_maxbytes=4096" in rendered and "stdout_logfile_backups=2" in rendered, rendered
    supervisord = lines(out / "supervisord.conf")
    assert "logfile_maxbytes=4096" in supervisord and "logfile_backups=2" in supervisord
    logrotate = lines(out / "logrotate")
    assert "/var/log/mlpacker/iris/*.log {" in logrotate
    for directive in ("size 4096", "rotate 2", "copytruncate", "su mlp-iris mlp-iris"):
        assert directive in logrotate, logrotate
    # json-file keeps max-file files, the live one included: backups + 1.
    assert (out / "docker.json").read_text() == '{"max-size": "4096", "max-file": "3"}'


def test_defaults(tmp_path: Path) -> None:
    run, out = render(tmp_path, {})
    assert run.rc == 0, run.describe()
    assert "stdout_logfile_maxbytes=10485760" in lines(out / "program.conf")
    assert "stdout_logfile_backups=5" in lines(out / "program.conf")
    assert (out / "docker.json").read_text() == '{"max-size": "10485760", "max-file": "6"}'


@pytest.mark.parametrize(
    "rotation",
    [{"max_bytes": 0, "backups": 5}, {"max_bytes": "10M", "backups": 5}, {"max_bytes": 1000}, "10M"],
)
def test_bad_settings_are_refused_naming_them(tmp_path: Path, rotation: Any) -> None:
    run, out = render(tmp_path, {"mlpacker_log_rotation": rotation})
    assert run.rc != 0
    assert "mlpacker_log_rotation must be {max_bytes: <bytes above 0>" in run.output, run.describe()
    assert not (out / "program.conf").exists()


@pytest.mark.skipif(
    not SUPERVISORD.exists(), reason=missing("supervisord", "the dev dependency supervisor is not installed")
)
def test_supervisord_rotates_a_service_log_past_max_bytes(tmp_path: Path) -> None:
    """The service role's own supervisord program, run by a real supervisord: a service writing 40 times
    max_bytes leaves its log and `backups` rotated files (none beyond), each bounded."""
    max_bytes, backups = 4096, 2
    root, logs = tmp_path / "opt", tmp_path / "log"
    release = root / "iris" / "iris-scale" / "releases" / "0123456789ab"
    (release / "venv" / "bin").mkdir(parents=True)
    (logs / "iris").mkdir(parents=True)
    (root / "iris" / "iris-scale" / "current").symlink_to(release)
    # The release's runtime: writes a lot to stdout (as a service logging under load), then idles.
    runtime = release / "venv" / "bin" / "mlpacker-runtime"
    runtime.write_text(
        "#!/bin/sh\n"
        f"i=0; while [ $i -lt {40 * max_bytes // 64 + 3} ]; do "
        "echo 'a log line of sixty-four bytes, from a service under a flood.'; i=$((i+1)); done\n"
        "echo 'all written'\nexec sleep 60\n"
    )
    runtime.chmod(0o755)
    run, out = render(
        tmp_path,
        {"mlpacker_log_rotation": {"max_bytes": max_bytes, "backups": backups}},
        mlpacker_host_root=str(root),
        mlpacker_host_log_root=str(logs),
        mlpacker_host_user=os.environ.get("USER") or "root",
    )
    assert run.rc == 0, run.describe()
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        f"[supervisord]\nlogfile={tmp_path}/supervisord.log\npidfile={tmp_path}/supervisord.pid\n"
        f"nodaemon=true\n[include]\nfiles={out}/program.conf\n"
    )
    supervisord = subprocess.Popen(
        [str(SUPERVISORD), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    log = logs / "iris" / "iris-scale.log"
    try:
        deadline = time.monotonic() + 60
        while not any("all written" in path.read_text() for path in log.parent.glob("iris-scale.log*")):
            assert supervisord.poll() is None, (tmp_path / "supervisord.log").read_text()
            assert time.monotonic() < deadline, sorted(path.name for path in (logs / "iris").iterdir())
            time.sleep(0.2)
    finally:
        supervisord.send_signal(signal.SIGTERM)
        supervisord.wait(30)
    files = sorted(path.name for path in (logs / "iris").iterdir())
    assert files == ["iris-scale.log", "iris-scale.log.1", "iris-scale.log.2"], files
    sizes = {name: (logs / "iris" / name).stat().st_size for name in files}
    # supervisord rotates after a write takes a file past max_bytes, and writes what it read from the
    # service's pipe at once (up to 64 KiB here): a file holds at most max_bytes plus one such read, so the
    # disk a flooding service takes stays bounded by (backups + 1) x that.
    assert all(size <= max_bytes + 65536 for size in sizes.values()), sizes
    assert sum(sizes.values()) < 40 * max_bytes / 1.5  # older output was dropped, not kept
    assert shutil.which("prlimit") is not None  # the program ran through prlimit, as deployed
