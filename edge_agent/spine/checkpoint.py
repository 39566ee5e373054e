"""Signed statements about the chain itself: the checkpoint (signed head) and the device-key rotation."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from edge_agent.files import atomic_write
from edge_agent.spine.config import SpineConfig
from edge_agent.spine.keys import DeviceKey, generate_key, public_raw_b64
from edge_agent.spine.outbox import Outbox
from edge_agent.spine.records import encode, sign_detached
from edge_agent.spine.sync import MqttSync, topic_base

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
CHECKPOINT_FILE = "checkpoint.json"


class ChainSigner(Protocol):
    """The chain writer as rotation needs it: its key, emit, flush."""

    key: DeviceKey

    def rotate(self, new_key: DeviceKey, body: dict[str, Any]) -> None: ...

    def flush(self, timeout_s: float = ...) -> bool: ...


def make_checkpoint(key: DeviceKey, *, device: str, seq: int, head_hash: str, ts: str) -> dict[str, Any]:
    """The signed chain head: {v, kind, device, seq, head_hash, ts, key, sig}."""
    cp: dict[str, Any] = {
        "v": CHECKPOINT_VERSION,
        "kind": "checkpoint",
        "device": device,
        "seq": seq,
        "head_hash": head_hash,
        "ts": ts,
        "key": key.key_id,
    }
    cp["sig"] = sign_detached(key, cp)
    return cp


def checkpoint_topic(cfg: SpineConfig) -> str:
    return f"{topic_base(cfg)}/checkpoint"


def publish_checkpoint(cfg: SpineConfig, key: DeviceKey, sync: MqttSync | None, ts: str) -> dict[str, Any]:
    """Sign the committed chain head, keep it in <state_dir>/checkpoint.json, publish it retained (QoS 1)."""
    with Outbox(cfg.db_path, readonly=True) as ob:
        seq, head_hash = ob.head()
    cp = make_checkpoint(key, device=cfg.device.id, seq=seq, head_hash=head_hash, ts=ts)
    data = encode(cp)
    with contextlib.suppress(OSError):
        atomic_write(cfg.state_dir / CHECKPOINT_FILE, data + b"\n", mode=0o600)
    if sync is not None and sync.connected.is_set():
        info = sync.client.publish(checkpoint_topic(cfg), data, qos=1, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(1.0)
        log.debug("checkpoint published: seq %d", seq)
    return cp


def rotate_device_key(key_path: Path, writer: ChainSigner) -> dict[str, Any]:
    """New key beside the old; a `key_rotation` record signed by the OLD key; then swap files and signer.

    If the agent dies between the announcement and the swap, the old key stays in use: records
    it signs remain valid (central keeps announced keys), and the unused new key is announced only.
    """
    old: DeviceKey = writer.key
    new_path = key_path.with_name(key_path.name + ".new")
    new = generate_key(new_path, force=True)
    writer.rotate(
        new, {"old_key_id": old.key_id, "new_key_id": new.key_id, "new_public_key": public_raw_b64(new.public)}
    )
    if not writer.flush(10.0):
        raise RuntimeError("the key_rotation record was not committed within 10 s; the swap finishes when it is")
    _swap_in(new_path, key_path)
    log.info("device key rotated: %s -> %s", old.key_id, new.key_id)
    return {"old_key_id": old.key_id, "new_key_id": new.key_id, "new_public_key": public_raw_b64(new.public)}


def _swap_in(new_path: Path, key_path: Path) -> None:
    os.replace(new_path, key_path)
    dfd = os.open(key_path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def finish_rotation(key_path: Path, outbox: Outbox) -> None:
    """At start: a rotation whose record was committed but whose key file was not swapped in is finished.

    Records after a `key_rotation` are signed by the new key; signing with the old one after a
    crash would make them look forged.
    """
    new_path = key_path.with_name(key_path.name + ".new")
    if not new_path.exists():
        return
    from edge_agent.spine.keys import load_key

    try:
        pending = load_key(new_path)
    except Exception:  # noqa: BLE001 - a half-written new key was never announced
        new_path.unlink(missing_ok=True)
        return
    latest = outbox.latest("key_rotation")
    announced = latest is not None and json.loads(latest[1])["body"].get("new_key_id") == pending.key_id
    if announced:
        log.warning("finishing a key rotation the agent was stopped in: %s is now the device key", pending.key_id)
        _swap_in(new_path, key_path)
    else:
        new_path.unlink()
