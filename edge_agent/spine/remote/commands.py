"""Signed remote commands from central (check, replay guard, execute), signed checkpoints, and the `central` CLI."""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import logging
import os
import queue
import secrets
import sqlite3
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import tomlkit
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from edge_agent.errors import ConfigError, EdgeAgentError, KeyError_
from edge_agent.schema import Expect, format_validation_error
from edge_agent.settings import AgentConfig, atomic_write, parse_config
from edge_agent.spine.clock import format_ts
from edge_agent.spine.keys import DeviceKey, generate_key, key_id_for, load_public_keys, public_pem, public_raw_b64
from edge_agent.spine.outbox import Outbox, seq_ranges
from edge_agent.spine.records import canonical, encode

if TYPE_CHECKING:
    from edge_agent.app import Agent

log = logging.getLogger(__name__)

COMMAND_VERSION = 1
CHECKPOINT_VERSION = 1
COMMANDS = ("patch_config", "status", "resend", "rotate_key", "replace_manifest")
# A command may live at most this long; the nonce table only has to remember this far back.
MAX_TTL_S = 7 * 24 * 3600
# Nonces are kept this long past their command's expiry, in case the device clock steps back.
NONCE_GRACE_S = 24 * 3600
QUEUE_MAX = 32
MAX_RESEND_SPAN = 1_000_000
# Refusals are recorded as events, but a flood of garbage on the cmd topic must not fill the outbox.
REFUSAL_EVENTS_PER_MIN = 20
# Keys a remote config patch may not touch: they change only with a restart (and a technician).
RESTART_ONLY_KEYS = ("device", "state_dir", "profile")
NONCES_DB = "commands.db"
CHECKPOINT_FILE = "checkpoint.json"
KEY_ID_PATTERN = r"^ed25519:[0-9a-f]{16}$"


class CommandRefused(EdgeAgentError):
    """A command that is not obeyed; `reason` is a short code, the message says what was wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------- the message


class CommandMessage(BaseModel):
    """A command as central sends it; `sig` covers the RFC 8785 bytes of every other field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Annotated[Literal[1], Expect("1 (command format version)")]
    device: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"), Expect("a device id")]
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$"), Expect("a command name such as resend")]
    nonce: Annotated[
        str, Field(pattern=r"^[A-Za-z0-9_-]{16,128}$"), Expect("16-128 random letters, digits, '-' or '_'")
    ]
    issued_at: Annotated[AwareDatetime, Expect("an ISO 8601 time with a zone, e.g. 2025-01-31T12:00:00Z")]
    expires_at: Annotated[AwareDatetime, Expect("an ISO 8601 time with a zone, e.g. 2025-01-31T12:10:00Z")]
    args: Annotated[dict[str, Any], Expect("a JSON object")]
    key: Annotated[str, Field(pattern=KEY_ID_PATTERN), Expect("a key id like ed25519:0123456789abcdef")]
    sig: Annotated[str, Expect("a base64 Ed25519 signature")]


def signing_bytes(message: Mapping[str, Any]) -> bytes:
    """What is signed: RFC 8785 canonical JSON of the message without `sig`."""
    return canonical({k: v for k, v in message.items() if k != "sig"})


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def sign_command(
    private: Ed25519PrivateKey,
    *,
    device: str,
    name: str,
    args: Mapping[str, Any],
    ttl_s: float,
    now: datetime | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """Build and sign one command message (what `edge-agent central sign-command` prints)."""
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s: expected seconds in (0, {MAX_TTL_S}], got {ttl_s!r}")
    t = now or datetime.now(UTC)
    msg: dict[str, Any] = {
        "v": COMMAND_VERSION,
        "device": device,
        "name": name,
        "nonce": nonce or new_nonce(),
        "issued_at": format_ts(t),
        "expires_at": format_ts(t + timedelta(seconds=ttl_s)),
        "args": dict(args),
        "key": key_id_for(private.public_key()),
    }
    msg["sig"] = base64.b64encode(private.sign(signing_bytes(msg))).decode("ascii")
    return msg


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verify_command(  # noqa: PLR0912 - one refusal reason per branch, in the order they are checked
    payload: bytes,
    *,
    topic_name: str | None,
    device: str,
    trusted: Mapping[str, Ed25519PublicKey],
    now: datetime,
    max_bytes: int,
) -> CommandMessage:
    """Check one command message on its own (no replay check); raise CommandRefused with the first reason.

    Order: size, JSON, signature present, key trusted, signature valid, then the shape, the
    topic, the addressee and the validity window. The signature comes before the shape so that
    whatever an unsigned sender writes is called what it is: unsigned or wrongly signed.
    """
    if len(payload) > max_bytes:
        raise CommandRefused("oversized", f"{len(payload)} bytes, more than commands.max_bytes ({max_bytes})")
    try:
        obj = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CommandRefused("malformed", f"not JSON: {_short(str(exc), 80)}") from None
    if not isinstance(obj, dict):
        raise CommandRefused("malformed", f"expected a JSON object, got {type(obj).__name__}")
    sig, key_id = obj.get("sig"), obj.get("key")
    if sig is None or sig == "":
        raise CommandRefused("unsigned", "no `sig` field: commands must be signed by a trusted central key")
    if not isinstance(key_id, str) or not isinstance(sig, str):
        raise CommandRefused("malformed", "`key` and `sig` must be strings")
    if not trusted:
        raise CommandRefused("untrusted_key", "commands.trusted_keys is empty: this device obeys no remote command")
    public = trusted.get(key_id)
    if public is None:
        raise CommandRefused(
            "untrusted_key", f"signed by {_short(key_id, 40)!r}, which is not in commands.trusted_keys"
        )
    try:
        public.verify(base64.b64decode(sig, validate=True), signing_bytes(obj))
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        detail = "" if isinstance(exc, InvalidSignature) else f" ({_short(str(exc), 60)})"
        raise CommandRefused("bad_signature", f"signature does not verify with key {key_id}{detail}") from None
    try:
        msg = CommandMessage.model_validate(obj)
    except ValidationError as exc:
        raise CommandRefused("malformed", "; ".join(format_validation_error("command", exc, CommandMessage))) from None
    if topic_name is not None and msg.name != topic_name:
        raise CommandRefused("wrong_topic", f"name {msg.name!r} differs from the topic's last level {topic_name!r}")
    if msg.device != device:
        raise CommandRefused("wrong_device", f"addressed to device {msg.device!r}, this is {device!r}")
    if msg.expires_at <= msg.issued_at:
        raise CommandRefused("malformed", "expires_at is not after issued_at")
    if (msg.expires_at - msg.issued_at).total_seconds() > MAX_TTL_S:
        raise CommandRefused("malformed", f"valid for more than {MAX_TTL_S} s (the longest a command may live)")
    if now >= msg.expires_at:
        raise CommandRefused("expired", f"expired at {format_ts(msg.expires_at)}, device time is {format_ts(now)}")
    return msg


def load_trusted(paths: list[Path]) -> dict[str, Ed25519PublicKey]:
    """key id -> public key for every PEM file in commands.trusted_keys; unreadable files are logged and skipped."""
    out: dict[str, Ed25519PublicKey] = {}
    for p in paths:
        try:
            for k in load_public_keys(p):
                out[key_id_for(k)] = k
        except KeyError_ as exc:
            log.error("commands.trusted_keys: %s", exc)
    return out


# ---------------------------------------------------------------- replay guard


class NonceStore:
    """Nonces of accepted commands in `<state_dir>/commands.db`, so a replay is refused across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, timeout=1.0, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS nonces (key_id TEXT NOT NULL, nonce TEXT NOT NULL, "
            "expires_at REAL NOT NULL, seen_at REAL NOT NULL, name TEXT NOT NULL, PRIMARY KEY (key_id, nonce))"
        )

    def claim(self, key_id: str, nonce: str, expires_at: datetime, name: str) -> bool:
        """Record a nonce; False when it was seen before (a replay)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO nonces(key_id, nonce, expires_at, seen_at, name) VALUES (?, ?, ?, ?, ?)",
            (key_id, nonce, expires_at.timestamp(), time.time(), name),
        )
        return cur.rowcount == 1

    def prune(self, now_s: float | None = None) -> int:
        """Forget nonces of commands that expired more than NONCE_GRACE_S ago."""
        cutoff = (now_s if now_s is not None else time.time()) - NONCE_GRACE_S
        return self.conn.execute("DELETE FROM nonces WHERE expires_at < ?", (cutoff,)).rowcount

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM nonces").fetchone()[0])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()


# ---------------------------------------------------------------- per-command arguments


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(_Args):
    pass


class PatchConfigArgs(_Args):
    # dotted key -> new value (JSON null removes the key, so its default applies).
    set: Annotated[
        dict[str, Any], Field(min_length=1), Expect('a table of dotted keys, e.g. {"health.interval_s": 30}')
    ]


class ResendArgs(_Args):
    first_seq: Annotated[int, Field(ge=1), Expect("a seq >= 1")]
    last_seq: Annotated[int, Field(ge=1), Expect("a seq >= first_seq")]


class ReplaceManifestArgs(_Args):
    data_b64: Annotated[str, Field(min_length=1), Expect("the manifest file (CSV or JSON), base64")]


ARGS_MODELS: dict[str, type[_Args]] = {
    "patch_config": PatchConfigArgs,
    "status": NoArgs,
    "resend": ResendArgs,
    "rotate_key": NoArgs,
    "replace_manifest": ReplaceManifestArgs,
}


def parse_args(name: str, args: dict[str, Any]) -> _Args:
    model = ARGS_MODELS.get(name)
    if model is None:
        raise CommandRefused("unknown_command", f"{name!r} is not a command (known: {', '.join(COMMANDS)})")
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        problems = format_validation_error(f"{name}", exc, model)
        raise CommandRefused("bad_args", _short("; ".join(problems), 400)) from None


def patched_config_text(old_text: str, changes: Mapping[str, Any], source: str) -> tuple[str, AgentConfig]:
    """Apply dotted-key changes to a TOML text (comments kept); validate; return the new text and config."""
    try:
        doc = tomlkit.parse(old_text)
    except Exception as exc:  # noqa: BLE001 - tomlkit raises several parse errors
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from None
    problems = []
    for dotted, value in changes.items():
        keys = dotted.split(".")
        if not all(keys):
            problems.append(f"{source}: {dotted}: expected a dotted key like health.interval_s")
            continue
        if keys[0] in RESTART_ONLY_KEYS:
            problems.append(f"{source}: {dotted}: changes only on the device (needs a restart), not remotely")
            continue
        table: Any = doc
        for k in keys[:-1]:
            if k not in table:
                table[k] = tomlkit.table()
            table = table[k]
            if not isinstance(table, dict):
                problems.append(f"{source}: {dotted}: {k} is a value, not a section")
                break
        else:
            if value is None:
                table.pop(keys[-1], None)
            else:
                table[keys[-1]] = value
    if problems:
        raise ConfigError(problems)
    new_text = tomlkit.dumps(doc)
    cfg = parse_config(tomllib.loads(new_text), source)
    if not cfg.commands.trusted_keys:
        raise ConfigError(
            [f"{source}: commands.trusted_keys: a remote patch may not empty it (central would lose the device)"]
        )
    return new_text, cfg


# ---------------------------------------------------------------- the processor


Outcome = dict[str, Any]


class CommandProcessor:
    """Checks and runs commands in its own thread; MQTT callbacks only enqueue (bounded, never blocking).

    The thread starts with the processor and ends when the agent's stop event is set.
    """

    def __init__(self, agent: Agent, key: DeviceKey, *, start: bool = True) -> None:
        self.agent = agent
        self.key = key
        self._q: queue.Queue[tuple[str, bytes | None, int]] = queue.Queue(maxsize=QUEUE_MAX)
        self.dropped = 0
        self.processed = 0
        self.outcomes: list[Outcome] = []  # the last few, for status and tests
        self._refusal_times: list[float] = []
        self._suppressed = 0
        self._nonces: NonceStore | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handlers: dict[str, Callable[[Any], Outcome]] = {
            "patch_config": self._do_patch_config,
            "status": self._do_status,
            "resend": self._do_resend,
            "rotate_key": self._do_rotate_key,
            "replace_manifest": self._do_replace_manifest,
        }
        if start:
            self.start()

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="commands", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._nonces is not None:
            self._nonces.close()

    @property
    def nonces(self) -> NonceStore:
        if self._nonces is None:
            self._nonces = NonceStore(self.agent.cfg.state_dir / NONCES_DB)
        return self._nonces

    def enqueue(self, topic: str, payload: bytes) -> None:
        """Called on the MQTT network thread: queue and return at once; an oversized payload is not kept."""
        size = len(payload)
        item = (topic, None if size > self.agent.cfg.commands.max_bytes else bytes(payload), size)
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("command queue full; dropped %d command message(s) so far", self.dropped)

    def _run(self) -> None:
        next_prune = 0.0
        while not (self._stop.is_set() or self.agent.stop_event.is_set()):
            try:
                topic, payload, size = self._q.get(timeout=0.5)
            except queue.Empty:
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + 3600
                    with contextlib.suppress(sqlite3.Error):
                        self.nonces.prune()
                continue
            # Commands queued while the agent starts wait for its pipeline (a patch needs it to reload).
            while getattr(self.agent, "ctx", None) is None and not self.agent.stop_event.wait(0.2):
                pass
            try:
                self.process(topic, payload, size=size)
            except Exception:
                log.exception("command processing failed unexpectedly; the agent keeps running")

    # ------------------------------------------------------------ one message
    def process(self, topic: str, payload: bytes | None, *, size: int | None = None) -> Outcome:
        """Check and run one command message; emit its outcome as a signed `event` record; return it."""
        self.processed += 1
        cfg = self.agent.cfg
        topic_name = topic.rsplit("/", 1)[-1] if topic else None
        msg: CommandMessage | None = None
        try:
            if payload is None:
                raise CommandRefused(
                    "oversized", f"{size} bytes, more than commands.max_bytes ({cfg.commands.max_bytes})"
                )
            msg = verify_command(
                payload,
                topic_name=topic_name,
                device=cfg.device.id,
                trusted=load_trusted(cfg.commands.trusted_keys),
                now=self.agent.clock.now()[0],
                max_bytes=cfg.commands.max_bytes,
            )
            args = parse_args(msg.name, msg.args)
            # The nonce is spent once a command is accepted, whatever its outcome: a failed
            # rotation must not be replayable either.
            if not self.nonces.claim(msg.key, msg.nonce, msg.expires_at, msg.name):
                raise CommandRefused("replayed", f"nonce {msg.nonce[:12]}... was already used")
        except CommandRefused as refused:
            return self._refuse(refused, topic_name, msg)
        log.info("command %s accepted (key %s, nonce %s...)", msg.name, msg.key, msg.nonce[:12])
        try:
            result = self._handlers[msg.name](args)
            outcome: Outcome = {"event": "command_done", "command": msg.name, "result": result}
        except CommandRefused as refused:
            # Checks that need the device's state (a bad patch, no bench) come after acceptance.
            return self._refuse(refused, topic_name, msg)
        except Exception as exc:
            log.exception("command %s failed", msg.name)
            error = _short(f"{type(exc).__name__}: {exc}", 400)
            outcome = {"event": "command_failed", "command": msg.name, "error": error}
        outcome.update({"nonce": msg.nonce, "key": msg.key, "issued_at": format_ts(msg.issued_at)})
        if outcome["event"] == "command_failed":
            log.error("command %s failed: %s", msg.name, outcome["error"])
        else:
            log.info("command %s done", msg.name)
        self._record(outcome)
        return outcome

    def _refuse(self, refused: CommandRefused, topic_name: str | None, msg: CommandMessage | None) -> Outcome:
        log.warning("command refused (%s): %s", refused.reason, refused)
        outcome: Outcome = {
            "event": "command_refused",
            "reason": refused.reason,
            "detail": _short(str(refused), 400),
            "topic_name": _short(topic_name or "", 40),
        }
        if msg is not None:
            outcome.update({"command": msg.name, "nonce": msg.nonce, "key": msg.key})
        now = time.monotonic()
        self._refusal_times = [t for t in self._refusal_times if now - t < 60]
        if len(self._refusal_times) >= REFUSAL_EVENTS_PER_MIN:
            self._suppressed += 1
            if self._suppressed == 1:
                log.warning("more than %d refused commands in a minute; not recording each one", REFUSAL_EVENTS_PER_MIN)
            self._remember(outcome)
            return outcome
        self._refusal_times.append(now)
        if self._suppressed:
            outcome["suppressed_before"] = self._suppressed
            self._suppressed = 0
        self._record(outcome)
        return outcome

    def _record(self, outcome: Outcome) -> None:
        self._remember(outcome)
        writer = self.agent.writer
        if writer is not None:
            writer.emit("event", outcome)

    def _remember(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        del self.outcomes[:-50]

    # ------------------------------------------------------------ the commands
    def _do_status(self, _args: NoArgs) -> Outcome:
        self.agent.emit_health()
        body = self.agent.health_body()
        return {"health_emitted": True, "outbox_depth": body["outbox"]["depth"], "uptime_s": body["uptime_s"]}

    def _do_resend(self, args: ResendArgs) -> Outcome:

        if args.last_seq < args.first_seq:
            raise CommandRefused("bad_args", f"resend: last_seq {args.last_seq} is before first_seq {args.first_seq}")
        if args.last_seq - args.first_seq >= MAX_RESEND_SPAN:
            raise CommandRefused("bad_args", f"resend: at most {MAX_RESEND_SPAN} records at once")
        ob = Outbox(self.agent.cfg.db_path)
        try:
            head = ob.head()[0]
            last = min(args.last_seq, head)
            present = [
                r[0]
                for r in ob.conn.execute(
                    "SELECT seq FROM records WHERE seq BETWEEN ? AND ? ORDER BY seq", (args.first_seq, last)
                ).fetchall()
            ]
            requeued = ob.mark_undelivered(args.first_seq, last) if last >= args.first_seq else 0
        finally:
            ob.close()
        have = set(present)
        missing = [s for s in range(args.first_seq, last + 1) if s not in have]
        if missing:
            log.warning("resend: %d record(s) in the range are no longer stored (pruned or evicted)", len(missing))
        self._rewind_sync()
        return {
            "first_seq": args.first_seq,
            "last_seq": args.last_seq,
            "requeued": requeued,
            "already_queued": len(present) - requeued,
            "missing": seq_ranges(missing),
            "head_seq": head,
        }

    def _rewind_sync(self) -> None:
        """Make the publisher start again from the first undelivered seq (it only moves forward otherwise)."""
        if self.agent.sync is not None:
            self.agent.sync.rewind()

    def _do_rotate_key(self, _args: NoArgs) -> Outcome:
        writer = self.agent.writer
        if writer is None:
            raise CommandRefused("unavailable", "rotate_key: the chain writer is not running")
        return rotate_device_key(self.agent.cfg, writer)

    def _do_patch_config(self, args: PatchConfigArgs) -> Outcome:
        path = self.agent.config_path
        if path is None:
            raise CommandRefused("unavailable", "patch_config: the agent was not started from a config file")
        old_text = Path(path).read_text(encoding="utf-8")
        try:
            new_text, _ = patched_config_text(old_text, args.set, str(path))
        except ConfigError as exc:
            raise CommandRefused("bad_args", _short("; ".join(exc.problems), 400)) from None
        atomic_write(Path(path), new_text.encode("utf-8"))
        error = self._try_reload()
        if error is None:
            log.info("patch_config: applied %d key(s) and reloaded", len(args.set))
            return {"applied": sorted(args.set), "rolled_back": False}
        log.error("patch_config: the agent could not run with the new config (%s); restoring the previous file", error)
        atomic_write(Path(path), old_text.encode("utf-8"))
        again = self._try_reload()
        if again is not None:
            log.critical("patch_config: reloading the previous config failed too: %s", again)
        raise RuntimeError(
            f"new config rejected at reload ({error}); previous config restored"
            + ("" if again is None else f", but reloading it failed too ({again})")
        )

    def _try_reload(self) -> str | None:
        try:
            ok = self.agent.reload()
        except Exception as exc:  # noqa: BLE001 - any failure to start the pipeline means roll back
            return _short(f"{type(exc).__name__}: {exc}", 300)
        return None if ok else "reload refused the file (see the log)"

    def _do_replace_manifest(self, args: ReplaceManifestArgs) -> Outcome:
        try:
            from edge_agent.pipelines.bench.manifest import replace_manifest
        except ImportError:
            raise CommandRefused("unsupported", "replace_manifest: this edge-agent has no bench support") from None
        if self.agent.cfg.profile != "bench":
            raise CommandRefused("unsupported", f"replace_manifest: not a bench ({self.agent.cfg.profile} profile)")
        try:
            data = base64.b64decode(args.data_b64, validate=True)
        except binascii.Error:
            raise CommandRefused("bad_args", "replace_manifest: data_b64 is not valid base64") from None
        try:
            manifest = replace_manifest(self.agent.cfg.state_dir, data)
        except EdgeAgentError as exc:
            raise CommandRefused("bad_args", _short(str(exc), 400)) from None
        return {"orders": len(manifest.orders), "sha256": manifest.sha256, "bytes": len(data)}


def rotate_device_key(cfg: AgentConfig, writer: Any) -> Outcome:
    """New key beside the old; a `key_rotation` record signed by the OLD key; then swap files and signer.

    If the agent dies between the announcement and the swap, the old key stays in use: records
    it signs remain valid (central keeps announced keys), and the unused new key is announced only.
    """
    old: DeviceKey = writer.key
    new_path = cfg.key_path.with_name(cfg.key_path.name + ".new")
    new = generate_key(new_path, force=True)
    writer.emit(
        "key_rotation",
        {"old_key_id": old.key_id, "new_key_id": new.key_id, "new_public_key": public_raw_b64(new.public)},
    )
    if not writer.flush(10.0):
        raise RuntimeError("the key_rotation record was not committed within 10 s; still signing with the old key")
    os.replace(new_path, cfg.key_path)
    dfd = os.open(cfg.key_path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    writer.key = new
    log.info("device key rotated: %s -> %s", old.key_id, new.key_id)
    return {"old_key_id": old.key_id, "new_key_id": new.key_id, "new_public_key": public_raw_b64(new.public)}


# ---------------------------------------------------------------- checkpoints


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
    cp["sig"] = base64.b64encode(key.sign(signing_bytes(cp))).decode("ascii")
    return cp


def checkpoint_topic(cfg: AgentConfig) -> str:
    from edge_agent.spine.sync import topic_base

    return f"{topic_base(cfg)}/checkpoint"


def publish_checkpoint(agent: Agent) -> dict[str, Any] | None:
    """Sign the committed chain head, keep it in <state_dir>/checkpoint.json, publish it retained (QoS 1)."""

    writer, sync, cfg = agent.writer, agent.sync, agent.cfg
    if writer is None:
        return None
    ob = Outbox(cfg.db_path, readonly=True)
    try:
        seq, head_hash = ob.head()
    finally:
        ob.close()
    t, _ = agent.clock.now()
    cp = make_checkpoint(writer.key, device=cfg.device.id, seq=seq, head_hash=head_hash, ts=format_ts(t))
    data = encode(cp)
    with contextlib.suppress(OSError):
        atomic_write(cfg.state_dir / CHECKPOINT_FILE, data + b"\n", mode=0o600)
    if sync is not None and sync.connected.is_set():
        info = sync.client.publish(checkpoint_topic(cfg), data, qos=1, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(1.0)
        log.debug("checkpoint published: seq %d", seq)
    return cp


# ---------------------------------------------------------------- CLI: central tools


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyError_(f"{path}: cannot read the central key: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{path}: expected an Ed25519 private key, got {type(key).__name__}")
    return key


def cmd_central_keygen(args: argparse.Namespace) -> int:
    from edge_agent.cli.common import EXIT_OK, fail

    out = Path(args.out)
    priv_path, pub_path = out / "central.key", out / "central.pub.pem"
    try:
        key = generate_key(priv_path, force=args.force)
    except KeyError_ as exc:
        return fail(str(exc))
    atomic_write(pub_path, public_pem(key.public), mode=0o644)
    print(f"key id:      {key.key_id}")
    print(f"private key: {priv_path} (mode 0600; keep it on the central side only)")
    print(f"public key:  {pub_path} (copy to each device and list it in commands.trusted_keys)")
    return EXIT_OK


def cmd_central_sign(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one exit per kind of bad input
    from edge_agent.cli.common import EXIT_OK, fail

    try:
        private = _load_private(Path(args.key))
    except KeyError_ as exc:
        return fail(str(exc))
    try:
        cmd_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        return fail(f"--args: expected a JSON object, got invalid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(cmd_args, dict):
        return fail(f"--args: expected a JSON object, got {type(cmd_args).__name__}")
    if args.manifest:
        try:
            cmd_args["data_b64"] = base64.b64encode(Path(args.manifest).read_bytes()).decode("ascii")
        except OSError as exc:
            return fail(f"--manifest: {args.manifest}: cannot read: {exc.strerror}")
    if args.name not in COMMANDS:
        return fail(f"--name: expected one of {', '.join(COMMANDS)}, got {args.name!r}")
    try:
        parse_args(args.name, cmd_args)
        msg = sign_command(private, device=args.device, name=args.name, args=cmd_args, ttl_s=args.ttl_s)
    except (CommandRefused, ValueError) as exc:
        return fail(str(exc))
    data = json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
    print(data)
    if args.publish:
        if not args.site:
            return fail("--publish needs --site (topics are <prefix>/<site>/<device>/cmd/<name>)")
        topic = f"{args.topic_prefix}/{args.site}/{args.device}/cmd/{args.name}"
        err = _publish_once(args, topic, data.encode("utf-8"))
        if err:
            return fail(err)
        print(f"published to {topic}", file=sys.stderr)
    return EXIT_OK


def _publish_once(args: argparse.Namespace, topic: str, payload: bytes) -> str | None:
    """Connect, publish QoS 1, wait for PUBACK, disconnect; an error message or None."""
    from edge_agent.errors import SyncError
    from edge_agent.settings import MqttConfig
    from edge_agent.spine.sync import describe_connect_error, make_client

    try:
        m = MqttConfig(
            url=args.publish,
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
            username=args.username,
            password_file=args.password_file,
        )
        client = make_client(m, f"edge-central-{os.getpid()}")
    except (SyncError, ValidationError) as exc:
        return str(exc).splitlines()[0]
    try:
        client.connect(m.host, m.port, 30)
    except OSError as exc:
        return describe_connect_error(exc, m)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(10.0)
        if not info.is_published():
            return f"no PUBACK from {m.host}:{m.port} within 10 s (credentials or ACL?)"
    except (RuntimeError, ValueError) as exc:
        return f"publish failed: {exc}"
    finally:
        client.disconnect()
        client.loop_stop()
    return None


# ---------------------------------------------------------------- CLI: verify --checkpoint


def _verify_with_checkpoint(  # noqa: PLR0911 - one exit per kind of bad input
    args: argparse.Namespace, plain: Callable[[argparse.Namespace], int]
) -> int:
    """`edge-agent verify --checkpoint FILE`: the usual verification, then the stream's tail against the checkpoint."""
    if not getattr(args, "checkpoint", None):
        return plain(args)
    from edge_agent.cli import main as cli
    from edge_agent.cli.common import EXIT_FAIL, EXIT_OK, fail
    from edge_agent.spine.verify import FAIL, Verifier, check_checkpoint

    try:
        keys = load_public_keys(Path(args.pubkey))
    except KeyError_ as exc:
        return fail(str(exc))
    try:
        cp = json.loads(Path(args.checkpoint).read_bytes())
    except OSError as exc:
        return fail(f"{args.checkpoint}: cannot read: {exc.strerror}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return fail(f"{args.checkpoint}: expected a checkpoint JSON object, got invalid JSON ({exc})")
    if args.mqtt:
        v = Verifier(keys, strict_order=False)
        rc = cli._verify_mqtt(v, args)
        if rc is not None:
            return rc
    else:
        v = Verifier(keys, strict_order=True)
        src = args.records
        try:
            stream = sys.stdin.buffer if src in (None, "-") else open(src, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            return fail(f"{src}: cannot read: {exc.strerror}")
        with stream:
            for n, line in enumerate(stream, 1):
                v.add_line(line, f"{src or 'line'}:{n}: ")
    findings = v.finish()
    findings = findings + check_checkpoint(v, cp, keys)
    v.findings[:] = findings
    for f in findings:
        if f.level == FAIL or args.verbose or f.what in ("signed_gap", "checkpoint"):
            print(f.line())
    s = v.summary()
    verdict = "INTACT" if v.ok else "NOT INTACT"
    print(
        f"{verdict}: device {s['device']}, {s['unique']} record(s) (seq {s['first_seq']}..{s['last_seq']}), "
        f"{s['received']} received, {s['failures']} failure(s); checkpoint seq {cp.get('seq')!r}"
    )
    return EXIT_OK if v.ok and s["unique"] > 0 else EXIT_FAIL


def register(sub: Any) -> None:
    """`edge-agent central keygen|sign-command`, and `--checkpoint FILE` on `edge-agent verify`."""
    c = sub.add_parser("central", help="tools for the central team: command keys and signed commands")
    cs = c.add_subparsers(dest="central_cmd", metavar="ACTION")
    cs.required = True
    s = cs.add_parser("keygen", help="new central Ed25519 key pair: central.key (0600) and central.pub.pem")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--force", action="store_true", help="replace an existing central.key")
    s.set_defaults(func=cmd_central_keygen)
    s = cs.add_parser("sign-command", help="print a signed command message (and optionally publish it)")
    s.add_argument("--key", required=True, metavar="PRIV", help="central private key (from `central keygen`)")
    s.add_argument("--device", required=True, metavar="ID")
    s.add_argument("--name", required=True, choices=COMMANDS)
    s.add_argument("--args", default="{}", metavar="JSON", help='command arguments, e.g. {"first_seq":1,"last_seq":9}')
    s.add_argument("--manifest", metavar="FILE", help="replace_manifest: the manifest file (sets data_b64)")
    s.add_argument("--ttl-s", type=float, default=600.0, help="seconds until the command expires (default 600)")
    s.add_argument("--publish", metavar="URL", help="also publish it: mqtt://host:port or mqtts://host:port")
    s.add_argument("--topic-prefix", default="edge")
    s.add_argument("--site")
    s.add_argument("--ca-file")
    s.add_argument("--cert-file")
    s.add_argument("--key-file")
    s.add_argument("--username")
    s.add_argument("--password-file")
    s.set_defaults(func=cmd_central_sign)

    verify = sub.choices.get("verify")
    if verify is not None:
        verify.add_argument(
            "--checkpoint",
            metavar="FILE",
            help="the device's signed checkpoint (retained on .../checkpoint): fail when the stream ends before it",
        )
        plain = verify.get_default("func")
        verify.set_defaults(func=lambda a: _verify_with_checkpoint(a, plain))
