"""MQTT consumer: at-least-once processing of ``{"id", "instances"}`` messages.

Delivery guarantees:
- MQTT v5 persistent session (fixed client id, clean_start=False, session expiry) so messages published
  while the consumer is down are queued by the broker and delivered when it comes back.
- manual acks: the PUBACK for an input message is sent only after the broker acknowledged our result
  (or error report) at QoS 1. If the process dies in between, the broker redelivers the input.
- a result the broker refuses (PUBACK with a failure reason code: an ACL, a quota) is not retried: its error
  report goes to the error topic with the broker's reason, and the input is acknowledged once that report is
  accepted. An error report refused too is logged and counted
  (``mlpacker_errors_total{kind="report_refused"}``) and the input acknowledged: never a redelivery loop.
  After ``stream.max_consecutive_refusals`` refusals in a row, /health/ready answers 503 naming the topic
  and the reason, until a result is accepted again.
- Messages are processed in paho's network thread, in arrival order; that also makes the bookkeeping
  between "result published" and "input acked" single-threaded.

Duplicates (at-least-once means a message may be taken twice: redelivered after a crash or a lost
connection, or published twice upstream): every result and error report carries the input's ``id`` and
``attempts``, one entry per service the message went through, in chain order (the input's own ``attempts``
forwarded, this service's added): ``{"iris-scale": 1, "iris-reduce": 2}``. A service's count is what it
can know: the deliveries of this id this process has taken (RecentIds, the last ATTEMPT_MEMORY ids), and at
least 2 when the broker flags the delivery as a possible repeat (MQTT DUP: sent before, maybe processed,
maybe not). So a repeat caused by a redelivery or seen by this process is always marked (count above 1),
but a mark is no proof: the broker also flags messages it had sent to a consumer that died before taking
them, and messages it kept across its own restart.
``stream.dedup_window`` N > 0 also drops a message whose id is among those of the last N results this
process published (acknowledged, logged, counted in ``mlpacker_duplicates_total``). An id is remembered when
its result is published, in arrival order, so a repeat right behind it is dropped too (its input stays
unacked until the broker takes the result: answered, or redelivered, never lost); it is forgotten when the
broker refuses that result or the connection drops before the broker took it (its input comes back and is
processed again). Error reports are not remembered: a message that failed is tried again. The memory is
per process: lost at restart, not shared between the replicas of a shared subscription.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mlpacker_runtime.auth import BearerAuth
from mlpacker_runtime.chain import InputError, StageError
from mlpacker_runtime.health_server import HealthServer
from mlpacker_runtime.request_body import BodyError, parse_json
from mlpacker_runtime.secret_files import read_password
from mlpacker_runtime.service import Service
from mlpacker_runtime.tls import server_context

log = logging.getLogger("mlpacker_runtime.stream")
# An error report carries at most this much of the bad message (never all of it: a client must not be able
# to make the error topic carry, or the consumer hold, copies of whatever it sends).
PAYLOAD_EXCERPT_BYTES = 1024
# Ids whose deliveries are counted for ``attempts`` (or stream.dedup_window, when larger): ~100 bytes each.
ATTEMPT_MEMORY = 1024


class MessageTooLarge(InputError):
    """A message over stream.max_message_bytes: reported, never parsed."""


@dataclass(frozen=True)
class InFlight:
    """A publish the broker has not acknowledged yet, and the input message it answers."""

    input_mid: int
    input_qos: int
    received: float
    topic: str
    is_report: bool  # an error report (else a result)
    message_id: Any
    id_key: bytes | None  # the id's digest (RecentIds), None for a message without an id
    attempts: dict[str, int]  # the marker the result carries, for its report if the broker refuses it
    excerpt: bytes  # the input's first PAYLOAD_EXCERPT_BYTES, for a report if the broker refuses the result
    size: int


class RecentIds:
    """The last ``capacity`` ids seen, each with a count; by a digest of the id's JSON, so a long id costs
    16 bytes. Touched only from paho's network thread."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._counts: OrderedDict[bytes, int] = OrderedDict()

    @staticmethod
    def key(message_id: Any) -> bytes | None:
        """The digest of an id (``1`` and ``"1"`` differ), None when the message has none."""
        if message_id is None:
            return None
        text = json.dumps(message_id, sort_keys=True, separators=(",", ":"))
        return hashlib.blake2b(text.encode(), digest_size=16).digest()

    def __contains__(self, key: bytes) -> bool:
        return key in self._counts

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, key: bytes) -> int:
        """Count one more sighting of ``key`` (now the most recent); return its count."""
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        while len(self._counts) > self.capacity:
            self._counts.popitem(last=False)
        return count

    def discard(self, key: bytes) -> None:
        self._counts.pop(key, None)


def upstream_attempts(payload: dict[str, Any]) -> dict[str, int]:
    """The ``attempts`` an input carries from the services before this one ({} when it has none)."""
    attempts = payload.get("attempts")
    if attempts is None:
        return {}
    if not isinstance(attempts, dict) or not all(
        isinstance(count, int) and not isinstance(count, bool) and count >= 1 for count in attempts.values()
    ):
        raise InputError(
            f"attempts: expected an object of service name -> attempt count (an integer >= 1), "
            f"got {json.dumps(attempts)[:200]}"
        )
    return attempts


def subscription_topic(stream: dict[str, Any]) -> str:
    if stream["share_group"]:
        return f"$share/{stream['share_group']}/{stream['input_topic']}"
    return stream["input_topic"]


class StreamConsumer:
    def __init__(self, config: dict[str, Any], service: Service | None = None):
        self.config = config
        self.stream = config["stream"]
        self.service = service or Service(config)
        self.metrics = self.service.metrics
        self.topic = subscription_topic(self.stream)
        self.qos = self.stream["qos"]
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.stopping = threading.Event()
        # publish mid -> what it answers; touched only from paho's network thread, but guarded anyway because
        # drain() reads it from the main thread.
        self._pending: dict[int, InFlight] = {}
        self._lock = threading.Lock()
        # Publishes the broker refused in a row, and the last refusal (topic, reason): readiness reads them.
        self.refusals = 0
        self.last_refusal = ""
        # Deliveries taken per id (the attempt marker); ids of the results published (stream.dedup_window).
        window = self.stream["dedup_window"]
        self.taken = RecentIds(max(ATTEMPT_MEMORY, window))
        self.answered = RecentIds(window) if window > 0 else None
        self.client = self._make_client()
        self.health: HealthServer | None = None

    # ------------------------------------------------------------ setup

    def _make_client(self) -> mqtt.Client:
        broker = self.stream["broker"]
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.stream["client_id"],
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if broker["username"] is not None:
            password = broker["password"]
            if broker["password_file"] is not None:
                password = read_password(broker["password_file"])
            client.username_pw_set(broker["username"], password)
        tls = broker["tls"]
        if tls["enabled"]:
            # paho verifies the broker's certificate (against ca_file, else the system's CAs) and its host
            # name; tls.insecure turns the host name check off, never the certificate check.
            client.tls_set(ca_certs=tls["ca_file"], certfile=tls["cert_file"], keyfile=tls["key_file"])
            client.tls_insecure_set(tls["insecure"])
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        # Inputs stay unacked until their result is acked, so the result window bounds throughput:
        # allow more results in flight than paho's default of 20 (the broker may lower it in CONNACK).
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def readiness(self) -> tuple[int, dict[str, Any]]:
        status, body = self.service.readiness()
        if status != 200:
            return status, body
        if self.stopping.is_set():
            return 503, {"status": "stopping", "error": "draining in-flight messages"}
        refusals = self.refusals
        if refusals >= self.stream["max_consecutive_refusals"]:
            return 503, {
                "status": "refused",
                "error": f"the broker refused the last {refusals} publishes ({self.last_refusal}): check "
                "what the broker lets this service's user publish (ACL, quotas); results go to the error "
                "topic meanwhile",
            }
        if not (self.connected.is_set() and self.subscribed.is_set()):
            broker = self.stream["broker"]
            return 503, {
                "status": "connecting",
                "error": f"not subscribed to {self.topic} on {broker['host']}:{broker['port']} yet",
            }
        return 200, {"status": "ready"}

    def start_health(self) -> None:
        self.health = HealthServer(
            self.stream["health_bind"],
            self.stream["health_port"],
            self.service,
            self.readiness,
            tls_context=server_context(self.config["security"]["tls"]),
            auth=BearerAuth.from_config(self.config),
        )
        self.health.start()

    def connect(self) -> None:
        broker = self.stream["broker"]
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.stream["session_expiry_s"]
        # connect_async + loop_start: the first connection and every reconnect (with backoff) happen in
        # paho's thread, so a broker that is down at start is retried instead of crashing the service.
        self.client.connect_async(
            broker["host"],
            broker["port"],
            keepalive=self.stream["keepalive_s"],
            clean_start=False,
            properties=properties,
        )
        self.client.loop_start()

    # ------------------------------------------------------------ paho callbacks

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        sock = client.socket()
        if sock is not None:
            # Small JSON messages: do not let Nagle hold them back waiting for more data.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connected.set()
        log.info(
            "connected to broker (session present: %s); subscribing to %s", flags.session_present, self.topic
        )
        client.subscribe(self.topic, qos=self.qos)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this from inside its `except OSError` around the connect, and passes no exception:
        # the one being handled says why (refused, unreachable, broker certificate not trusted).
        reason = sys.exc_info()[1]
        broker = self.stream["broker"]
        log.warning(
            "cannot connect to broker %s:%s: %s; retrying with backoff",
            broker["host"],
            broker["port"],
            reason,
        )

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        failed = [code for code in reason_codes if code.is_failure]
        if failed:
            log.error("subscription to %s refused: %s", self.topic, failed)
            return
        self.subscribed.set()
        log.info("subscribed to %s", self.topic)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self.connected.clear()
        self.subscribed.clear()
        with self._lock:
            # Unacked inputs are redelivered by the broker on reconnect; acking old mids later could ack a
            # different message that reuses the id, so forget them.
            lost = list(self._pending.values())
            self._pending.clear()
        if self.answered is not None:
            # Their results may never have reached the broker: the redelivered inputs must not be dropped.
            for entry in lost:
                if entry.id_key is not None and not entry.is_report:
                    self.answered.discard(entry.id_key)
        if not self.stopping.is_set():
            log.warning("disconnected from broker (%s); reconnecting with backoff", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self.stopping.is_set():
            return  # left unacked: the broker redelivers it to this session (or a replica) later
        received = time.perf_counter()
        raw = message.payload
        handled = self._handle(raw, redelivered=bool(message.dup))
        if handled is None:  # a repeat of an answered id (stream.dedup_window): acknowledged, not processed
            if message.qos > 0:
                client.ack(message.mid, message.qos)
            return
        topic, payload, message_id, id_key, attempts = handled
        info = client.publish(topic, payload, qos=self.qos)
        entry = InFlight(
            input_mid=message.mid,
            input_qos=message.qos,
            received=received,
            topic=topic,
            is_report=topic == self.stream["error_topic"],
            message_id=message_id,
            id_key=id_key,
            attempts=attempts,
            excerpt=raw[:PAYLOAD_EXCERPT_BYTES],
            size=len(raw),
        )
        with self._lock:
            self._pending[info.mid] = entry
        if self.answered is not None and id_key is not None and not entry.is_report:
            # Remembered from now on, so a repeat right behind it is dropped too: the input stays unacked
            # until the broker takes the result, so the id is answered or the input redelivered, never lost.
            self.answered.add(id_key)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        with self._lock:
            entry = self._pending.pop(mid, None)
        if entry is None:
            return
        if reason_code.is_failure:
            self._refused(client, entry, str(reason_code))
            return
        if not entry.is_report:
            self.refusals = 0
        if entry.input_qos > 0:
            client.ack(entry.input_mid, entry.input_qos)
        self.metrics.message_seconds.observe(time.perf_counter() - entry.received)

    def _refused(self, client: mqtt.Client, entry: InFlight, reason: str) -> None:
        """The broker refused a publish: report a refused result, drop (logged, counted) a refused report."""
        self.refusals += 1
        self.last_refusal = f"latest: {reason} on {entry.topic}"
        if not entry.is_report:
            if self.answered is not None and entry.id_key is not None:
                self.answered.discard(entry.id_key)  # not answered: a repeat is tried again
            self.metrics.errors.labels("result_refused").inc()
            error = f"the broker refused the result on {entry.topic}: {reason}"
            log.warning("message %r sent to %s: %s", entry.message_id, self.stream["error_topic"], error)
            report = self._report(entry.message_id, None, error, entry.excerpt, entry.size, entry.attempts)
            info = client.publish(self.stream["error_topic"], report, qos=self.qos)
            with self._lock:
                self._pending[info.mid] = replace(entry, topic=self.stream["error_topic"], is_report=True)
            return
        # Nowhere left to put it: the log and the counter are its trace; acknowledged, so it is not
        # redelivered to be refused again, forever.
        self.metrics.errors.labels("report_refused").inc()
        log.error(
            "the broker refused the error report of message %r (%s bytes) on %s: %s; the message is dropped, "
            "its first bytes: %r",
            entry.message_id,
            entry.size,
            entry.topic,
            reason,
            entry.excerpt[:200],
        )
        if entry.input_qos > 0:
            client.ack(entry.input_mid, entry.input_qos)

    # ------------------------------------------------------------ processing

    def _report(
        self,
        message_id: Any,
        stage: str | None,
        error: str,
        excerpt: bytes,
        size: int,
        attempts: dict[str, int],
    ) -> bytes:
        """An error report: the message's id and attempts, where it failed and why, and its first bytes
        (never all)."""
        report = {
            "id": message_id,
            "attempts": attempts,
            "service": self.config["service"],
            "stage": stage,
            "error": error,
            # The first PAYLOAD_EXCERPT_BYTES of the message, its size, and whether that is all of it.
            "payload": excerpt[:PAYLOAD_EXCERPT_BYTES].decode("utf-8", errors="replace"),
            "payload_bytes": size,
            "payload_truncated": size > PAYLOAD_EXCERPT_BYTES,
        }
        return json.dumps(report).encode()

    def _handle(
        self, raw: bytes, *, redelivered: bool
    ) -> tuple[str, bytes, Any, bytes | None, dict[str, int]] | None:
        """Run the chain on one message; return (topic, payload) of the result or of the error report, the
        message's id, its digest and its attempts; None for a repeat stream.dedup_window drops."""
        stream = self.stream
        service = self.config["service"]
        message_id: Any = None
        id_key: bytes | None = None
        # Without a readable id nothing is remembered: the broker's redelivery flag is all there is to go on.
        attempts = {service: 2 if redelivered else 1}
        stage = self.config["stages"][0]["name"]  # input problems are reported against the first stage
        try:
            if len(raw) > stream["max_message_bytes"]:
                raise MessageTooLarge(
                    f"message of {len(raw)} bytes exceeds stream.max_message_bytes "
                    f"({stream['max_message_bytes']} bytes): not parsed"
                )
            try:
                # As for REST: NaN/Infinity and too deep nesting are refused (request_body.parse_json).
                payload = parse_json(raw, "message")
            except BodyError as exc:
                raise InputError(str(exc)) from None
            if not isinstance(payload, dict) or "instances" not in payload:
                raise InputError('message must be a JSON object {"id": ..., "instances": [[...], ...]}')
            message_id = payload.get("id")
            id_key = RecentIds.key(message_id)
            if id_key is not None:
                if self.answered is not None and id_key in self.answered:
                    self.metrics.duplicates.inc()
                    log.info(
                        "message %r dropped: a result with this id was published within the last %d "
                        "results (stream.dedup_window)%s",
                        message_id,
                        stream["dedup_window"],
                        ", redelivered by the broker" if redelivered else "",
                    )
                    return None
                attempts[service] = max(attempts[service], self.taken.add(id_key))
            if attempts[service] > 1:
                self.metrics.repeats.inc()
                log.info("message %r taken again (attempt %d here)", message_id, attempts[service])
            # The services before this one first, in chain order, then this one (last, even if named before).
            upstream = {name: count for name, count in upstream_attempts(payload).items() if name != service}
            attempts = {**upstream, **attempts}
            instances = payload["instances"]
            if isinstance(instances, list):
                self.metrics.batch_size.observe(len(instances))
            assert self.service.chain is not None
            result = self.service.chain.predict(instances, observe=self.metrics.observe_stage)
        except Exception as exc:
            # Whatever goes wrong, the message is reported and the consumer keeps going (an exception
            # escaping a paho callback would stop the network loop).
            if isinstance(exc, StageError):
                stage = exc.stage
                kind = "stage"
            elif isinstance(exc, MessageTooLarge):
                kind = "message_too_large"
            elif isinstance(exc, InputError):
                kind = "bad_input"
            else:
                log.exception("unexpected error on message %r", message_id)
                kind = "internal"
                exc = RuntimeError(f"internal error: {type(exc).__name__}: {exc}")
            self.metrics.messages.labels("error").inc()
            self.metrics.errors.labels(kind).inc()
            log.warning("message %r sent to %s: %s", message_id, stream["error_topic"], exc)
            report = self._report(
                message_id, stage, str(exc), raw[:PAYLOAD_EXCERPT_BYTES], len(raw), attempts
            )
            return stream["error_topic"], report, message_id, id_key, attempts
        self.metrics.messages.labels("ok").inc()
        body = {"id": message_id, stream["output_kind"]: result, "attempts": attempts}
        payload_out = json.dumps(body, separators=(",", ":")).encode()
        return stream["output_topic"], payload_out, message_id, id_key, attempts

    # ------------------------------------------------------------ lifecycle

    def drain(self) -> None:
        """Stop taking messages, wait for in-flight results to be acknowledged, disconnect cleanly."""
        self.stopping.set()
        deadline = time.monotonic() + self.stream["drain_timeout_s"]
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    break
            time.sleep(0.02)
        with self._lock:
            left = len(self._pending)
        if left:
            log.warning(
                "drain timeout: %d results not acknowledged; the broker will redeliver their inputs", left
            )
        # A normal DISCONNECT keeps the session (expiry set at connect), so queued messages wait for us.
        self.client.disconnect()
        self.client.loop_stop()

    def run(self) -> int:
        """Load, connect and consume until SIGTERM/SIGINT; return the process exit code."""
        stop = threading.Event()

        def request_stop(signum: int, frame: Any) -> None:
            log.info("signal %s: draining and stopping", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.start_health()
        try:
            self.service.load()
        except Exception as exc:
            log.error("service %s: %s", self.config["service"], exc)
            if self.health is not None:
                self.health.stop()
            return 1
        self.connect()
        while not stop.wait(0.5):
            pass
        self.drain()
        if self.health is not None:
            self.health.stop()
        log.info("stopped")
        return 0
