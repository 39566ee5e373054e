"""Feeding a Verifier: from a JSON-lines stream or from a live MQTT subscription (`verify --mqtt`).

Whatever arrives, a malformed payload is a finding and reading goes on: a verifier that dies on
one bad message would report the records it saw before it as the whole stream (fail open).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent.errors import SyncError
from edge_agent.spine.config import MqttConfig
from edge_agent.spine.sync import describe_connect_error, make_client
from edge_agent.spine.verify import FAIL, Finding, Verifier

log = logging.getLogger(__name__)


def feed_lines(v: Verifier, lines: Iterable[bytes], label: str | None) -> None:
    """Every line of a JSON-lines stream into the verifier; findings say `label:N:` (stdin: `line N:`)."""
    for n, line in enumerate(lines, 1):
        _add_safely(v, line, f"line {n}: " if label is None else f"{label}:{n}: ")


def _add_safely(v: Verifier, payload: bytes, where: str) -> None:
    try:
        v.add_line(payload, where)
    except Exception as exc:  # noqa: BLE001 - hostile input must become a finding, never end the reading
        v.findings.append(Finding(FAIL, "malformed", None, f"{where}unreadable ({type(exc).__name__})"))


@dataclass(frozen=True)
class MqttSource:
    """Where and how long to listen."""

    mqtt: MqttConfig
    topic: str
    client_id: str
    count: int = 0  # stop after this many records (0: no limit)
    idle_s: float = 5.0
    timeout_s: float = 300.0


@dataclass
class Sideline:
    """What a subscription brought besides records: skipped messages by topic kind, and checkpoints."""

    skipped: Counter[str] = field(default_factory=Counter)
    checkpoints: list[tuple[str, bytes]] = field(default_factory=list)  # (topic, payload)

    def line(self) -> str:
        """`skipped 2 message(s) that are not records: 1 status, 1 checkpoint`, or "" when none."""
        if not self.skipped:
            return ""
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.skipped.items()))
        return f"skipped {self.skipped.total()} message(s) that are not records (not on .../rec/<kind>): {kinds}"


def topic_kind(topic: str) -> str:
    """`rec` for a record topic (<prefix>/<site>/<device>/rec/<kind>); else status, checkpoint, cmd or other."""
    levels = topic.split("/")
    if len(levels) >= 2 and levels[-2] in ("rec", "cmd"):
        return levels[-2]
    return levels[-1] if levels[-1] in ("status", "checkpoint") else "other"


def feed_mqtt(v: Verifier, src: MqttSource, side: Sideline | None = None) -> str | None:
    """Subscribe and feed every message until count, idle or timeout; an error message, or None.

    Only record topics reach the verifier (a `#` filter also brings status, checkpoint and cmd
    messages); the others are counted in `side`, checkpoints kept there to be checked after."""
    side = side if side is not None else Sideline()
    try:
        client = make_client(src.mqtt, src.client_id)
    except (SyncError, ValueError) as exc:
        return str(exc)
    last_msg = [time.monotonic()]
    lock = threading.Lock()
    connected = threading.Event()
    errors: list[str] = []

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            errors.append(f"broker refused the connection: {reason}")
            return
        c.subscribe(src.topic, qos=1)
        connected.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        kind = topic_kind(msg.topic)
        with lock:
            last_msg[0] = time.monotonic()
            if kind == "rec":
                _add_safely(v, bytes(msg.payload), f"{msg.topic}: ")
                return
            side.skipped[kind] += 1
            if kind == "checkpoint":
                side.checkpoints.append((msg.topic, bytes(msg.payload)))

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(src.mqtt.host, src.mqtt.port, 30)
    except OSError as exc:
        return describe_connect_error(exc, src.mqtt)
    client.loop_start()
    deadline = time.monotonic() + src.timeout_s
    try:
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if errors:
                return errors[0]
            if not client.is_connected() and connected.is_set() and not errors:
                # The network thread ended under us: the stream was not read to its end.
                return "lost the broker connection while reading; the stream was not read to its end"
            with lock:
                done = src.count and v.received >= src.count
                idle = connected.is_set() and time.monotonic() - last_msg[0] > src.idle_s
            if done or idle:
                break
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    return None
