"""The ingest worker: an MQTT 5 (shared) subscription, batches into the Ingestor, PUBACK only after the commit."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.central.db import Database, open_db
from edge_agent.central.ingest import BatchResult, Ingestor, IngestSettings, Message
from edge_agent.central.metrics import Metrics
from edge_agent.spine.config import MqttConfig
from edge_agent.spine.sync import describe_connect_error, make_client

log = logging.getLogger(__name__)


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
        self.q: queue.Queue[Message] = queue.Queue()
        self.connected = threading.Event()
        self._generation = 0  # bumps on every connection: a mid is only ackable on the connection it came on
        self._gen_lock = threading.Lock()
        self.client = make_client(settings.mqtt, settings.client_id)
        self.client.manual_ack_set(True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(
            max(1, int(settings.mqtt.backoff_min_s)), max(1, int(settings.mqtt.backoff_max_s))
        )
        self._warned_refused = False
        self.stored = 0
        self.batches = 0
        self.last_error: str | None = None

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
            log.warning("ingest: connection lost (%s); unacknowledged messages will be redelivered", reason)
            self._warned_refused = False
        elif not self._warned_refused:
            self.last_error = (
                f"broker {self.s.mqtt.host}:{self.s.mqtt.port} closed the connection before accepting it "
                "(client certificate missing or rejected? check --cert-file/--key-file and the broker's log)"
            )
            log.error("ingest: %s; retrying", self.last_error)
            self._warned_refused = True
        self.connected.clear()

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        token = (self._generation, msg.mid, msg.qos)
        self.q.put(Message(msg.topic, bytes(msg.payload), time.time(), token))

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
        gen = self._generation
        for m in batch:
            if m.token is None:
                continue
            g, mid, qos = m.token
            if g == gen and qos > 0:
                self.client.ack(mid, qos)

    # ------------------------------------------------------------ main loop
    def run(self) -> None:
        """Connect, then batch -> verify -> commit -> ack until stopped. Database errors retry the same batch."""
        db = self._open_db()
        if db is None:
            return
        ing = Ingestor(db, self.s.ingest)
        self._connect()
        self.client.loop_start()
        carry: list[Message] = []
        # The sweeper has its own thread and connection: scanning for holes never holds up a batch.
        sweeper = threading.Thread(target=self._sweep_loop, name="central-sweep", daemon=True)
        sweeper.start()
        try:
            while not self.stop.is_set():
                batch = carry or self._take_batch()
                carry = []
                if batch:
                    try:
                        result = ing.process(batch)
                    except Exception as exc:  # noqa: BLE001 - any DB failure: keep the batch, reconnect, retry
                        log.error(
                            "ingest: batch of %d not stored (%s); retrying, nothing acknowledged", len(batch), exc
                        )
                        self.last_error = f"database: {exc}"
                        carry = batch
                        db.close()
                        self.stop.wait(1.0)
                        db = self._open_db()
                        if db is None:
                            return
                        ing = Ingestor(db, self.s.ingest)
                        continue
                    self._ack(batch)
                    self._account(result, len(batch))
                    if result.rotated:
                        carry = ing.take_pending(result.rotated)
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            if db is not None:
                db.close()
            sweeper.join(5)

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
                except Exception as exc:  # noqa: BLE001 - reconnect and try again at the next sweep
                    log.warning("ingest: sweep failed (%s); reconnecting to the database", exc)
                    db.close()
                    db = None
                    continue
                if self.metrics is not None:
                    self.metrics.sweep(found)
                for m in back:
                    self.q.put(m)
        finally:
            if db is not None:
                db.close()

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
            first = self.q.get(timeout=0.2)
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
                batch.append(self.q.get(timeout=left))
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
