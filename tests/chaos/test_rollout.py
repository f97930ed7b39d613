"""All-or-nothing rollouts on the test bed under a steady load (tests/chaos/load.py).

A REST pipeline atomic on edge1 and edge2 runs release v1; v2 (other request limits, so a new release) is
deployed three times:
- edge2's link goes down while the hosts stage v2: nothing is switched, edge1 serves v1 throughout;
- edge2's staged v2 is damaged after every host staged (its artifacts unreadable, as a failing disk would
  leave them): edge2 fails its health gate after the switch, and both hosts go back to v1;
- nothing in the way: both hosts run v2.
After each: which release each host runs, and what the load saw (sent, answered, unanswered, longest gap).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.load import RestLoad, record_case
from tests.chaos.releases import new_release_vars, releases_running
from tests.deploy.helpers import (
    IRIS_SAMPLES,
    in_process_predictions,
    iris_spec,
    leftovers_on_testbed_host,
    post_predict,
    record_credentials,
    run_playbook,
    write_vars_file,
)
from tests.testbed.testbed import inventory_data

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

NAME = "ch-rollout"
PORT = 8420
HOSTS = ("edge1", "edge2")
# Ansible notices a host whose link went down after 3 unanswered keep-alives 2 s apart, instead of waiting
# for TCP to give up (minutes): what an inventory of edge devices on flaky links should say too.
KEEPALIVE = "-o ServerAliveInterval=2 -o ServerAliveCountMax=3 -o ConnectTimeout=5"


def damage_staged_releases(bed: Any, host: str) -> None:
    """Make the artifacts of every release but the running one unreadable on ``host``."""
    script = (
        f"cd /opt/mlpacker/{NAME} && for service in */; do running=$(readlink -f ${{service}}current); "
        'for release in ${service}releases/*; do [ "$(readlink -f $release)" = "$running" ] '
        "|| chmod 000 $release/artifacts/*; done; done"
    )
    bed.run(host, script)


def set_link(bed: Any, host: str, state: str) -> None:
    subprocess.run(["ip", "link", "set", bed.host(host).veth, state], check=True)


def act_once_at(marker: str, action: Any) -> Any:
    """An on_line callback that runs ``action`` once, at the first output line holding ``marker``."""
    done: list[bool] = []

    def on_line(line: str) -> None:
        if marker in line and not done:
            done.append(True)
            action()

    on_line.done = done  # type: ignore[attr-defined]
    return on_line


def test_a_rollout_switches_every_host_or_none(
    testbed: Any, deploy_root: Path, iris_models: dict[str, Path], controller_dirs: dict[str, str]
) -> None:
    inventory_json = inventory_data(testbed)
    for group in inventory_json["all"]["children"].values():
        for host_vars in group["hosts"].values():
            host_vars["ansible_ssh_common_args"] += " " + KEEPALIVE
            # Connections of their own: ssh would reuse a master connection another test opened to the same
            # host (ControlPersist), without the keep-alives, and hang on the cut link.
            host_vars["ansible_control_path_dir"] = str(deploy_root / f"{NAME}-ssh")
    inventory = deploy_root / f"{NAME}-inventory.json"
    inventory.write_text(json.dumps(inventory_json))
    spec = iris_spec(NAME, "rest", "atomic", iris_models, PORT)
    settings = dict(
        controller_dirs,
        mlpacker_credentials_dir=str(deploy_root / f"credentials-{NAME}"),
        mlpacker_health_retries=15,
        mlpacker_health_delay=1,
    )
    v1 = [
        write_vars_file(deploy_root / f"{NAME}.yml", spec),
        write_vars_file(deploy_root / f"{NAME}-ctl.yml", settings),
    ]
    v2 = v1 + [new_release_vars(deploy_root, NAME)]
    expected = in_process_predictions(
        [iris_models["scaler"], iris_models["pca"], iris_models["classifier"]], IRIS_SAMPLES
    )
    try:
        first = run_playbook("deploy.yml", inventory, v1)
        assert first.rc == 0, first.describe()
        release_v1 = releases_running(testbed, NAME, HOSTS)
        credentials = record_credentials(controller_dirs["mlpacker_state_dir"], NAME)
        urls = [f"https://{testbed.address(host)}:{PORT}/predict" for host in HOSTS]

        # 1. edge2 unreachable while the hosts stage v2: nothing switched anywhere.
        load = RestLoad(urls, IRIS_SAMPLES, expected, credentials).start()
        cut = act_once_at("Stage this host's services (", lambda: set_link(testbed, "edge2", "down"))
        try:
            lost = run_playbook("deploy.yml", inventory, v2, on_line=cut)
        finally:
            set_link(testbed, "edge2", "up")
        load.stop()
        record_case("host unreachable while staging (REST, 2 hosts): nothing switched", **load.counts())
        assert cut.done, lost.describe()
        assert lost.rc != 0, lost.describe()
        assert "nothing was switched: edge2 - unreachable" in lost.output, lost.describe()
        assert releases_running(testbed, NAME, HOSTS) == release_v1
        assert load.unanswered_times == [] and load.wrong == 0 and load.answered > 0, load.summary()

        # 2. edge2's staged v2 damaged once every host staged: edge2 fails its health gate after the switch,
        # and both hosts go back to v1.
        load = RestLoad(urls, IRIS_SAMPLES, expected, credentials).start()
        damage = act_once_at(
            "Note that this host staged its services", lambda: damage_staged_releases(testbed, "edge2")
        )
        failed = run_playbook("deploy.yml", inventory, v2, on_line=damage)
        load.stop()
        record_case("host fails after its switch (REST, 2 hosts): both switched back", **load.counts())
        assert damage.done, failed.describe()
        assert failed.rc != 0, failed.describe()
        assert (
            "the rollout of pipeline 'ch-rollout' failed in batch 1 (edge1, edge2): edge2 - " in failed.output
        ), failed.describe()
        # edge2's restart on its damaged release (a spawn error) or its health gate, not a lost host.
        reason = failed.output.split("(edge1, edge2): edge2 - ", 1)[1].split("\n", 1)[0]
        assert reason.startswith('task "') and "unreachable" not in reason, reason
        assert "edge1 was switched back to its previous releases." in failed.output, failed.describe()
        assert releases_running(testbed, NAME, HOSTS) == release_v1
        for url in urls:
            assert post_predict(url, IRIS_SAMPLES, credentials=credentials) == expected
        assert load.wrong == 0 and load.answered > 0, load.summary()

        # 3. Nothing in the way: both hosts switch to v2 (the damaged staged release is laid out again).
        second = run_playbook("deploy.yml", inventory, v2)
        assert second.rc == 0, second.describe()
        release_v2 = releases_running(testbed, NAME, HOSTS)
        assert all(release_v2[host] != release_v1[host] for host in HOSTS), (release_v1, release_v2)
        for url in urls:
            assert post_predict(url, IRIS_SAMPLES, credentials=credentials) == expected
    finally:
        set_link(testbed, "edge2", "up")
        removed = run_playbook("undeploy.yml", inventory, v1)
    assert removed.rc == 0, removed.describe()
    for host in HOSTS:
        assert leftovers_on_testbed_host(testbed, host, NAME) == "", host
