"""A steady load of numbered QoS 1 MQTT messages on a deployed stream pipeline, counted at the output.

The publisher sends one message at a time and waits for its PUBACK before the next (re-sending the same
number after a broker restart until one is acknowledged): a message counts as sent once the broker
acknowledged it. The subscriber keeps a persistent session (MQTT v5, clean start off, a session expiry) on
the output and error topics, so the outputs the broker held while it was down reach it afterwards.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.deploy.helpers import client_mqtt_password, wait_for

SESSION_EXPIRY_S = 600
# MQTT v5 PUBACK reason 0x10: accepted, but no subscription matched, so the broker kept it for no one.
NO_MATCHING_SUBSCRIBERS = 16


def _client(credentials: dict[str, Any], client_id: str) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    username, password = client_mqtt_password(credentials)
    client.username_pw_set(username, password)
    client.tls_set(ca_certs=credentials["mqtt"]["ca_file"])
    client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
    return client


@dataclass
class MqttLoad:
    host: str
    port: int
    pipeline: str
    instances: list[list[float]]
    credentials: dict[str, Any]
    expected: list[Any] | None = None  # the predictions every output must carry
    interval_s: float = 0.05
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    # number -> monotonic time of its first PUBACK, and the publisher connection (1, 2, ...) that got it
    acked: dict[int, float] = field(default_factory=dict)
    acked_on: dict[int, int] = field(default_factory=dict)
    ack_reason: dict[int, int] = field(default_factory=dict)  # number -> that PUBACK's reason code
    # (monotonic time, number, attempts) of every output received, repeats included
    outputs: list[tuple[float, int, dict[str, int]]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    wrong: int = 0
    disconnects: list[float] = field(default_factory=list)
    connection: int = 0
    _pending: dict[int, int] = field(default_factory=dict)
    _acks: list[tuple[int, int, float, int]] = field(default_factory=list)
    _connected: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def input_topic(self) -> str:
        return f"mlpacker/{self.pipeline}/in"

    def start(self) -> MqttLoad:
        self._subscriber = _client(self.credentials, f"chaos-sub-{self.run}")
        subscribed = threading.Event()
        self._subscriber.on_connect = lambda client, *_: client.subscribe(
            [(f"mlpacker/{self.pipeline}/out", 1), (f"mlpacker/{self.pipeline}/errors", 1)]
        )
        self._subscriber.on_subscribe = lambda *_: subscribed.set()
        self._subscriber.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        self._subscriber.connect(self.host, self.port, clean_start=False, properties=properties)
        self._subscriber.loop_start()
        wait_for(subscribed.is_set, 30, "the output subscription")

        self._publisher = _client(self.credentials, f"chaos-pub-{self.run}")
        self._publisher.on_connect = self._on_connect
        self._publisher.on_disconnect = self._on_disconnect
        self._publisher.on_publish = self._on_publish
        self._publisher.connect(self.host, self.port)
        self._publisher.loop_start()
        wait_for(self._connected.is_set, 30, "the publisher's connection")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self, drain_timeout_s: float = 120) -> MqttLoad:
        """Stop sending, then wait (``drain_timeout_s`` at most) until every acknowledged number came out."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            wait_for(
                lambda: not self.lost(), drain_timeout_s, "an output for every acknowledged message", 0.5
            )
        except AssertionError:
            pass  # counted as lost
        return self

    def close(self) -> None:
        """Disconnect both clients; the subscriber's session ends with it (expiry 0 on DISCONNECT)."""
        for client in (getattr(self, "_publisher", None), getattr(self, "_subscriber", None)):
            if client is None:
                continue
            properties = Properties(PacketTypes.DISCONNECT)
            properties.SessionExpiryInterval = 0
            client.disconnect(properties=properties if client is self._subscriber else None)
            client.loop_stop()

    # --- the publisher ---------------------------------------------------------------------------------

    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if not reason_code.is_failure:
            self.connection += 1
            self._connected.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self._connected.clear()
        self.disconnects.append(time.monotonic())

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, reason_code: Any, _props: Any) -> None:
        # paho calls this holding its outgoing-message lock, which publish() takes too: only note the PUBACK
        # here (the network thread), the publishing thread matches it to its number (_take_acks).
        self._acks.append((mid, reason_code.value, time.monotonic(), self.connection))

    def _take_acks(self) -> None:
        while self._acks:
            mid, reason, at, connection = self._acks.pop(0)
            number = self._pending.pop(mid, None)
            if number is not None and reason < 128 and number not in self.acked:
                self.acked_on[number] = connection
                self.ack_reason[number] = reason
                self.acked[number] = at

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            payload = json.dumps({"id": f"{self.run}-{number}", "instances": self.instances})
            # Until the broker acknowledges it: again after a reconnect, or after 5 s without an answer.
            while number not in self.acked:
                if not self._connected.wait(timeout=1):
                    continue
                connection = self.connection
                info = self._publisher.publish(self.input_topic, payload, qos=1)
                self._pending[info.mid] = number
                deadline = time.monotonic() + 5
                while (
                    self._take_acks() is None
                    and number not in self.acked
                    and self.connection == connection
                    and self._connected.is_set()
                    and time.monotonic() < deadline
                ):
                    time.sleep(0.005)
            time.sleep(self.interval_s)
        deadline = time.monotonic() + 5
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.05)
            self._take_acks()

    # --- the subscriber --------------------------------------------------------------------------------

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        now = time.monotonic()
        body = json.loads(message.payload)
        run, _, number = str(body.get("id", "")).partition("-")
        if message.topic.endswith("/errors"):
            self.errors.append(body)
        elif run == self.run:
            self.outputs.append((now, int(number), body.get("attempts") or {}))
            self.wrong += self.expected is not None and body.get("predictions") != self.expected

    # --- the counts ------------------------------------------------------------------------------------

    def delivered(self) -> set[int]:
        return {number for _, number, _ in self.outputs}

    def lost(self) -> list[int]:
        """Acknowledged numbers with no output."""
        delivered = self.delivered()
        return sorted(number for number in list(self.acked) if number not in delivered)

    def acked_for_no_one(self) -> set[int]:
        """Numbers whose PUBACK said no subscription matched (MQTT v5 reason 0x10)."""
        return {number for number, reason in self.ack_reason.items() if reason == NO_MATCHING_SUBSCRIBERS}

    def duplicates(self) -> int:
        return len(self.outputs) - len(self.delivered())

    def repeats(self) -> dict[int, list[dict[str, int]]]:
        """Each number output more than once, with the attempts of each of its copies in arrival order."""
        copies: dict[int, list[dict[str, int]]] = {}
        for _, number, attempts in self.outputs:
            copies.setdefault(number, []).append(attempts)
        return {number: seen for number, seen in copies.items() if len(seen) > 1}

    def longest_gap_s(self) -> float:
        """The longest time between two outputs in a row."""
        times = sorted(at for at, _, _ in self.outputs)
        return max((later - earlier for earlier, later in zip(times, times[1:], strict=False)), default=0.0)

    def first_output_of_acked_after(self, moment: float) -> float | None:
        """When the first output came for a message first acknowledged after ``moment``."""
        after = {number for number, at in self.acked.items() if at > moment}
        return min((at for at, number, _ in self.outputs if number in after), default=None)

    def first_output_of_reconnected(self) -> float | None:
        """When the first output came for a message acknowledged on a later publisher connection than the
        first (after the broker came back)."""
        later = {number for number, connection in self.acked_on.items() if connection > 1}
        return min((at for at, number, _ in self.outputs if number in later), default=None)

    def counts(self, recovery_s: float | None) -> dict[str, Any]:
        """record_case's counts."""
        return {
            "sent": len(self.acked),
            "delivered": len(self.delivered() & set(self.acked)),
            "lost": len(self.lost()),
            "duplicates": self.duplicates(),
            "longest_gap_s": self.longest_gap_s(),
            "recovery_s": recovery_s,
        }

    def summary(self) -> str:
        return (
            f"acknowledged {len(self.acked)}, outputs {len(self.outputs)} "
            f"({len(self.delivered())} distinct), lost {self.lost()[:20]}, wrong {self.wrong}, "
            f"duplicates {self.duplicates()}, acknowledged as 'No matching subscribers' "
            f"{len(self.acked_for_no_one())}, errors {self.errors[:3]}, "
            f"publisher connections {self.connection}, longest gap {self.longest_gap_s():.2f} s"
        )
