"""The command processor: checks each command on its own thread, runs it through a small host protocol."""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from edge_agent.files import sqlite_damaged
from edge_agent.spine.clock import format_ts
from edge_agent.spine.config import SpineConfig
from edge_agent.spine.outbox import Outbox, seq_ranges
from edge_agent.spine.remote.message import (
    CommandMessage,
    CommandRefused,
    NoArgs,
    PatchConfigArgs,
    ReplaceManifestArgs,
    ResendArgs,
    load_trusted,
    parse_args,
    short,
    verify_command,
)
from edge_agent.spine.remote.nonces import NONCES_DB, NonceStore

log = logging.getLogger(__name__)

QUEUE_MAX = 32
# Refusals are recorded as events, but a flood of garbage on the cmd topic must not fill the outbox.
REFUSAL_EVENTS_PER_MIN = 20

Outcome = dict[str, Any]


class CommandHost(Protocol):
    """What the processor may ask of the agent, and nothing more."""

    stop_event: threading.Event

    def config(self) -> SpineConfig:
        """The running config (it changes on reload)."""

    def security_now(self) -> datetime:
        """Time for security decisions (expiry, nonces): never GPS over a synced system clock."""

    def ready(self) -> bool:
        """True once the pipeline runs (a patch needs it to reload)."""

    def emit(self, kind: str, body: dict[str, Any]) -> None: ...

    def flush(self, timeout_s: float) -> bool: ...

    def health(self) -> dict[str, Any]:
        """Emit a health record now and return its body."""

    def rewind(self) -> None:
        """Make the publisher start again from the first undelivered seq."""

    def rotate_key(self) -> Outcome: ...

    def reload_config(self, changes: Mapping[str, Any]) -> Outcome:
        """Apply dotted-key config changes, prove them, reload; roll back and raise when they fail."""

    def pipeline_command(self, name: str, args: Mapping[str, Any]) -> Outcome:
        """A command the profile's pipeline handles (replace_manifest); CommandRefused when it has none."""


class CommandProcessor:
    """Checks and runs commands in its own thread; MQTT callbacks only enqueue (bounded, never blocking).

    The thread starts with the processor and ends when the host's stop event is set.
    """

    def __init__(self, host: CommandHost, *, start: bool = True) -> None:
        self.host = host
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
        # The replay guard is opened now: a new one refuses commands issued before it started (NonceStore),
        # and that must be the agent's start, not the first command's arrival.
        with contextlib.suppress(sqlite3.Error, OSError):
            _ = self.nonces
        # A trusted key file that does not load is logged now, at start, not first at a command's refusal.
        named = host.config().commands.trusted_keys
        if named and not load_trusted(named):
            log.warning("commands.trusted_keys: no central key loaded; remote commands will be refused")
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
            self._nonces = NonceStore(self.host.config().state_dir / NONCES_DB, now=self.host.security_now())
        return self._nonces

    def enqueue(self, topic: str, payload: bytes) -> None:
        """Called on the MQTT network thread: queue and return at once; an oversized payload is not kept."""
        size = len(payload)
        item = (topic, None if size > self.host.config().commands.max_bytes else bytes(payload), size)
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("command queue full; dropped %d command message(s) so far", self.dropped)

    def _run(self) -> None:
        next_prune = 0.0
        stop = self.host.stop_event
        while not (self._stop.is_set() or stop.is_set()):
            try:
                topic, payload, size = self._q.get(timeout=0.5)
            except queue.Empty:
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + 3600
                    with contextlib.suppress(sqlite3.Error):
                        self.nonces.prune(self.host.security_now())
                continue
            # Commands queued while the agent starts wait for its pipeline (a patch needs it to reload).
            while not self.host.ready() and not stop.wait(0.2):
                pass
            try:
                self.process(topic, payload, size=size)
            except Exception:
                log.exception("command processing failed unexpectedly; the agent keeps running")

    # ------------------------------------------------------------ one message
    def process(self, topic: str, payload: bytes | None, *, size: int | None = None) -> Outcome:
        """Check and run one command message; emit its outcome as a signed `event` record; return it."""
        self.processed += 1
        cfg = self.host.config()
        topic_name = topic.rsplit("/", 1)[-1] if topic else None
        msg: CommandMessage | None = None
        try:
            if payload is None:
                raise CommandRefused(
                    "oversized", f"{size} bytes, more than commands.max_bytes ({cfg.commands.max_bytes})"
                )
            now = self.host.security_now()
            msg = verify_command(
                payload,
                topic_name=topic_name,
                device=cfg.device.id,
                trusted=load_trusted(cfg.commands.trusted_keys),
                now=now,
                max_bytes=cfg.commands.max_bytes,
            )
            args = parse_args(msg.name, msg.args)
            self._claim(msg, now)
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
            error = short(f"{type(exc).__name__}: {exc}", 400)
            outcome = {"event": "command_failed", "command": msg.name, "error": error}
        outcome.update({"nonce": msg.nonce, "key": msg.key, "issued_at": format_ts(msg.issued_at)})
        if outcome["event"] == "command_failed":
            log.error("command %s failed: %s", msg.name, outcome["error"])
        else:
            log.info("command %s done", msg.name)
        self._record(outcome)
        return outcome

    def _claim(self, msg: CommandMessage, now: datetime) -> None:
        """Spend the command's nonce, or CommandRefused("replayed"). The nonce is spent once a command is
        accepted, whatever its outcome: a failed rotation must not be replayable either. A replay guard that
        cannot be read or written refuses (it fails closed); a damaged one is dropped, to be started afresh
        (NonceStore) on the next command."""
        try:
            too_old = self.nonces.beyond_memory(msg.issued_at, msg.expires_at, now)
            if too_old is not None:
                raise CommandRefused("replayed", too_old)
            if not self.nonces.claim(msg.key, msg.nonce, msg.expires_at, msg.name, now=now):
                raise CommandRefused("replayed", f"nonce {msg.nonce[:12]}... was already used")
        except sqlite3.Error as exc:
            damaged = sqlite_damaged(exc)
            if damaged and self._nonces is not None:
                self._nonces.close()
                self._nonces = None
            raise CommandRefused(
                "replayed",
                f"the replay guard {NONCES_DB} cannot be used ({exc})"
                + ("; it is started afresh: sign the command again" if damaged else ""),
            ) from None

    def _refuse(self, refused: CommandRefused, topic_name: str | None, msg: CommandMessage | None) -> Outcome:
        outcome: Outcome = {
            "event": "command_refused",
            "reason": refused.reason,
            "detail": short(str(refused), 400),
            "topic_name": short(topic_name or "", 40),
        }
        if msg is not None:
            outcome.update({"command": msg.name, "nonce": msg.nonce, "key": msg.key})
        now = time.monotonic()
        self._refusal_times = [t for t in self._refusal_times if now - t < 60]
        if len(self._refusal_times) >= REFUSAL_EVENTS_PER_MIN:
            # A flood: neither the outbox nor the log gets one entry per message.
            self._suppressed += 1
            if self._suppressed == 1:
                log.warning("more than %d refused commands in a minute; not recording each one", REFUSAL_EVENTS_PER_MIN)
            self._remember(outcome)
            return outcome
        log.warning("command refused (%s): %s", refused.reason, outcome["detail"])
        self._refusal_times.append(now)
        if self._suppressed:
            outcome["suppressed_before"] = self._suppressed
            self._suppressed = 0
        self._record(outcome)
        return outcome

    def _record(self, outcome: Outcome) -> None:
        self._remember(outcome)
        self.host.emit("event", outcome)

    def _remember(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        del self.outcomes[:-50]

    # ------------------------------------------------------------ the commands
    def _do_status(self, _args: NoArgs) -> Outcome:
        body = self.host.health()
        return {"health_emitted": True, "outbox_depth": body["outbox"]["depth"], "uptime_s": body["uptime_s"]}

    def _do_resend(self, args: ResendArgs) -> Outcome:
        # ResendArgs has checked that last_seq is within MAX_RESEND_SPAN of first_seq.
        with Outbox(self.host.config().db_path) as ob:
            head = ob.head()[0]
            last = min(args.last_seq, head)
            present = ob.stored_seqs(args.first_seq, last)
            requeued = ob.mark_undelivered(args.first_seq, last) if last >= args.first_seq else 0
        have = set(present)
        missing = [s for s in range(args.first_seq, last + 1) if s not in have]
        if missing:
            log.warning("resend: %d record(s) in the range are no longer stored (pruned or evicted)", len(missing))
        self.host.rewind()
        return {
            "first_seq": args.first_seq,
            "last_seq": args.last_seq,
            "requeued": requeued,
            "already_queued": len(present) - requeued,
            "missing": seq_ranges(missing),
            "head_seq": head,
        }

    def _do_rotate_key(self, _args: NoArgs) -> Outcome:
        return self.host.rotate_key()

    def _do_patch_config(self, args: PatchConfigArgs) -> Outcome:
        return self.host.reload_config(args.set)

    def _do_replace_manifest(self, args: ReplaceManifestArgs) -> Outcome:
        return self.host.pipeline_command("replace_manifest", {"data_b64": args.data_b64})
