"""MQTT store-and-forward: publish undelivered records in seq order, mark them delivered on PUBACK."""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.errors import SyncError
from edge_agent.spine.config import MqttConfig, SpineConfig
from edge_agent.spine.outbox import Outbox, is_damage

log = logging.getLogger(__name__)

STALE_S = 60  # a record in flight this long while connected is published again
# A connection lost sooner after it was made may have been taken over: mosquitto closes the older of two clients
# with one client id, without a reason (paho says "Unspecified error"), and the two knock each other off.
TAKEN_OVER_S = 10.0
# Room for the fixed header, topic and properties around a command payload of commands.max_bytes.
PACKET_OVERHEAD_BYTES = 4096


def topic_base(cfg: SpineConfig) -> str:
    return f"{cfg.mqtt.topic_prefix}/{cfg.device.site}/{cfg.device.id}"


def make_client(m: MqttConfig, client_id: str, client_class: type[mqtt.Client] = mqtt.Client) -> mqtt.Client:
    """A paho 2.x client (callback API v2) with TLS, mTLS and credentials as configured."""
    protocol = mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311
    kwargs: dict[str, Any] = {}
    if protocol == mqtt.MQTTv311:
        kwargs["clean_session"] = False
    client = client_class(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs)
    if m.tls:
        if m.ca_file is not None and not Path(m.ca_file).exists():
            raise SyncError(f"mqtt.ca_file: {m.ca_file} not found (the CA that signed the broker's certificate)")
        for name in ("cert_file", "key_file"):
            p = getattr(m, name)
            if p is not None and not Path(p).exists():
                raise SyncError(f"mqtt.{name}: {p} not found")
        if (m.cert_file is None) != (m.key_file is None):
            raise SyncError("mqtt.cert_file and mqtt.key_file go together (client certificate for mTLS)")
        try:
            client.tls_set(
                ca_certs=str(m.ca_file) if m.ca_file else None,
                certfile=str(m.cert_file) if m.cert_file else None,
                keyfile=str(m.key_file) if m.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise SyncError(
                f"mqtt TLS setup failed: {exc} (check mqtt.ca_file, mqtt.cert_file, mqtt.key_file)"
            ) from None
    elif m.ca_file or m.cert_file:
        log.warning("mqtt.ca_file/cert_file are set but mqtt.url is not mqtts://; they are ignored")
    try:
        password = m.password_value()
    except OSError as exc:
        raise SyncError(f"mqtt.password_file: {m.password_file}: cannot read ({exc.strerror or exc})") from None
    if m.username is not None:
        client.username_pw_set(m.username, password)
    return client


def describe_connect_error(exc: BaseException, m: MqttConfig) -> str:
    where = f"{m.host}:{m.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: broker {where} certificate not trusted ({exc.verify_message}); check mqtt.ca_file"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed ({exc.reason or exc}); check mqtt.ca_file / client certificate"
    if isinstance(exc, ConnectionRefusedError):
        return f"broker {where} refused the TCP connection (is it running, is the port right?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve broker host {m.host!r} ({exc.strerror})"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"broker {where} did not answer in time (network down?)"
    return f"cannot connect to broker {where}: {exc}"


def max_packet_bytes(command_max_bytes: int) -> int:
    """MQTT 5 Maximum Packet Size for the CONNECT: the broker drops (never sends) a larger packet.

    Twice commands.max_bytes: a payload somewhat over the limit still arrives and is refused and
    recorded as `oversized` (central learns of it); a 200 MB one is never buffered and copied here.
    """
    return 2 * command_max_bytes + PACKET_OVERHEAD_BYTES


def probe_connect(m: MqttConfig, client_id: str, timeout_s: float) -> str | None:
    """Connect once with these settings and wait for the broker to accept; an error message, or None."""
    try:
        client = make_client(m, client_id)
    except SyncError as exc:
        return str(exc)
    accepted = threading.Event()
    refused: list[str] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            refused.append(f"broker {m.host}:{m.port} refused the connection: {reason}")
        accepted.set()

    client.on_connect = on_connect
    try:
        if m.protocol == "5":
            client.connect(m.host, m.port, m.keepalive_s, clean_start=True)
        else:
            client.connect(m.host, m.port, m.keepalive_s)
    except (OSError, ssl.SSLError) as exc:
        return describe_connect_error(exc, m)
    client.loop_start()
    try:
        if not accepted.wait(timeout_s):
            return f"broker {m.host}:{m.port} did not accept the connection within {timeout_s:.0f} s"
        return refused[0] if refused else None
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()


def resume_cursor(outbox: Outbox, in_flight: set[int]) -> int:
    """The seq the publisher continues after: just before the first undelivered record, past those paho
    still has in flight (it re-sends them itself), or the head when everything is delivered.

    The head is read first. The agent appends while this runs: read after the first-undelivered query,
    the head could already hold records that query did not see, and the cursor would jump over them for
    as long as the connection lasts (seen: seq 1 never sent, 449 records later).
    """
    head = outbox.head()[0]
    first = outbox.first_undelivered_seq()
    cursor = (first - 1) if first is not None else head
    while cursor + 1 in in_flight:
        cursor += 1
    return cursor


def _varint(n: int) -> bytes:
    """MQTT's Variable Byte Integer (the remaining length of a packet)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _loop_writes(_client: mqtt.Client, _userdata: Any, _sock: Any) -> None:
    """paho's write hook: nothing to register, the network thread's loop() writes (MqttSync.__init__)."""


class MqttSync:
    """Owns the MQTT connection: a network thread (connect, backoff with jitter) and a publisher thread."""

    def __init__(
        self,
        cfg: SpineConfig,
        db_path: Path,
        *,
        on_command: Callable[[str, bytes], None] | None = None,
        on_damage: Callable[[sqlite3.Error], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.m = cfg.mqtt
        self.db_path = db_path
        self.base = topic_base(cfg)
        self.status_topic = f"{self.base}/status"
        self.cmd_filter = f"{self.base}/cmd/+"
        self.on_command = on_command
        self.on_damage = on_damage  # the chain writer mends a damaged outbox (ChainWriter.report_damage)
        self.client_id = self.m.client_id or f"edge-agent-{cfg.device.site}-{cfg.device.id}"
        self.client = make_client(self.m, self.client_id)
        self.client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        self.client.max_inflight_messages_set(self.m.inflight_max)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        # Only the network thread writes to the socket. paho writes a packet from the thread that calls
        # publish() when it sees no loop thread of its own (ours is a manual loop), and two threads taking
        # packets off its queue at once can put seq 56 on the wire before seq 55 (seen under load after a
        # broker outage). With this hook set, publish() only queues the packet and wakes our loop.
        self.client.on_socket_register_write = _loop_writes
        self.connected = threading.Event()
        # Set once the broker acknowledged the command subscription of this connection: commands
        # published before that, on a first connection, have no session to wait in.
        self.subscribed = threading.Event()
        self.last_error: str | None = None
        self.last_delivered_seq: int | None = None
        self.delivered = 0
        self.heartbeat = time.monotonic()
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._refusals: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._rewind = threading.Event()
        self._stop = threading.Event()
        self._pub_stop = threading.Event()
        self._drained = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connected_since: float | None = None
        self._taken_over: str | None = None  # last_error of connections lost soon after they were made
        self._refusal: str | None = None  # last_error of the latest record the broker refused
        self._got_connack = False
        # The broker's Maximum Packet Size (MQTT 5 CONNACK): it drops the connection on a larger PUBLISH.
        self.broker_max_packet: int | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for target, name in ((self._net_loop, "mqtt-net"), (self._pub_loop, "mqtt-pub")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def notify(self, _head_seq: int = 0) -> None:
        """New records were committed: wake the publisher."""
        self._wake.set()

    def rewind(self) -> None:
        """Start again from the first undelivered record (records were re-queued for a resend)."""
        self._rewind.set()
        self._wake.set()

    def drain(self, timeout_s: float) -> bool:
        """Wait until every committed record is acknowledged (or the timeout); True when drained."""
        deadline = time.monotonic() + timeout_s
        self._drained.clear()
        self._wake.set()
        while time.monotonic() < deadline:
            if self._drained.wait(0.1):
                return True
            if not self.connected.is_set():
                return False
        return False

    def stop(self, flush_timeout_s: float = 3.0) -> None:
        """Flush what can be flushed, say `offline` (retained), disconnect cleanly."""
        if self.connected.is_set():
            self.drain(flush_timeout_s)
        self._pub_stop.set()
        if self.connected.is_set():
            with contextlib.suppress(Exception):
                info = self.client.publish(self.status_topic, b"offline", qos=1, retain=True)
                info.wait_for_publish(1.0)
        self._stop.set()
        with contextlib.suppress(Exception):
            self.client.disconnect()
        for t in self._threads:
            t.join(3)
        with contextlib.suppress(Exception):
            self.client.loop_write()  # the DISCONNECT, if the network thread ended before it was queued

    # ------------------------------------------------------------ callbacks (paho thread: enqueue only)
    def _on_connect(self, client: mqtt.Client, _ud: Any, flags: Any, reason: Any, props: Any) -> None:
        self._got_connack = True
        limit = getattr(props, "MaximumPacketSize", None)
        self.broker_max_packet = limit if isinstance(limit, int) else None
        if reason.is_failure:
            self.last_error = (
                f"broker {self.m.host}:{self.m.port} refused the connection: {reason} "
                "(check mqtt.username/password or client certificate)"
            )
            log.error("MQTT: %s", self.last_error)
            return
        if self.last_error != self._taken_over:  # that one stays until a connection outlives TAKEN_OVER_S
            self.last_error = None
        self.connected.set()
        self._connected_since = time.monotonic()
        log.info("MQTT connected to %s:%s (session present: %s)", self.m.host, self.m.port, flags.session_present)
        client.publish(self.status_topic, b"online", qos=1, retain=True)
        client.subscribe(self.cmd_filter, qos=1)
        self._wake.set()

    def _on_subscribe(self, _c: mqtt.Client, _ud: Any, _mid: int, reasons: Any, _props: Any) -> None:
        if all(not getattr(r, "is_failure", False) for r in reasons):
            self.subscribed.set()
        else:
            log.error(
                "MQTT: the broker refused the command subscription %s (%s); check its ACL", self.cmd_filter, reasons
            )

    def _on_disconnect(self, _c: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        if not was or self._stop.is_set():
            return
        since = self._connected_since
        if since is not None and time.monotonic() - since < TAKEN_OVER_S:
            repeat = self._taken_over is not None
            self._taken_over = self.last_error = (
                f"connection lost within {TAKEN_OVER_S:.0f} s of being made to {self.m.host}:{self.m.port} "
                f"({reason}): if this repeats, another client uses client id {self.client_id} (a second agent, or "
                "a device cloned from this one: each needs its own device.id and key)"
            )
            if repeat:
                log.debug("MQTT: %s", self.last_error)
            else:
                log.warning("MQTT: %s; records stay in the outbox", self.last_error)
            return
        log.warning("MQTT connection lost (%s); records stay in the outbox and are re-sent on reconnect", reason)

    def _on_publish(self, _c: mqtt.Client, _ud: Any, mid: int, reason: Any, _props: Any) -> None:
        if reason is None or not getattr(reason, "is_failure", False):
            self._acks.put(mid)
        else:  # an MQTT 5 PUBACK with a failure code (Not authorized: the broker's ACL): the publisher says so
            self._refusals.put((mid, str(reason)))
        self._wake.set()

    def _on_message(self, _c: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        if self.on_command is not None:
            self.on_command(msg.topic, bytes(msg.payload))

    # ------------------------------------------------------------ network thread
    def _net_loop(self) -> None:  # noqa: PLR0912 - one loop owns the connection state
        delay = self.m.backoff_min_s
        warned = False
        props = None
        if self.m.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.m.session_expiry_s
            props.MaximumPacketSize = max_packet_bytes(self.cfg.commands.max_bytes)
        while not self._stop.is_set():
            try:
                if self.m.protocol == "5":
                    self.client.connect(
                        self.m.host, self.m.port, self.m.keepalive_s, clean_start=False, properties=props
                    )
                else:
                    self.client.connect(self.m.host, self.m.port, self.m.keepalive_s)
            except (OSError, ssl.SSLError) as exc:
                self.last_error = describe_connect_error(exc, self.m)
                if not warned:
                    log.error("MQTT: %s; retrying with backoff up to %.0f s", self.last_error, self.m.backoff_max_s)
                    warned = True
                else:
                    log.debug("MQTT: still failing: %s", self.last_error)
            else:
                self._got_connack = False
                while not self._stop.is_set():
                    rc = self.client.loop(timeout=0.2)
                    if rc != mqtt.MQTT_ERR_SUCCESS:
                        break
                self.connected.clear()
                if not self._got_connack and not self._stop.is_set():
                    self.last_error = (
                        f"broker {self.m.host}:{self.m.port} closed the connection before accepting it "
                        "(client certificate rejected? check mqtt.cert_file/mqtt.key_file and the broker's log)"
                    )
                    if not warned:
                        log.error("MQTT: %s", self.last_error)
                if self._stop.is_set():
                    # Let the DISCONNECT go out.
                    with contextlib.suppress(Exception):
                        self.client.loop(timeout=0.2)
                    break
                if self._connected_since is not None and time.monotonic() - self._connected_since > 30:
                    delay = self.m.backoff_min_s  # the link was healthy: start the backoff over
                warned = warned or self.last_error is not None
            self._connected_since = None
            wait = min(delay, self.m.backoff_max_s) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
            self._stop.wait(wait)
            delay = min(delay * 2, self.m.backoff_max_s)
            if warned and self.connected.is_set():
                warned = False

    # ------------------------------------------------------------ publisher thread
    def _pub_loop(self) -> None:
        """Runs the publisher; a database error is logged and the loop starts over, never ends it."""
        warned = False
        while not self._pub_stop.is_set():
            try:
                self._publish_until_stopped()
            except sqlite3.Error as exc:
                self.last_error = f"outbox read failed: {exc}"
                if is_damage(exc) and self.on_damage is not None:
                    self.on_damage(exc)
                if not warned:
                    log.error("MQTT publisher: outbox read failed (%s); retrying every second", exc)
                    warned = True
                self._pub_stop.wait(1.0)

    def _clear_taken_over(self) -> None:
        """A connection that outlived TAKEN_OVER_S was not taken over: its warning is no longer the last word."""
        since = self._connected_since
        if self._taken_over is None or since is None or time.monotonic() - since < TAKEN_OVER_S:
            return
        if self.last_error == self._taken_over:
            self.last_error = None
        self._taken_over = None
        log.info("MQTT: connected for over %.0f s again", TAKEN_OVER_S)

    def _over_broker_limit(self, seq: int, topic: str, data: bytes) -> bool:
        """True when the PUBLISH of this record would be larger than the broker's Maximum Packet Size: the broker
        would close the connection at once, again after every reconnect, and nothing after it would get through
        (commands included). Said once per record, in last_error and the log."""
        limit = self.broker_max_packet
        if limit is None:
            return False
        body = 2 + len(topic.encode("utf-8")) + 2 + 1 + len(data)  # topic, packet id, no properties, payload
        size = 1 + len(_varint(body)) + body
        if size <= limit:
            return False
        message = (
            f"record seq {seq} is a {size}-byte packet, over broker {self.m.host}:{self.m.port}'s maximum packet "
            f"size of {limit} bytes; it and every record after it wait in the outbox until the broker's "
            "max_packet_size (mosquitto) is raised"
        )
        if self.last_error != message:
            log.error("MQTT: %s", message)
        self.last_error = message
        return True

    def _note_refusals(self, pending: dict[int, int], refused: set[int]) -> None:
        """Records the broker refused (MQTT 5 PUBACK with a failure code): last_error and one log line say which
        and why. They stay in flight, so the stale check sends them again (an ACL may be mended meanwhile)."""
        while True:
            try:
                mid, reason = self._refusals.get_nowait()
            except queue.Empty:
                return
            seq = pending.get(mid)
            if seq is None:
                continue  # the `online` status, or a record already given up on
            self._refusal = self.last_error = (
                f"broker {self.m.host}:{self.m.port} refused record seq {seq}: {reason} (check that the broker's ACL "
                f"lets this client publish to {self.base}/rec/#); it stays in the outbox and is sent again"
            )
            if not refused:
                log.error("MQTT: %s", self.last_error)
            refused.add(seq)

    def _clear_refusal(self, refused: set[int], seq: int) -> None:
        """`seq` was acknowledged: once every refused record has been, a refusal is no longer the last word."""
        if seq not in refused:
            return
        refused.discard(seq)
        if not refused:
            if self.last_error == self._refusal:
                self.last_error = None
            self._refusal = None
            log.info("MQTT: the broker accepts records again")

    def _publish_until_stopped(self) -> None:  # noqa: PLR0912, PLR0915 - one loop owns the in-flight window
        outbox = Outbox(self.db_path)
        pending: dict[int, int] = {}  # mid -> seq, for messages paho has in flight
        cursor: int | None = None
        sent_at: dict[int, float] = {}
        acked: list[int] = []
        refused: set[int] = set()  # seqs the broker refused and has not accepted since (last_error says so)
        last_flush = last_stale_check = time.monotonic()
        window = self.m.inflight_max
        try:
            while not self._pub_stop.is_set():
                self.heartbeat = time.monotonic()
                self._clear_taken_over()
                if outbox.replaced():
                    log.warning("MQTT publisher: the outbox was moved aside; publishing from the fresh one")
                    return
                while True:
                    try:
                        mid = self._acks.get_nowait()
                    except queue.Empty:
                        break
                    seq = pending.pop(mid, None)
                    sent_at.pop(mid, None)
                    if seq is not None:
                        acked.append(seq)
                        self._clear_refusal(refused, seq)
                self._note_refusals(pending, refused)
                now = time.monotonic()
                if acked and (len(acked) >= 256 or now - last_flush > 0.05 or not pending):
                    outbox.mark_delivered(acked)
                    self.delivered += len(acked)
                    self.last_delivered_seq = max(acked)
                    acked = []
                    last_flush = now
                if self._rewind.is_set():
                    self._rewind.clear()
                    cursor = None
                if not self.connected.is_set():
                    cursor = None  # re-read from the first undelivered after reconnect
                    self._wake.wait(0.2)
                    self._wake.clear()
                    continue
                if cursor is None:
                    cursor = resume_cursor(outbox, set(pending.values()))
                room = window - len(pending)
                blocked = False
                if room > 0:
                    rows = outbox.undelivered(cursor, room)
                    for seq, kind, data in rows:
                        topic = f"{self.base}/rec/{kind}"
                        if self._over_broker_limit(seq, topic, data):
                            blocked = True  # it waits, in seq order, for a broker that takes it
                            break
                        info = self.client.publish(topic, data, qos=1)
                        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                            log.warning(
                                "MQTT publish of seq %d failed (%s); will retry", seq, mqtt.error_string(info.rc)
                            )
                            cursor = None
                            break
                        pending[info.mid] = seq
                        sent_at[info.mid] = now
                        cursor = seq
                    if rows and not blocked:
                        continue
                if pending and now - last_stale_check > 5:
                    last_stale_check = now
                    stale = [mid for mid, t in sent_at.items() if mid in pending and now - t > STALE_S]
                    if stale:
                        log.warning("MQTT: %d record(s) unacknowledged for %d s; re-sending", len(stale), STALE_S)
                        for mid in stale:
                            pending.pop(mid, None)
                            sent_at.pop(mid, None)
                        cursor = None
                if not pending and not acked:
                    self._drained.set()
                self._wake.wait(0.05 if pending else 0.2)
                self._wake.clear()
        finally:
            if acked:
                with contextlib.suppress(Exception):
                    outbox.mark_delivered(acked)
            outbox.close()
