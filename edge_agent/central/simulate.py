"""A simulated fleet: N devices with their own keys and real signed chains (the spine's code), and misbehaviour.

Misbehaviour on request, each at the middle of a device's run so the chain around it is real:
  fork    a second, different record for an already published seq (published a few records later)
  forge   a copy of a record with an altered body and the original signature, before the genuine one
  hole    a record chained but never published (a silent hole)
  gap     two records dropped and declared in a signed `gap` record (spine's gap_body)
  rotate  a `key_rotation` record signed by the old key; later records signed by the new key
Every 20th record is a diesel truck's trip whose CO2 is the truck pipeline's: litres x the shipped factor table's
rows (edge_agent.emissions), reported well-to-wheel, with the factors named as a real trip names them.
The report (`--report FILE`, JSON) lists what was published and what central should find.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_agent.central.db import Database
from edge_agent.central.registry import add_devices
from edge_agent.emissions import FactorTable, emission_block, estimate_emissions, load_factors, trip_co2
from edge_agent.errors import SyncError
from edge_agent.spine.clock import format_ts
from edge_agent.spine.config import MqttConfig
from edge_agent.spine.keys import DeviceKey, key_id_for, public_raw_b64
from edge_agent.spine.outbox import gap_body
from edge_agent.spine.records import GENESIS_PREV, encode, make_record
from edge_agent.spine.sync import describe_connect_error, make_client

log = logging.getLogger(__name__)

MISBEHAVIOURS = ("fork", "forge", "hole", "gap", "rotate")
EXPECTED_ANOMALY = {"fork": "fork", "forge": "bad_signature", "hole": "hole", "gap": "signed_gap", "rotate": None}


def device_key(seed: str, device: str, generation: int = 0) -> DeviceKey:
    """A deterministic key per (seed, device, generation): reruns with one seed register the same keys."""
    raw = hashlib.sha256(f"edge-central-sim/{seed}/{device}/{generation}".encode()).digest()
    private = Ed25519PrivateKey.from_private_bytes(raw)
    return DeviceKey(private, key_id_for(private.public_key()))


@dataclass
class SimDevice:
    device: str
    site: str
    key: DeviceKey
    seq: int = 0
    prev: str = GENESIS_PREV
    misbehave: str | None = None
    at_seq: int = 0
    hashes: dict[int, str] = field(default_factory=dict)
    withheld: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # raw base64 public keys, in use order
    late: list[tuple[int, bytes, str]] = field(default_factory=list)  # (publish after seq, payload, kind)
    rotated: bool = False
    fork_hashes: tuple[str, str] | None = None  # (the record the chain goes on from, the other one)

    def make(self, kind: str, body: dict[str, Any], ts: str) -> dict[str, Any]:
        self.seq += 1
        rec = make_record(
            device=self.device, seq=self.seq, ts=ts, clock="ntp", kind=kind, body=body, prev=self.prev, key=self.key
        )
        self.prev = rec["hash"]
        self.hashes[self.seq] = rec["hash"]
        return rec


# What a simulated truck is, in the truck pipeline's config terms (telematics.fuel_type, .vehicle_class and
# .emissions.report_boundary, at their defaults).
SIM_FUEL_TYPE = "diesel"
SIM_VEHICLE_CLASS = "rigid_26_32t"
SIM_REPORT_BOUNDARY = "WTW"


@functools.cache
def _factors() -> FactorTable:
    """The factor table shipped with edge-agent (config/emission_factors.csv), read once."""
    return load_factors()


def _body(dev: SimDevice, ts: str) -> tuple[str, dict[str, Any]]:
    n = dev.seq + 1
    if n % 20 == 0:
        distance_km = round(10 + (n % 37) * 1.7, 1)
        fuel_l = round(3 + (n % 11) * 0.4, 1)
        load_kg = 1200 + (n % 9) * 50
        em = estimate_emissions(
            _factors(),
            fuel_used_l=fuel_l,
            fuel_type=SIM_FUEL_TYPE,
            distance_km=distance_km,
            load_kg=load_kg,
            vehicle_class=SIM_VEHICLE_CLASS,
        )
        return "trip", {
            "timestamp": ts,
            "transport_id": dev.device,
            "route": f"depot-{n % 7} to hub-{n % 5}",
            "distance_km": distance_km,
            "fuel_used_l": fuel_l,
            **trip_co2(em, SIM_REPORT_BOUNDARY),
            "load_avg_kg": load_kg,
            "load_source": "config",
            "fuel_source": "fuel_rate",
            "emission": emission_block(em),
        }
    return "telemetry", {
        "timestamp": ts,
        "transport_id": dev.device,
        "lat": 39.9 + (n % 100) * 0.001,
        "lon": 116.4 + (n % 100) * 0.001,
        "speed_kmh": float(n % 90),
        "reason": "interval",
    }


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes


def register_fleet(db: Database, fleet: list[SimDevice]) -> int:
    """Register each simulated device's first public key in the central registry (known ones skipped)."""
    return add_devices(
        db, [(d.device, d.site, Ed25519PublicKey.from_public_bytes(base64.b64decode(d.keys[0]))) for d in fleet]
    )


def build_fleet(
    n: int,
    *,
    seed: str,
    site: str = "sim",
    misbehave: dict[str, int] | None = None,
    at_seq: int = 3,
    name_prefix: str = "sim",
) -> list[SimDevice]:
    """N devices named sim-00000...; the first devices take the requested misbehaviours, one each."""
    fleet = []
    order = [m for m, count in (misbehave or {}).items() for _ in range(count)]
    for i in range(n):
        name = f"{name_prefix}-{i:05d}"
        key = device_key(seed, name)
        dev = SimDevice(name, site, key, misbehave=order[i] if i < len(order) else None, at_seq=at_seq)
        dev.keys.append(public_raw_b64(key.public))
        fleet.append(dev)
    return fleet


def step(dev: SimDevice, prefix: str, now: datetime) -> list[Outgoing]:
    """The messages one device publishes for its next record (more around its misbehaviour)."""
    ts = format_ts(now)
    out: list[Outgoing] = []
    base = f"{prefix}/{dev.site}/{dev.device}/rec"
    nxt = dev.seq + 1
    m = dev.misbehave if nxt == dev.at_seq else None
    if m == "rotate" and not dev.rotated:
        new = device_key(dev.device + "/rotated", dev.device, 1)
        rec = dev.make(
            "key_rotation",
            {"old_key_id": dev.key.key_id, "new_key_id": new.key_id, "new_public_key": public_raw_b64(new.public)},
            ts,
        )
        dev.key = new
        dev.keys.append(public_raw_b64(new.public))
        dev.rotated = True
        return [Outgoing(f"{base}/key_rotation", encode(rec))]
    if m == "gap":
        dropped = []
        for _ in range(2):
            kind, body = _body(dev, ts)
            rec = dev.make(kind, body, ts)
            dropped.append((rec["seq"], rec["hash"], kind))
            dev.withheld.append(rec["seq"])
        gap = dev.make("gap", gap_body("outbox_full", dropped), ts)
        return [Outgoing(f"{base}/gap", encode(gap))]
    kind, body = _body(dev, ts)
    prev_before = dev.prev
    rec = dev.make(kind, body, ts)
    if m == "hole":
        dev.withheld.append(rec["seq"])
        return []
    if m == "forge":
        forged = dict(rec)
        forged["body"] = dict(rec["body"], transport_id="FORGED")
        from edge_agent.spine.records import signing_bytes

        forged["hash"] = hashlib.sha256(signing_bytes(forged)).hexdigest()  # consistent hash, stolen signature
        out.append(Outgoing(f"{base}/{kind}", encode(forged)))
    if m == "fork":
        other = make_record(
            device=dev.device,
            seq=rec["seq"],
            ts=ts,
            clock="ntp",
            kind=kind,
            body=dict(body, route="elsewhere"),
            prev=prev_before,
            key=dev.key,
        )
        dev.late.append((rec["seq"] + 3, encode(other), kind))
        dev.fork_hashes = (rec["hash"], other["hash"])
    out.append(Outgoing(f"{base}/{kind}", encode(rec)))
    for after, payload, k in list(dev.late):
        if dev.seq >= after:
            out.append(Outgoing(f"{base}/{k}", payload))
            dev.late.remove((after, payload, k))
    return out


def flush_late(dev: SimDevice, prefix: str) -> list[Outgoing]:
    out = [Outgoing(f"{prefix}/{dev.site}/{dev.device}/rec/{k}", p) for _a, p, k in dev.late]
    dev.late.clear()
    return out


def report(fleet: list[SimDevice], published: int) -> dict[str, Any]:
    return {
        "published": published,
        "devices": {
            d.device: {
                "site": d.site,
                "last_seq": d.seq,
                "withheld": d.withheld,
                "keys": d.keys,
                "misbehave": d.misbehave,
                "at_seq": d.at_seq,
                "head_hash": d.prev,
                "fork_hashes": d.fork_hashes,
            }
            for d in fleet
        },
        "expected_anomalies": sorted(
            [d.device, EXPECTED_ANOMALY[d.misbehave]]
            for d in fleet
            if d.misbehave and EXPECTED_ANOMALY[d.misbehave] and d.seq >= d.at_seq
        ),
    }


class Publisher:
    """One paho client publishing at QoS 1 (the spine's client construction: TLS, mTLS, passwords)."""

    def __init__(self, m: MqttConfig, client_id: str) -> None:
        self.client = make_client(m, client_id)
        self.client.max_inflight_messages_set(2000)
        self.client.max_queued_messages_set(0)
        self.m = m
        self.acked = 0
        self.sent = 0
        self._lock = threading.Lock()
        self.client.on_publish = self._on_publish

    def _on_publish(self, *_a: Any) -> None:
        with self._lock:
            self.acked += 1

    def connect(self, timeout_s: float = 10.0) -> None:
        ready = threading.Event()
        self.client.on_connect = lambda *_a: ready.set()
        try:
            self.client.connect(self.m.host, self.m.port, self.m.keepalive_s)
        except OSError as exc:
            raise SyncError(describe_connect_error(exc, self.m)) from None
        self.client.loop_start()
        if not ready.wait(timeout_s):
            raise SyncError(f"no CONNACK from {self.m.host}:{self.m.port} within {timeout_s:g} s")

    def publish(self, msgs: list[Outgoing]) -> None:
        for o in msgs:
            self.client.publish(o.topic, o.payload, qos=1)
        self.sent += len(msgs)

    def wait_acked(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.acked >= self.sent:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run(
    fleet: list[SimDevice],
    *,
    publish: Callable[[list[Outgoing]], None],
    prefix: str,
    rate_hz: float,
    duration_s: float,
    stop: threading.Event | None = None,
    records: int | None = None,
) -> int:
    """Each device emits `rate_hz` records per second for `duration_s` (or `records` each, unpaced)."""
    stop = stop or threading.Event()
    published = 0
    tick = 1.0 / rate_hz if rate_hz > 0 else 0.0
    start = time.monotonic()
    rounds = records if records is not None else max(1, round(duration_s * rate_hz))
    for r in range(rounds):
        if stop.is_set():
            break
        if records is None:
            wait = start + r * tick - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
        now = datetime.now(UTC)
        batch: list[Outgoing] = []
        for dev in fleet:
            batch.extend(step(dev, prefix, now))
        publish(batch)
        published += len(batch)
    tail = [o for dev in fleet for o in flush_late(dev, prefix)]
    publish(tail)
    return published + len(tail)


def write_report(path: str, fleet: list[SimDevice], published: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report(fleet, published), f, indent=1, sort_keys=True)
