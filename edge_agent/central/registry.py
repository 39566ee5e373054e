"""The device registry: add, list, revoke, and the keys each device has signed with."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.central.db import Database
from edge_agent.errors import EdgeAgentError
from edge_agent.spine.keys import key_id_for, load_public_keys, public_raw_b64


class RegistryError(EdgeAgentError):
    """A registry request cannot be done (unknown device, bad key, already there)."""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device: str
    site: str
    key_id: str
    status: str
    added_at: float
    revoked_at: float | None
    revoked_after_seq: int | None
    head_seq: int
    verified_through: int
    last_seen: float | None


def parse_public_key(text: str, where: str) -> Ed25519PublicKey:
    """A PEM (SubjectPublicKeyInfo) or raw base64 Ed25519 public key."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except ValueError as exc:
            raise RegistryError(f"{where}: malformed PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise RegistryError(f"{where}: expected an Ed25519 public key, got {type(key).__name__}")
        return key
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError:
        raise RegistryError(
            f"{where}: expected a PEM public key or 32 raw bytes in base64, got {len(text)} characters"
        ) from None


def load_key_file(path: Path) -> Ed25519PublicKey:
    """The first Ed25519 public key in a PEM file (as `edge-agent pubkey` writes), or raw base64."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read public key file: {exc.strerror}") from None
    if "-----BEGIN PUBLIC KEY-----" in text:
        try:
            return load_public_keys(path)[0]
        except EdgeAgentError as exc:
            raise RegistryError(str(exc)) from None
    return parse_public_key(text, str(path))


def topic_level_problem(option: str, value: str) -> str | None:
    """What is wrong with a device or site id as one MQTT topic level, or None."""
    if not value or "/" in value or "+" in value or "#" in value:
        return f"{option} {value!r}: expected an id without '/', '+' or '#' (it is a topic level)"
    return None


def add_device(
    db: Database, device: str, site: str, public: Ed25519PublicKey, *, now: float | None = None, replace: bool = False
) -> str:
    """Register a device with its current key; returns the key id. Refuses a known device unless `replace`."""
    for problem in (topic_level_problem("--device", device), topic_level_problem("--site", site)):
        if problem:
            raise RegistryError(problem)
    now = time.time() if now is None else now
    kid = key_id_for(public)
    raw = public_raw_b64(public)
    with db.transaction():
        row = db.query_one("SELECT key_id FROM devices WHERE device = ?" + db.for_update, (device,))
        if row is not None and not replace:
            raise RegistryError(f"device {device!r} is already registered (key {row[0]}); use --replace to change it")
        other = db.query_one("SELECT device FROM device_keys WHERE pubkey = ? AND device <> ? LIMIT 1", (raw, device))
        if other is not None:
            # Either device could sign as the other; usually an SD card cloned from a set-up device.
            raise RegistryError(
                f"key {kid} is already device {other[0]!r}'s; two devices must not share a key (a cloned SD card?):"
                f" run `edge-agent keys generate --force` on {device} and register the key it prints"
            )
        if row is None:
            db.execute(
                "INSERT INTO devices (device, site, pubkey, key_id, status, added_at) VALUES (?, ?, ?, ?, 'active', ?)",
                (device, site, raw, kid, now),
            )
            from_seq = 1
        else:
            head = db.query_one("SELECT head_seq FROM devices WHERE device = ?", (device,))
            from_seq = int(head[0]) + 1 if head else 1
            db.execute(
                "UPDATE devices SET site = ?, pubkey = ?, key_id = ?, status = 'active', revoked_at = NULL,"
                " revoked_after_seq = NULL WHERE device = ?",
                (site, raw, kid, device),
            )
            db.execute("UPDATE device_keys SET to_seq = ? WHERE device = ? AND to_seq IS NULL", (from_seq - 1, device))
        db.execute(
            "INSERT INTO device_keys (device, key_id, pubkey, from_seq, to_seq, source, added_at)"
            " VALUES (?, ?, ?, ?, NULL, 'registered', ?) ON CONFLICT (device, key_id) DO NOTHING",
            (device, kid, raw, from_seq, now),
        )
    return kid


def add_devices(db: Database, devices: list[tuple[str, str, Ed25519PublicKey]], *, now: float | None = None) -> int:
    """Register many devices in one transaction (the simulator's --register); known ones are skipped."""
    now = time.time() if now is None else now
    rows = []
    keys = []
    for device, site, public in devices:
        raw = public_raw_b64(public)
        kid = key_id_for(public)
        rows.append((device, site, raw, kid, "active", now))
        keys.append((device, kid, raw, 1, None, "registered", now))
    with db.transaction():
        db.insert_many(
            "devices",
            ("device", "site", "pubkey", "key_id", "status", "added_at"),
            rows,
            conflict="ON CONFLICT (device) DO NOTHING",
        )
        db.insert_many(
            "device_keys",
            ("device", "key_id", "pubkey", "from_seq", "to_seq", "source", "added_at"),
            keys,
            conflict="ON CONFLICT (device, key_id) DO NOTHING",
        )
    return len(rows)


def revoke_device(db: Database, device: str, *, now: float | None = None) -> int:
    """Mark a device revoked; records with a seq above its current head are refused from now on.

    Returns that head seq. Records already in flight with lower seqs are still accepted: they were
    signed before the revocation.
    """
    now = time.time() if now is None else now
    with db.transaction():
        row = db.query_one("SELECT head_seq, status FROM devices WHERE device = ?" + db.for_update, (device,))
        if row is None:
            raise RegistryError(f"device {device!r} is not registered (see `central devices list`)")
        head = int(row[0])
        if row[1] == "revoked":
            return head
        db.execute(
            "UPDATE devices SET status = 'revoked', revoked_at = ?, revoked_after_seq = ? WHERE device = ?",
            (now, head, device),
        )
    return head


def list_devices(db: Database) -> list[DeviceInfo]:
    rows = db.query(
        "SELECT device, site, key_id, status, added_at, revoked_at, revoked_after_seq, head_seq, verified_through,"
        " last_seen FROM devices ORDER BY device"
    )
    return [
        DeviceInfo(
            device=r[0],
            site=r[1],
            key_id=r[2],
            status=r[3],
            added_at=float(r[4]),
            revoked_at=None if r[5] is None else float(r[5]),
            revoked_after_seq=None if r[6] is None else int(r[6]),
            head_seq=int(r[7]),
            verified_through=int(r[8]),
            last_seen=None if r[9] is None else float(r[9]),
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class KeySpan:
    """A key and the seqs it may sign: from_seq..to_seq (to_seq None while it is the current key)."""

    public: Ed25519PublicKey
    from_seq: int
    to_seq: int | None

    def covers(self, seq: int) -> bool:
        return seq >= self.from_seq and (self.to_seq is None or seq <= self.to_seq)


def load_keys(db: Database, devices: list[str]) -> dict[str, dict[str, KeySpan]]:
    """Every known key of the given devices: device -> key id -> KeySpan."""
    out: dict[str, dict[str, KeySpan]] = {d: {} for d in devices}
    for i in range(0, len(devices), 500):
        part = devices[i : i + 500]
        rows = db.query(
            "SELECT device, key_id, pubkey, from_seq, to_seq FROM device_keys WHERE device IN " + db.in_list(len(part)),
            part,
        )
        for device, kid, raw, from_seq, to_seq in rows:
            try:
                public = Ed25519PublicKey.from_public_bytes(base64.b64decode(raw))
            except ValueError:
                continue
            out[device][kid] = KeySpan(public, int(from_seq), None if to_seq is None else int(to_seq))
    return out
