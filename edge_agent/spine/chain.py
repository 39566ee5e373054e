"""The one thread that appends to the chain: group commit of queued (kind, body) items."""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from edge_agent.spine.clock import Clock
from edge_agent.spine.keys import DeviceKey
from edge_agent.spine.outbox import Outbox, is_damage
from edge_agent.spine.records import canonical

log = logging.getLogger(__name__)

# After a full disk, how often the bound is raised again toward outbox.max_mb as space returns,
# and how much free space is left for SQLite's WAL and the rest of the system meanwhile.
ROOM_CHECK_S = 5.0
DISK_HEADROOM_BYTES = 8 * 1024 * 1024


class ChainWriter:
    """Takes (kind, body) from a bounded queue and commits them in batches: one transaction per batch.

    No one is told of a record before its batch is committed with synchronous=FULL: `on_commit`
    is called after the commit with the new head seq.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        device: str,
        key: DeviceKey,
        clock: Clock,
        max_bytes: int,
        batch_max: int = 512,
        queue_max: int = 20000,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.device = device
        self.key = key
        self.clock = clock
        self.max_bytes = max_bytes
        self.configured_max_bytes = max_bytes  # outbox.max_mb; max_bytes drops below it on a full disk
        self._next_room_check = 0.0
        self._rotate_to: DeviceKey | None = None
        self.batch_max = batch_max
        self.on_commit = on_commit
        self._q: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(maxsize=queue_max)
        self._stop = threading.Event()
        self._pending = 0  # emitted, not yet committed
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.heartbeat = time.monotonic()
        self.committed = 0
        self.last_error: str | None = None
        self.head_seq = outbox.head()[0]
        self._damage: sqlite3.Error | None = None  # found by another connection (report_damage)

    def emit(self, kind: str, body: dict[str, Any]) -> None:
        """Queue a record; blocks while the queue is full (back-pressure), never drops."""
        if not kind or not isinstance(body, dict):
            raise ValueError(f"emit: expected a kind and a dict body, got {kind!r}, {type(body).__name__}")
        with self._cond:
            self._pending += 1
        while True:
            try:
                self._q.put((kind, body), timeout=1.0)
                return
            except queue.Full:
                log.warning("chain writer queue full; producer waits (outbox slow or disk stalled)")

    def rotate(self, new_key: DeviceKey, body: dict[str, Any]) -> None:
        """Queue a `key_rotation` record (signed by the current key); every record after it is signed by new_key."""
        self._rotate_to = new_key
        self.emit("key_rotation", body)

    def report_damage(self, exc: sqlite3.Error) -> None:
        """Another connection (the MQTT publisher) found the outbox damaged: the writer mends it or moves it
        aside, on its own thread, between two batches."""
        self._damage = exc

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chain-writer", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued so far is committed."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self.flush(timeout_s)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def set_bound(self, max_bytes: int) -> None:
        """A new outbox.max_mb (reload)."""
        self.configured_max_bytes = max_bytes
        self.max_bytes = max_bytes

    @property
    def queued(self) -> int:
        return self._q.qsize()

    def _run(self) -> None:
        batch: list[tuple[str, dict[str, Any]]] = []
        while True:
            self.heartbeat = time.monotonic()
            if self._damage is not None:
                batch = self._recover(self._damage, batch)
                continue
            if not batch:
                batch = self._next_batch()
                if not batch:
                    if self._stop.is_set():
                        return
                    continue
            rotate_to = self._rotate_to
            try:
                records = self.outbox.append(
                    batch,
                    device=self.device,
                    key=self.key,
                    clock=self.clock,
                    max_bytes=self.max_bytes,
                    rotate_to=rotate_to,
                )
            except ValueError:
                good = self._drop_unencodable(batch)
                self._done(len(batch) - len(good))
                batch = good
                continue
            except sqlite3.Error as exc:
                batch = self._write_failed(exc, batch)
                continue
            if rotate_to is not None and any(
                r["kind"] == "key_rotation" and r["body"].get("new_key_id") == rotate_to.key_id for r in records
            ):
                self.key, self._rotate_to = rotate_to, None
            self.committed += len(records)
            self._restore_bound()
            self.head_seq = records[-1]["seq"]
            self.last_error = None
            self._done(len(batch))
            batch = []
            if self.on_commit is not None:
                self.on_commit(self.head_seq)

    def _next_batch(self) -> list[tuple[str, dict[str, Any]]]:
        """Up to batch_max queued items; waits at most 0.2 s for the first."""
        try:
            batch = [self._q.get(timeout=0.2)]
        except queue.Empty:
            return []
        while len(batch) < self.batch_max:
            try:
                batch.append(self._q.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write_failed(
        self, exc: sqlite3.Error, batch: list[tuple[str, dict[str, Any]]]
    ) -> list[tuple[str, dict[str, Any]]]:
        """A damaged outbox is mended or moved aside; a full disk or an I/O error keeps the batch in memory for
        the next try, one second later (producers feel back-pressure)."""
        if is_damage(exc):
            return self._recover(exc, batch)
        self.last_error = f"outbox write failed: {exc}"
        log.error("outbox write failed (%s); keeping %d record(s) in memory and retrying", exc, len(batch))
        if "full" in str(exc).lower():
            self._emergency_room()
        self._stop.wait(1.0)
        if self._stop.is_set() and self._q.empty():
            self._stop.wait(1.0)
        return batch

    def _recover(self, exc: sqlite3.Error, batch: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        """The outbox is damaged: mend it, or move it aside and start a fresh one whose signed gap goes first.

        Retrying the write would fail forever. The batch is kept either way; it is committed after the gap.
        """
        self._damage = None
        try:
            self.outbox, gap = self.outbox.recover(exc, beat=self._beat)
        except (OSError, sqlite3.Error) as again:
            self.last_error = f"outbox damaged ({exc}) and not mended: {again}"
            log.error("outbox damaged (%s) and could not be moved aside (%s); trying again in 1 s", exc, again)
            self._damage = exc
            self._stop.wait(1.0)
            return batch
        if gap is None:
            return batch
        with self._cond:
            self._pending += 1
        return [("gap", gap), *batch]

    def _beat(self) -> None:
        """The heartbeat, from inside a long recovery: SQLite is still making progress (Outbox.recover)."""
        self.heartbeat = time.monotonic()

    def _done(self, n: int) -> None:
        with self._cond:
            self._pending -= n
            if self._pending == 0:
                self._cond.notify_all()

    def _drop_unencodable(self, batch: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        good = []
        for kind, body in batch:
            try:
                canonical(body)
            except ValueError as exc:
                log.error(
                    "dropped a %s record a pipeline built wrongly (%s); this is a bug, please report it", kind, exc
                )
                continue
            good.append((kind, body))
        return good

    def _emergency_room(self) -> None:
        """The disk itself is full: shrink the bound to what the outbox holds, and give the WAL its space back.

        The bound goes back up (see _restore_bound) as soon as the disk has room again.
        """
        with contextlib.suppress(sqlite3.Error):
            self.outbox.checkpoint_truncate()
        try:
            stored = self.outbox.stats().stored_bytes
        except sqlite3.Error:
            return
        new_bound = max(int(stored * 0.8), 64 * 1024)
        if new_bound < self.max_bytes:
            log.error(
                "disk full: lowering the outbox bound from %d to %d bytes until the disk has room again",
                self.max_bytes,
                new_bound,
            )
            self.max_bytes = new_bound
            self._next_room_check = time.monotonic() + ROOM_CHECK_S

    def _restore_bound(self) -> None:
        """After a full disk: raise the bound again, as far as the free space allows, up to outbox.max_mb."""
        if self.max_bytes >= self.configured_max_bytes or time.monotonic() < self._next_room_check:
            return
        self._next_room_check = time.monotonic() + ROOM_CHECK_S
        try:
            free = shutil.disk_usage(self.outbox.path.parent).free
            stored = self.outbox.stats().stored_bytes
        except (OSError, sqlite3.Error):
            return
        room = stored + free - DISK_HEADROOM_BYTES
        new_bound = min(self.configured_max_bytes, room)
        if new_bound > self.max_bytes:
            log.warning(
                "disk has room again: outbox bound raised from %d to %d bytes (outbox.max_mb is %d bytes)",
                self.max_bytes,
                new_bound,
                self.configured_max_bytes,
            )
            self.max_bytes = new_bound
