"""Stream faults on the test bed under a steady load of numbered QoS 1 messages (tests/chaos/mqtt_load.py).

One stream pipeline, atomic on edge1 and edge2 (two consumers sharing the input subscription), with the
managed broker on cloud1 (saving on every change, the default), is deployed once; then:
- ``kill -9`` of one consumer (the service's runtime process on edge1) mid-stream; supervisord restarts it: no
  acknowledged message is lost, repeats are counted and each is marked (``attempts`` above 1), the service is
  ready again;
- ``kill -9`` of the managed broker mid-stream, while it holds a backlog (both consumers stopped with SIGSTOP
  for a few seconds first, as slow consumers would leave it; resumed right after the kill); supervisord
  restarts it. The backlog must come out after the restart. Two ways an acknowledged message is
  lost, both counted (as lost) and asserted to be the only ones:
  1. the one message acknowledged last before the kill: Mosquitto 2.0.11 sends a PUBACK in the event-loop
     turn that queued the message and saves its database at the end of that turn, so a kill between the two
     loses that turn's message. The publisher here waits for each PUBACK before sending the next, so a PUBACK
     it received for a later message proves the earlier message's turn, and its save, were over: every
     acknowledged message but the last one acknowledged on the connection the kill broke is kept;
  2. messages published after the restart before the consumers are back: Mosquitto 2.0.11 restores the
     consumers' sessions and queued messages from its database but not their shared subscriptions
     (``$share/...``; a plain subscription is restored), so until a consumer reconnects and subscribes again,
     an input matches no subscription and is dropped. MQTT v5 tells the publisher (PUBACK reason 0x10 "No
     matching subscribers", which is not an error code); an MQTT 3.1.1 publisher is not told.
After both: the pipeline is undeployed and leaves nothing on its hosts, and the broker goes with it.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.chaos.load import record_case
from tests.chaos.mqtt_load import MqttLoad
from tests.deploy.helpers import (
    IRIS_SAMPLES,
    in_process_predictions,
    iris_spec,
    leftovers_on_testbed_host,
    managed_broker_inventory,
    mqtt_roundtrip,
    record_credentials,
    request_options,
    run_playbook,
    wait_for,
    write_vars_file,
)

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

NAME = "ch-stream"
PORT = 8430  # each consumer's health port
HOSTS = ("edge1", "edge2")
BROKER_HOST = "cloud1"
BROKER_PORT = 8883  # the managed broker's TLS listener
BROKER_PROGRAM = "mlpacker-broker"
SUPERVISORCTL = (
    "/opt/mlpacker/.supervisor/venv/bin/supervisorctl -c /etc/mlpacker/supervisor/supervisord.conf"
)
LOAD_BEFORE_S = 8  # steady load before each kill
LOAD_AFTER_S = 12  # and after it
BACKLOG_S = 3  # consumers stopped before the broker's kill: what the broker holds then


def program_pids(bed: Any, host: str, pattern: str) -> dict[str, int]:
    """The RUNNING supervisord programs on ``host`` whose name starts with ``pattern``, with their pids."""
    status = bed.run(host, f"{SUPERVISORCTL} status", check=False).stdout
    found = {}
    for line in status.splitlines():
        match = re.match(r"^(\S+)\s+RUNNING\s+pid (\d+),", line)
        if match and match[1].startswith(pattern):
            found[match[1]] = int(match[2])
    return found


def kill_9(bed: Any, host: str, pid: int) -> float:
    """``kill -9`` a process on a test-bed host; returns the monotonic time just before."""
    moment = time.monotonic()
    bed.run(host, f"kill -9 {pid}")
    return moment


def ready(url: str, credentials: dict[str, Any]) -> bool:
    try:
        return requests.get(url, timeout=1, **request_options(credentials)).status_code == 200
    except requests.RequestException:
        return False


class ReadyWatch:
    """Polls a consumer's /health/ready every 0.1 s from ``start`` on; ``back_at`` is the first time it
    answers 200 after having failed (the restarted process ready), None while it has not come back."""

    def __init__(self, url: str, credentials: dict[str, Any]) -> None:
        self.url, self.credentials = url, credentials
        self.down_seen = False
        self.back_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ReadyWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set() and self.back_at is None:
            if not ready(self.url, self.credentials):
                self.down_seen = True
            elif self.down_seen:
                self.back_at = time.monotonic()
            time.sleep(0.1)


def consumer_killed(bed: Any, broker: str, credentials: dict[str, Any], expected: list[Any]) -> None:
    programs = program_pids(bed, "edge1", f"mlpacker-{NAME}")
    assert len(programs) == 1, programs
    ((program, pid),) = programs.items()
    watch = ReadyWatch(f"https://{bed.address('edge1')}:{PORT}/health/ready", credentials)
    assert ready(watch.url, credentials), watch.url
    load = MqttLoad(broker, BROKER_PORT, NAME, IRIS_SAMPLES, credentials, expected).start()
    try:
        time.sleep(LOAD_BEFORE_S)
        watch.start()
        killed_at = kill_9(bed, "edge1", pid)
        time.sleep(LOAD_AFTER_S)
        load.stop()
        wait_for(lambda: watch.back_at is not None, 60, f"{program} ready again on edge1")
    finally:
        watch.stop()
        load.close()
    recovery = None if watch.back_at is None else watch.back_at - killed_at
    record_case("kill -9 of a stream consumer (edge1 of 2, shared subscription)", **load.counts(recovery))
    print("chaos: consumer kill:", load.summary())
    restarted = program_pids(bed, "edge1", program)
    assert restarted.get(program) not in (None, pid), restarted
    assert load.errors == [] and load.wrong == 0, load.summary()
    assert load.lost() == [] and load.acked_for_no_one() == set(), load.summary()
    # Before and after the kill, messages were acknowledged and answered.
    assert any(at < killed_at for at in load.acked.values()), load.summary()
    assert load.first_output_of_acked_after(killed_at) is not None, load.summary()
    # Every repeat is marked: a copy after the first says some service took the message more than once.
    unmarked = {
        number: copies
        for number, copies in load.repeats().items()
        if not any(max(attempts.values(), default=1) > 1 for attempts in copies[1:])
    }
    assert unmarked == {}, unmarked


def broker_killed(bed: Any, broker: str, credentials: dict[str, Any], expected: list[Any]) -> None:
    pids = program_pids(bed, BROKER_HOST, BROKER_PROGRAM)
    assert BROKER_PROGRAM in pids, pids
    consumers = [
        (host, pid) for host in HOSTS for pid in program_pids(bed, host, f"mlpacker-{NAME}").values()
    ]
    assert len(consumers) == len(HOSTS), consumers
    load = MqttLoad(broker, BROKER_PORT, NAME, IRIS_SAMPLES, credentials, expected).start()
    try:
        time.sleep(LOAD_BEFORE_S)
        for host, pid in consumers:
            bed.run(host, f"kill -STOP {pid}")
        try:
            time.sleep(BACKLOG_S)
            killed_at = kill_9(bed, BROKER_HOST, pids[BROKER_PROGRAM])
        finally:
            for host, pid in consumers:
                bed.run(host, f"kill -CONT {pid}", check=False)
        backlog = [
            number
            for number, at in list(load.acked.items())
            if at < killed_at and not any(out < killed_at and n == number for out, n, _ in load.outputs)
        ]
        time.sleep(LOAD_AFTER_S)
        load.stop()
    finally:
        load.close()
    # Recovery: from the kill to the first output of a message the restarted broker acknowledged.
    back = load.first_output_of_reconnected()
    record_case(
        "kill -9 of the managed broker (saves on every change; consumers' shared subscription not restored)",
        **load.counts(None if back is None else back - killed_at),
    )
    print("chaos: broker kill:", load.summary(), f"; backlog at the kill: {len(backlog)} acknowledged")
    restarted = program_pids(bed, BROKER_HOST, BROKER_PROGRAM)
    assert restarted.get(BROKER_PROGRAM) not in (None, pids[BROKER_PROGRAM]), restarted
    assert load.connection >= 2, "the publisher never saw the broker go: " + load.summary()
    assert any(at < killed_at for at in load.acked.values()), load.summary()
    assert len(backlog) > 1, f"the broker held no backlog at the kill: {backlog}"
    assert back is not None, "nothing acknowledged after the kill came out: " + load.summary()
    # 1. The one message that may be lost in the save under way: the last one acknowledged on the
    # connection the kill broke (the publisher's first). Every earlier one had a later PUBACK after it.
    first_connection = [number for number, connection in load.acked_on.items() if connection == 1]
    in_flight_save = {max(first_connection)} if first_connection else set()
    # 2. Acknowledged for no one: only after the restart (the consumers' shared subscription not restored).
    for_no_one = load.acked_for_no_one()
    assert all(load.acked[number] > killed_at for number in for_no_one), load.summary()
    lost = set(load.lost())
    print(
        f"chaos: broker kill: lost {len(lost)}: {len(lost & for_no_one)} acknowledged as 'No matching "
        f"subscribers' after the restart, {len(lost & in_flight_save)} in the save under way at the kill, "
        f"{len(lost - for_no_one - in_flight_save)} other"
    )
    assert lost <= in_flight_save | for_no_one, (
        f"lost {sorted(lost - in_flight_save - for_no_one)} the broker had acknowledged as delivered: "
        + load.summary()
    )
    assert load.errors == [] and load.wrong == 0, load.summary()


def test_stream_survives_killed_consumer_and_broker(
    testbed: Any, deploy_root: Path, iris_models: dict[str, Path], controller_dirs: dict[str, str]
) -> None:
    inventory = managed_broker_inventory(testbed, deploy_root / f"{NAME}-inventory.yml")
    spec = iris_spec(NAME, "stream", "atomic", iris_models, PORT)
    settings = dict(
        controller_dirs,
        mlpacker_credentials_dir=str(deploy_root / f"credentials-{NAME}"),
    )
    files = [
        write_vars_file(deploy_root / f"{NAME}.yml", spec),
        write_vars_file(deploy_root / f"{NAME}-ctl.yml", settings),
    ]
    expected = in_process_predictions(
        [iris_models["scaler"], iris_models["pca"], iris_models["classifier"]], IRIS_SAMPLES
    )
    broker = testbed.address(BROKER_HOST)
    try:
        first = run_playbook("deploy.yml", inventory, files)
        assert first.rc == 0, first.describe()
        credentials = record_credentials(controller_dirs["mlpacker_state_dir"], NAME)
        assert credentials and credentials["mqtt"], credentials
        answer = mqtt_roundtrip(
            broker,
            BROKER_PORT,
            f"mlpacker/{NAME}/in",
            f"mlpacker/{NAME}/out",
            IRIS_SAMPLES,
            credentials=credentials,
        )
        assert answer == expected
        consumer_killed(testbed, broker, credentials, expected)
        broker_killed(testbed, broker, credentials, expected)
    finally:
        removed = run_playbook("undeploy.yml", inventory, files)
    assert removed.rc == 0, removed.describe()
    for host in HOSTS:
        assert leftovers_on_testbed_host(testbed, host, NAME) == "", host
    assert testbed.run(BROKER_HOST, "test -e /etc/mlpacker/mosquitto", check=False).returncode != 0
