"""The ingest worker: an MQTT 5 (shared) subscription, batches into the Ingestor, PUBACK only after the commit."""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import queue
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.central.db import Database, open_db
from edge_agent.central.ingest import BatchResult, Ingestor, IngestSettings, Message, Prepared, ResendDue
from edge_agent.central.metrics import Metrics
from edge_agent.signals import get_within
from edge_agent.spine.config import MqttConfig
from edge_agent.spine.remote.message import sign_command
from edge_agent.spine.sync import TAKEN_OVER_S, describe_connect_error, make_client

log = logging.getLogger(__name__)

PUBACK = 0x40
# A stop taking longer than this logs what it waits for, and every thread's stack.
STOP_SLOW_S = 5.0
# PUBACK: type, remaining length 2, packet id (MQTT 3.1.1; in 5.0 the same bytes mean reason Success, 3.4.2.1)
_PUBACK = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    dsn: str
    mqtt: MqttConfig
    share: str | None = None
    client_id: str = "edge-central-ingest"
    batch_max: int = 1000
    batch_wait_s: float = 0.05
    # How many unacknowledged messages the broker may send us (MQTT 5 Receive Maximum): the batch pipeline.
    receive_max: int = 4000
    session_expiry_s: int = 3600
    sweep_every_s: float = 5.0
    ingest: IngestSettings = field(default_factory=IngestSettings)
    # Central's command key: when set, holes are asked for again with a signed resend.
    resend_key: Ed25519PrivateKey | None = None


class _ReadAhead:
    """paho's socket, read 64 KiB at a time: paho asks for a PUBLISH in four recv() calls (type, two
    length bytes, the rest) after one select() each; a backlog of 500-byte records then costs five
    system calls a message. pending() is the hook paho's loop already has for TLS's own buffer: while it
    is non-zero paho reads on without waiting in select(). Everything else is the socket's."""

    __slots__ = ("_buf", "_pos", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        buf, p = self._buf, self._pos
        if p >= len(buf):
            data: bytes = self._sock.recv(65536)  # BlockingIOError / SSLWantReadError go to paho as before
            if len(data) <= n:
                self._buf, self._pos = b"", 0
                return data
            buf, p = data, 0
            self._buf = buf
        # A packet longer than what is buffered gets what there is: paho asks again for the rest. The
        # position never passes the end, so pending() is never negative (truthy: paho would spin on it).
        end = min(p + n, len(buf))
        self._pos = end
        return buf[p:end]

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buf) - self._pos + int(inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class IngestClient(mqtt.Client):
    """paho's Client reading ahead (see _ReadAhead) and handling every buffered packet per wake-up."""

    def _create_socket(self) -> Any:
        return _ReadAhead(super()._create_socket())

    # Set by the worker: (topic, payload, mid) of a QoS 1 PUBLISH, called on paho's network thread.
    on_record: Callable[[str, bytes, int], None] | None = None

    def _handle_publish(self) -> MQTTErrorCode:
        """The records' own case without paho's per-message objects: MQTT 5, QoS 1, no properties.

        paho decodes every PUBLISH into a Properties object (a dozen attribute sets, even when there
        are none) and an MQTTMessage, then matches the topic against per-filter callbacks: a third of
        its time per record. A PUBLISH with properties, another QoS or protocol, an undecodable topic
        or a short packet takes paho's own path, as does everything when on_record is not set.
        """
        packet = self._in_packet["packet"]
        on_record = self.on_record
        if (
            on_record is not None
            and self._manual_ack
            and self._protocol == MQTTProtocolVersion.MQTTv5
            and (self._in_packet["command"] & 0x06) == 0x02  # QoS 1
            and len(packet) >= 2
        ):
            at = 2 + ((packet[0] << 8) | packet[1])  # after the topic
            if len(packet) > at + 2 and packet[at + 2] == 0:  # property length 0
                try:
                    topic = packet[2:at].decode("utf-8")
                except UnicodeDecodeError:
                    return super()._handle_publish()
                on_record(topic, bytes(memoryview(packet)[at + 3 :]), (packet[at] << 8) | packet[at + 1])
                return MQTTErrorCode.MQTT_ERR_SUCCESS  # acknowledged by the worker after its commit
        return super()._handle_publish()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and isinstance(self._sock, _ReadAhead) and self._sock.pending():
            rc = super().loop_read(max_packets)
        return rc


def record_filters(prefix: str, share: str | None) -> list[str]:
    """The records filter (shared when `share`), and the checkpoints filter (never shared: they are retained)."""
    rec = f"{prefix}/+/+/rec/+"
    return [f"$share/{share}/{rec}" if share else rec, f"{prefix}/+/+/checkpoint"]


class IngestWorker:
    """Owns one MQTT connection and one database connection; `run()` until `stop` is set."""

    def __init__(self, settings: WorkerSettings, stop: threading.Event, metrics: Metrics | None = None) -> None:
        self.s = settings
        self.stop = stop
        self.metrics = metrics
        self.q: queue.SimpleQueue[Message] = queue.SimpleQueue()  # C-level put/get: one per message
        self.connected = threading.Event()
        self._generation = 0  # bumps on every connection: a mid is only ackable on the connection it came on
        self._gen_lock = threading.Lock()
        self.client = make_client(settings.mqtt, settings.client_id, IngestClient)
        self.client.manual_ack_set(True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        if isinstance(self.client, IngestClient):
            self.client.on_record = self._on_record
        self.client.reconnect_delay_set(
            max(1, int(settings.mqtt.backoff_min_s)), max(1, int(settings.mqtt.backoff_max_s))
        )
        self._warned_refused = False
        self._connected_at = 0.0
        self.stored = 0
        self.batches = 0
        self.last_error: str | None = None
        self.failed = False

    # ------------------------------------------------------------ paho callbacks (network thread: enqueue only)
    def _on_connect(self, client: mqtt.Client, _ud: Any, flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            self.last_error = (
                f"broker {self.s.mqtt.host}:{self.s.mqtt.port} refused the connection: {reason} "
                "(check --username/--password-file or the client certificate)"
            )
            log.error("ingest: %s", self.last_error)
            return
        with self._gen_lock:
            self._generation += 1
        self._connected_at = time.monotonic()
        self.connected.set()
        filters = record_filters(self.s.mqtt.topic_prefix, self.s.share)
        client.subscribe([(f, 1) for f in filters])
        log.info(
            "ingest connected to %s:%s as %s (session present: %s), subscribed to %s",
            self.s.mqtt.host,
            self.s.mqtt.port,
            self.s.client_id,
            flags.session_present,
            ", ".join(filters),
        )

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if self.stop.is_set():
            self.connected.clear()
            return
        if self.connected.is_set():
            # Mosquitto closes the older of two clients with one id without a reason ("Unspecified error"):
            # two workers started with one --client-id knock each other off every second or so.
            short = time.monotonic() - self._connected_at < TAKEN_OVER_S
            hint = f"; if this repeats, another client may be using --client-id {self.s.client_id}" if short else ""
            log.warning("ingest: connection lost (%s)%s; unacknowledged messages will be redelivered", reason, hint)
            self._warned_refused = False
        elif not self._warned_refused:
            self.last_error = (
                f"broker {self.s.mqtt.host}:{self.s.mqtt.port} closed the connection before accepting it "
                "(client certificate missing or rejected? check --cert-file/--key-file and the broker's log)"
            )
            log.error("ingest: %s; retrying", self.last_error)
            self._warned_refused = True
        self.connected.clear()

    def _on_record(self, topic: str, payload: bytes, mid: int) -> None:
        self.q.put(Message(topic, payload, time.time(), (self._generation, mid, 1)))

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        self.q.put(Message(msg.topic, bytes(msg.payload), time.time(), (self._generation, msg.mid, msg.qos)))

    # ------------------------------------------------------------ connection
    def _connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.s.session_expiry_s
        props.ReceiveMaximum = self.s.receive_max
        delay = self.s.mqtt.backoff_min_s
        while not self.stop.is_set():
            try:
                self.client.connect(
                    self.s.mqtt.host, self.s.mqtt.port, self.s.mqtt.keepalive_s, clean_start=False, properties=props
                )
                return
            except OSError as exc:
                self.last_error = describe_connect_error(exc, self.s.mqtt)
                log.error("ingest: %s; retrying in %.0f s", self.last_error, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, self.s.mqtt.backoff_max_s)

    def _ack(self, batch: list[Message]) -> None:
        """PUBACK the batch's QoS 1 messages received on this connection (a mid means nothing on another).

        paho's ack(mid) queues one packet, wakes its network thread and sends it on its own; a batch of
        1,000 is one write instead (the same 4-byte PUBACKs, in order), through paho's own output queue
        so it never interleaves with what paho sends. QoS 2 (not subscribed to) goes through ack().
        """
        gen = self._generation
        mids = []
        for m in batch:
            if m.token is None:
                continue
            g, mid, qos = m.token
            if g != gen:
                continue
            if qos == 1:
                mids.append(mid)
            elif qos == 2:
                self.client.ack(mid, qos)
        if not mids:
            return
        queue_packet = getattr(self.client, "_packet_queue", None)
        if queue_packet is None:  # pragma: no cover - a paho without it: one ack() each
            for mid in mids:
                self.client.ack(mid, 1)
            return
        queue_packet(PUBACK, b"".join([_PUBACK.pack(PUBACK, 2, mid) for mid in mids]), 0, 0)

    # ------------------------------------------------------------ main loop
    def run(self) -> None:
        """Connect, then batch -> verify -> commit -> ack until stopped. Database errors retry the same batch.

        Two stages overlap: this thread parses and verifies the next batch (CPU) while the commit thread
        stores the previous one and waits for PostgreSQL's round trips and fsync; the handoff holds one
        prepared batch, so at most three batches are between verification and their acks (the broker's
        Receive Maximum bounds what is unacknowledged in all). Acks follow each commit, in order.
        """
        db = self._open_db()
        if db is None:
            return
        ing = Ingestor(db, self.s.ingest)
        self._connect()
        self.client.loop_start()
        handoff: queue.Queue[Prepared | None] = queue.Queue(maxsize=1)
        committer = threading.Thread(target=self._commit_loop, args=(ing, handoff), name="central-commit")
        committer.start()
        # The sweeper has its own thread and connection: scanning for holes never holds up a batch.
        sweeper = threading.Thread(target=self._sweep_loop, name="central-sweep", daemon=True)
        sweeper.start()
        carry: list[Message] = []
        try:
            while not self.stop.is_set() and committer.is_alive():
                batch = carry or self._take_batch()
                carry = []
                if not batch:
                    continue
                try:
                    prepared = ing.prepare(batch)
                except Exception:  # a bug, not bad input (that is an anomaly): say so, keep the batch
                    log.exception("ingest: batch of %d not verified; retrying, nothing acknowledged", len(batch))
                    carry = batch
                    self.stop.wait(1.0)
                    continue
                while not self.stop.is_set() and committer.is_alive():
                    try:
                        handoff.put(prepared, timeout=0.2)
                        break
                    except queue.Full:
                        continue
            if not self.stop.is_set():
                self.failed = True  # the service exits non-zero, so systemd restarts it
                log.error(
                    "ingest: the commit thread stopped unexpectedly; stopping (unacknowledged records are redelivered)"
                )
        finally:
            self._stop_threads(committer, handoff, sweeper)

    def _stop_threads(
        self, committer: threading.Thread, handoff: queue.Queue[Prepared | None], sweeper: threading.Thread
    ) -> None:
        """The batch in the commit thread finishes (stored and acked, or left for redelivery), then the MQTT
        connection closes. A stop taking longer than STOP_SLOW_S says what it waits for, with every thread's
        stack (once), so that a stuck stop is found the first time it happens rather than reproduced."""
        next_say = time.monotonic() + STOP_SLOW_S
        told = False

        def slow(what: str, *, now: bool = False) -> None:
            nonlocal next_say, told
            if not now and time.monotonic() < next_say:
                return
            next_say = time.monotonic() + STOP_SLOW_S
            log.warning("ingest: stopping is slow: waiting for %s", what)
            if not told:
                told = True
                with contextlib.suppress(AttributeError, ValueError, OSError):  # stderr without a file
                    faulthandler.dump_traceback(all_threads=True)

        while committer.is_alive():
            try:
                handoff.put(None, timeout=0.2)
                break
            except queue.Full:
                slow("the batch being stored (the database)")
        while committer.is_alive():
            committer.join(0.2)
            if committer.is_alive():
                slow("the batch being stored (the database)")
        self.client.disconnect()
        # paho's loop_stop() joins its network thread without a bound; that thread is a daemon, so a stuck
        # one is left behind (with its stack in the log) instead of keeping the process from exiting.
        closer = threading.Thread(target=self.client.loop_stop, name="mqtt-stop", daemon=True)
        closer.start()
        closer.join(STOP_SLOW_S)
        if closer.is_alive():
            slow("the MQTT network thread, which did not stop; exiting without it", now=True)
        sweeper.join(STOP_SLOW_S)
        if sweeper.is_alive():
            slow("the sweep (the database), which did not stop; exiting without it", now=True)

    def _commit_loop(self, ing: Ingestor, handoff: queue.Queue[Prepared | None]) -> None:
        """Commit prepared batches in order, then acknowledge them; a database error retries the same batch."""
        try:
            while True:
                prepared = handoff.get()
                if prepared is None:
                    return
                while True:
                    try:
                        result = ing.commit(prepared)
                        break
                    except Exception as exc:  # noqa: BLE001 - any DB failure: keep the batch, reconnect, retry
                        n = len(prepared.batch)
                        log.error("ingest: batch of %d not stored (%s); retrying, nothing acknowledged", n, exc)
                        self.last_error = f"database: {exc}"
                        ing.db.close()
                        self.stop.wait(1.0)
                        db = self._open_db()
                        if db is None:
                            return  # stopping: the batch stays unacknowledged and is redelivered
                        ing.use_db(db)
                self._ack(prepared.batch)
                self._account(result, len(prepared.batch))
                if result.rotated:
                    try:
                        back = ing.take_pending(result.rotated)
                    except Exception as exc:  # noqa: BLE001 - the sweeper takes them back later
                        log.warning("ingest: records parked for a new key not taken back yet (%s)", exc)
                        back = []
                    for m in back:
                        self.q.put(m)
        finally:
            ing.db.close()

    def _sweep_loop(self) -> None:
        """Every sweep_every_s: holes, short tails, unknown keys; parked records whose key is known go back in."""
        db: Database | None = None
        try:
            while not self.stop.wait(self.s.sweep_every_s):
                if db is None:
                    db = self._open_db()
                    if db is None:
                        return
                ing = Ingestor(db, self.s.ingest)
                try:
                    found = ing.sweep()
                    back = ing.take_pending(ing.releasable())
                    key = self.s.resend_key
                    due = ing.resends_due() if key is not None and self.connected.is_set() else []
                except Exception as exc:  # noqa: BLE001 - reconnect and try again at the next sweep
                    log.warning("ingest: sweep failed (%s); reconnecting to the database", exc)
                    db.close()
                    db = None
                    continue
                if self.metrics is not None:
                    self.metrics.sweep(found)
                for m in back:
                    self.q.put(m)
                if key is not None:
                    for hole in due:
                        self._ask_resend(hole, key)
        finally:
            if db is not None:
                db.close()

    def _ask_resend(self, hole: ResendDue, key: Ed25519PrivateKey) -> None:
        """Publish a signed resend for one hole to its device (QoS 1; the broker keeps it for an offline device)."""
        ing = self.s.ingest
        msg = sign_command(
            key,
            device=hole.device,
            name="resend",
            args={"first_seq": hole.first_seq, "last_seq": hole.last_seq},
            ttl_s=ing.resend_every_s,
        )
        topic = f"{ing.topic_prefix}/{hole.site}/{hole.device}/cmd/resend"
        info = self.client.publish(topic, json.dumps(msg, separators=(",", ":")).encode("utf-8"), qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.warning(
                "ingest: resend for %s seq %d-%d not sent (%s); asking again later",
                hole.device,
                hole.first_seq,
                hole.last_seq,
                mqtt.error_string(info.rc),
            )
            return
        log.info(
            "ingest: hole on %s: asked it to resend seq %d-%d (ask %d of %d)",
            hole.device,
            hole.first_seq,
            hole.last_seq,
            hole.attempt,
            ing.resend_max,
        )
        if self.metrics is not None:
            self.metrics.resends.inc()

    def _open_db(self) -> Database | None:
        delay = 1.0
        while not self.stop.is_set():
            try:
                return open_db(self.s.dsn)
            except Exception as exc:  # noqa: BLE001 - the database may come back; say so once per try
                self.last_error = str(exc)
                log.error("ingest: %s; retrying in %.0f s", exc, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, 30.0)
        return None

    def _take_batch(self) -> list[Message]:
        try:
            first = get_within(self.q, 0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.s.batch_wait_s
        while len(batch) < self.s.batch_max:
            try:
                batch.append(self.q.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(get_within(self.q, left))
            except queue.Empty:
                break
        return batch

    def _account(self, result: BatchResult, n: int) -> None:
        self.stored += result.stored
        self.batches += 1
        if self.metrics is not None:
            self.metrics.batch(result, n)
        for a in result.anomalies:
            log.warning("anomaly %s %s seq %s: %s", a.kind, a.device, a.seq, a.message)
