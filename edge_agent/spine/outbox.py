"""The durable SQLite outbox: the chain head, group-committed signed records, delivery state, eviction.

Over ~400 lines on purpose: it is the one owner of every SQL statement against the outbox's
tables (append with eviction, delivery, pruning, reads for status/doctor/resend), so nothing
else in the tree writes SQL against them. Gap bodies live in gaps.py, the head sidecar in headfile.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.errors import LedgerError
from edge_agent.files import move_aside, rows_past_damage, sqlite_damaged, sqlite_uri
from edge_agent.spine.clock import Clock, format_ts
from edge_agent.spine.gaps import gap_body, highest, loss_gap, ranges_text, seq_ranges
from edge_agent.spine.headfile import HeadSidecar, read_head_sidecar
from edge_agent.spine.keys import DeviceKey
from edge_agent.spine.records import (
    GENESIS_PREV,
    KIND_PRIORITY,
    NEVER_EVICT,
    check_record,
    encode,
    loads_wire,
    make_record,
)

if TYPE_CHECKING:
    import sqlite_utils

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SQLITE_CORRUPT_INDEX = 779  # the extended code: an index disagrees with its table
# How long moving a damaged outbox aside may spend reading whole records out of it (the chain writer waits).
SALVAGE_BUDGET_S = 5.0
# How far below the last delivered seq it looks for records not yet acknowledged (twice mqtt.inflight_max's default).
SALVAGE_BEHIND = 1000
WAL_LIMIT_BYTES = 4 * 1024 * 1024
FOREIGN_CHAIN_REMEDY = (
    "a device keeps its id for life: put the old id back in device.id, or give the new id its own state_dir "
    "(edge-agent init --state-dir NEW_DIR), which makes it a new key and a chain from seq 1"
)


def _migrate_1(db: sqlite_utils.Database) -> None:
    db["records"].create(  # type: ignore[union-attr]
        {
            "seq": int,
            "kind": str,
            "priority": int,
            "ts": str,
            "data": bytes,  # canonical JSON of the whole record
            "hash": str,
            "size": int,
            "created_at": float,
            "delivered_at": float,
        },
        pk="seq",
        not_null={"kind", "priority", "ts", "data", "hash", "size", "created_at"},
    )
    db.execute("CREATE INDEX records_undelivered ON records(seq) WHERE delivered_at IS NULL")
    db.execute("CREATE INDEX records_evict ON records(priority, seq) WHERE delivered_at IS NULL")
    db.execute("CREATE INDEX records_delivered ON records(delivered_at) WHERE delivered_at IS NOT NULL")
    db["meta"].create({"key": str, "value": str}, pk="key")  # type: ignore[union-attr]
    db["meta"].insert_all(  # type: ignore[union-attr]
        [
            {"key": "head_seq", "value": "0"},
            {"key": "head_hash", "value": GENESIS_PREV},
            {"key": "bytes", "value": "0"},
            {"key": "last_delivered_seq", "value": "0"},
        ]
    )


MIGRATIONS = {1: _migrate_1}


@dataclass(frozen=True)
class Stats:
    head_seq: int
    head_hash: str
    depth: int  # undelivered records
    oldest_undelivered_ts: str | None
    oldest_undelivered_age_s: float | None
    last_delivered_seq: int
    stored: int
    stored_bytes: int


BUSY_TIMEOUT_S = 10.0


class OutboxBusy(LedgerError):
    """Another process holds the outbox's lock past the busy timeout."""


def _is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (extended codes included): a lock someone holds, not a damaged file."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def is_damage(exc: BaseException) -> bool:
    """The outbox file itself is damaged (SQLITE_CORRUPT, SQLITE_NOTADB), or its rows contradict its head (a
    seq stored above it): not a lock, a full disk or an I/O error, so retrying the same write cannot help."""
    return isinstance(exc, sqlite3.IntegrityError) or sqlite_damaged(exc)


def _file_ident(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def connect(path: Path, *, readonly: bool = False, create: bool = False) -> sqlite3.Connection:
    """A connection with the outbox's pragmas: WAL, synchronous=FULL, a busy timeout.

    Only the agent's start and moving a damaged outbox aside make the file (`create`). Any other connection
    fails while there is none: opening the path in the moment a damaged file has been moved and its WAL not
    yet, it would make an empty database there and pair it with the old WAL.
    """
    if readonly:
        db = sqlite3.connect(sqlite_uri(path, "ro"), uri=True, timeout=5, check_same_thread=False)
    else:
        db = sqlite3.connect(
            str(path) if create else sqlite_uri(path, "rw"),
            uri=not create,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
        )
    db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    if not readonly:
        # Switching to WAL needs an exclusive lock; only the first connection ever has to.
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        # After each checkpoint the WAL file shrinks back to this: it is the outbox's stated headroom
        # over outbox.max_mb on disk, and what it needs free when the disk fills.
        db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
    return db


def import_sqlite_utils() -> Any:
    """sqlite-utils, imported only to build the schema, without the numpy and pandas it would load.

    sqlite-utils imports numpy and pandas when they are installed (opencv brings numpy), only to map
    their types in inserts, which the outbox never makes: 13 MB that a truck would carry all day
    after its first start. While no other thread runs, they are hidden for the import; with other
    threads running, the import is plain, so nothing else can ever fail to import them. The agent
    calls it first thing in `Agent.run`, before its signals thread starts (import_sqlite_utils_if_needed).
    """
    import sys
    import threading

    if "sqlite_utils" in sys.modules or threading.active_count() > 1:
        import sqlite_utils

        return sqlite_utils
    hidden = [m for m in ("numpy", "pandas") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]  # makes `import m` raise ImportError
    try:
        import sqlite_utils
    finally:
        for m in hidden:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]
    return sqlite_utils


def import_sqlite_utils_if_needed(path: Path) -> None:
    """sqlite-utils now, while the caller is its process's only thread, when the outbox at `path` will be
    migrated (new, older, or unreadable: moved aside and made anew); an outbox that is up to date needs none."""
    try:
        conn = connect(path, readonly=True)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        version = 0
    if version < max(MIGRATIONS):
        import_sqlite_utils()


def _damaged(path: Path) -> sqlite3.Connection:
    """A read-only connection to a damaged outbox. writable_schema lets SQLite read a file shorter than its
    header says (truncated), up to where it ends; mode=ro keeps the file as it is."""
    conn = sqlite3.connect(sqlite_uri(path, "ro"), uri=True, timeout=1)
    try:
        conn.execute("PRAGMA writable_schema=ON")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


# How often a long statement of a recovery lets the caller's heartbeat beat: every this many SQLite VM steps
# (a few milliseconds of work here).
BEAT_EVERY_OPS = 100_000


@contextlib.contextmanager
def _beating(conn: sqlite3.Connection, beat: Callable[[], None] | None) -> Iterator[None]:
    """While the block runs, `beat()` is called as SQLite makes progress (its progress handler): a REINDEX,
    integrity check or salvage of a large outbox takes seconds on a Pi, and the writer's heartbeat must show
    it is working, not stuck. A statement that stops making progress stops the beats too."""
    if beat is None:
        yield
        return
    _beat_on(conn, beat)
    try:
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.set_progress_handler(None, 0)


def _beat_on(conn: sqlite3.Connection, beat: Callable[[], None]) -> None:
    """`beat()` every BEAT_EVERY_OPS SQLite VM steps on this connection, until it is closed (see _beating)."""

    def handler() -> int:
        # A failing beat must not interrupt the recovery (an exception here makes SQLite stop the statement).
        with contextlib.suppress(Exception):
            beat()
        return 0  # 0: go on

    conn.set_progress_handler(handler, BEAT_EVERY_OPS)


def _salvage(
    moved: Path, head: tuple[int, str] | None, beat: Callable[[], None] | None = None
) -> tuple[list[tuple[Any, ...]], tuple[int, str] | None, int]:
    """What a damaged outbox still gives, read in one snapshot: its undelivered records still whole, ascending;
    the head (the highest of its meta's and `head`, the sidecar's); and the last delivered seq the records go
    with. One snapshot, as the MQTT publisher may still be marking records delivered in the moved file.

    A record is whole when its bytes parse, hash to its stored hash, and carry its seq and kind. Reading starts
    SALVAGE_BEHIND below the last delivered seq (acknowledgements come out of order within the in-flight
    window), goes on past a damaged page by seq (a few times), and stops after SALVAGE_BUDGET_S: the writer
    waits meanwhile, and the rest stay in the file."""
    rows: list[tuple[Any, ...]] = []
    delivered = 0
    try:
        conn = _damaged(moved)
    except sqlite3.Error:
        return rows, head, delivered
    if beat is not None:
        _beat_on(conn, beat)
    deadline = time.monotonic() + SALVAGE_BUDGET_S
    try:
        conn.execute("BEGIN")  # one snapshot for the meta and the rows
        with contextlib.suppress(sqlite3.Error, ValueError, TypeError):
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            delivered = int(meta.get("last_delivered_seq", 0))
            if "head_seq" in meta and "head_hash" in meta:
                head = highest((int(meta["head_seq"]), str(meta["head_hash"])), head)
        upto = head[0] if head else 0
        for row in rows_past_damage(conn, _RECORDS_BY_SEQ, max(0, delivered - SALVAGE_BEHIND), upto):
            rec = _whole(row) if row[8] is None else None
            if rec is not None:  # its row made anew from the record: the other cells may be damaged
                data = _blob(row[4])
                made = row[7] if isinstance(row[7], float) else time.time()
                rows.append(
                    (
                        row[0],
                        rec["kind"],
                        KIND_PRIORITY.get(rec["kind"], 1),
                        rec["ts"],
                        data,
                        rec["hash"],
                        len(data),
                        made,
                    )
                )
            if time.monotonic() > deadline:
                log.error(
                    "outbox salvage: stopped after %.0f s at seq %d; the records after it are declared lost and "
                    "stay in %s (edge-agent outbox export --file reads them all)",
                    SALVAGE_BUDGET_S,
                    row[0],
                    moved,
                )
                return rows, head, delivered
    finally:
        conn.close()
    return rows, head, delivered


# A damaged outbox's records by seq, without the indexes (rows_past_damage).
_RECORDS_BY_SEQ = (
    "SELECT seq, kind, priority, ts, data, hash, size, created_at, delivered_at "
    "FROM records NOT INDEXED WHERE seq > ? AND seq <= ? ORDER BY seq"
)


def export_damaged(path: Path, since_seq: int = 0) -> Iterator[bytes]:
    """Every record from `since_seq` on still whole in a damaged or moved-aside outbox, delivered or not,
    ascending, with no time budget: what a technician recovers (`edge-agent outbox export --file`) beyond what
    the agent's salvage kept. Whole as in salvage: the bytes parse, hash to the stored hash and carry the row's
    seq and kind. sqlite3.DatabaseError when the file is no SQLite database or holds no records table (a
    file taken for an outbox by mistake would otherwise give nothing, as if every record were lost)."""
    with path.open("rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise sqlite3.DatabaseError("not an SQLite database (no SQLite header)")
    conn = _damaged(path)
    try:
        try:
            tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error:
            tables = {"records"}  # a damaged schema page: read what the records' pages still hold
        if "records" not in tables:
            raise sqlite3.DatabaseError("no records table: not an edge-agent outbox")
        for row in rows_past_damage(conn, _RECORDS_BY_SEQ, max(0, since_seq - 1), 2**62):
            if _whole(row) is not None:
                yield _blob(row[4])
    finally:
        conn.close()


def _whole(row: tuple[Any, ...]) -> dict[str, Any] | None:
    """The record a damaged outbox's row holds, when it is whole (parses, carries the row's seq, kind and
    hash, and hashes to it); else None. loads_wire gives the signing bytes in the same pass as the parse."""
    try:
        rec, signing = loads_wire(_blob(row[4]))
    except (ValueError, TypeError):
        return None
    if not isinstance(rec, dict) or (rec.get("seq"), rec.get("kind"), rec.get("hash")) != (row[0], row[1], row[5]):
        return None
    if not isinstance(rec.get("ts"), str) or check_record(rec, None, signing=signing):
        return None
    return rec


_INDEX_ONLY = re.compile(r"(row \d+ missing from|wrong # of entries in|non-unique entry in) index \w+")


def _check(path: Path) -> str | None:
    """What is damaged in the outbox at path, or None. After a clean stop, PRAGMA quick_check (the pages and
    their b-trees); after an unclean one (its WAL left behind), PRAGMA integrity_check, which also finds
    an index that disagrees with its records (a WAL cut after a checkpoint). Such an index is rebuilt
    from the records, and nothing is lost."""
    wal = Path(f"{path}-wal")
    unclean = wal.exists() and wal.stat().st_size > 0
    probe = connect(path)
    try:
        found = [str(r[0]) for r in probe.execute(f"PRAGMA {'integrity_check' if unclean else 'quick_check'}")]
        if found != ["ok"] and all(_INDEX_ONLY.fullmatch(f) for f in found):
            probe.execute("REINDEX")
            log.warning(
                "outbox %s: after an unclean stop an index disagreed with the records (%s); rebuilt it, none lost",
                path,
                found[0],
            )
            found = [str(r[0]) for r in probe.execute("PRAGMA integrity_check")]
    finally:
        probe.close()
    return None if found == ["ok"] else "; ".join(found)[:200]


class Outbox:
    """One connection to the outbox. The chain writer owns one; the MQTT sync and the CLI open their own."""

    def __init__(self, path: Path, *, readonly: bool = False, create: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self.conn: sqlite3.Connection = connect(path, readonly=readonly, create=create)
        self._ident = _file_ident(path)
        self.sidecar = HeadSidecar(path)

    # ------------------------------------------------------------ opening
    @classmethod
    def open_checked(cls, path: Path) -> tuple[Outbox, dict[str, Any] | None]:
        """Open (creating, migrating); a corrupt file is moved aside, never deleted; OutboxBusy when another
        process holds its lock past the busy timeout (that is not corruption: the file is left alone).

        Returns the outbox and, when records were lost, the body of the signed `gap` to append
        first: `outbox_corrupt` (file moved aside) or `outbox_lost` (the file is empty, missing
        or older than the head sidecar: zeroed, deleted, or its WAL tail lost). Either way the
        chain continues after the highest seq ever made, never reusing one.
        """
        try:
            return cls._open_checked(path)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            raise OutboxBusy(
                f"outbox {path} is locked by another process (for over {BUSY_TIMEOUT_S:.0f} s: a backup, an "
                "sqlite3 shell, a copy of the agent?); waiting for it"
            ) from None

    @classmethod
    def _open_checked(cls, path: Path) -> tuple[Outbox, dict[str, Any] | None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        side = read_head_sidecar(path)
        corrupt_reason = None
        if path.exists():
            try:
                corrupt_reason = _check(path)
            except sqlite3.DatabaseError as exc:
                if _is_busy(exc):
                    raise
                corrupt_reason = str(exc)
        if corrupt_reason is not None:
            return cls._move_aside(path, corrupt_reason)
        ob = cls(path, create=True)
        ob.migrate()
        db_head = ob.head()
        if side is not None and side[0] > db_head[0]:
            detail = (
                f"outbox head is seq {db_head[0]} but seq {side[0]} was already made "
                "(the file was zeroed, deleted or lost its last writes)"
            )
            log.critical(
                "outbox %s: %s; continuing after seq %d with a signed gap record declaring seq %d-%d lost",
                path,
                detail,
                side[0],
                db_head[0] + 1,
                side[0],
            )
            delivered = int(ob._meta().get("last_delivered_seq", "0"))
            ob._set_meta({"head_seq": str(side[0]), "head_hash": side[1]})
            return ob, loss_gap("outbox_lost", detail, side, max(delivered, db_head[0]))
        return ob, None

    @classmethod
    def _move_aside(
        cls, path: Path, reason: str, beat: Callable[[], None] | None = None
    ) -> tuple[Outbox, dict[str, Any]]:
        """Move a damaged outbox aside (never deleted) and start a fresh one that continues after the highest
        seq ever made; returns it with the `outbox_corrupt` gap to append first."""
        sidecar = read_head_sidecar(path)  # before a fresh outbox opens its own
        moved = move_aside(path)
        ob = cls(path, create=True)
        ob.migrate()
        rows, head, delivered = _salvage(moved, sidecar, beat)
        kept = [r[0] for r in rows]
        gap = loss_gap("outbox_corrupt", reason, head, delivered, kept)
        gap["moved_to"] = moved.name
        if kept:
            gap["kept"] = len(kept)
        log.critical(
            "outbox %s is damaged (%s); moved it aside to %s and started a fresh one. %d undelivered record(s) "
            "read whole from it are queued again; %d declared lost in a signed gap record. Keep the file",
            path,
            reason,
            moved,
            len(kept),
            gap["count"],
        )
        with _beating(ob.conn, beat), ob.conn:
            ob.conn.execute("BEGIN IMMEDIATE")
            ob.conn.executemany(
                "INSERT INTO records(seq, kind, priority, ts, data, hash, size, created_at) VALUES (?,?,?,?,?,?,?,?)",
                rows,
            )
            meta = {"bytes": str(sum(r[6] for r in rows))}
            if head is not None:
                meta |= {"head_seq": str(head[0]), "head_hash": head[1]}
            ob._set_meta(meta)
        return ob, gap

    def migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        for target in sorted(MIGRATIONS):
            if target > version:
                sqlite_utils = import_sqlite_utils()
                with self.conn:
                    self.conn.execute("BEGIN IMMEDIATE")
                    MIGRATIONS[target](sqlite_utils.Database(self.conn))
                    self.conn.execute(f"PRAGMA user_version={target}")
                log.info("outbox schema migrated to version %d", target)
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path}: schema version {version} is newer than this edge-agent knows ({SCHEMA_VERSION}); "
                "upgrade edge-agent"
            )

    def replaced(self) -> bool:
        """The file at the path is no longer the one this connection reads: the agent moved a damaged outbox
        aside and started a fresh one (see recover). A reader then opens the path again to follow it."""
        now = _file_ident(self.path)
        return now is not None and now != self._ident

    def recover(
        self, exc: sqlite3.Error, beat: Callable[[], None] | None = None
    ) -> tuple[Outbox, dict[str, Any] | None]:
        """A write found this outbox damaged (is_damage). Damage to an index alone is mended by rebuilding the
        indexes from the records, and nothing is lost: (self, None). Any other damage closes this connection,
        moves the file aside and starts a fresh one, as at start: (the new outbox, the gap to append first).
        `beat` is called while SQLite works on it (see _beating): the chain writer's heartbeat."""
        reason = str(exc)
        if isinstance(exc, sqlite3.IntegrityError):
            reason = f"{exc}: the file's head is behind its records"
        elif getattr(exc, "sqlite_errorcode", 0) == SQLITE_CORRUPT_INDEX:
            try:
                with _beating(self.conn, beat):
                    self.conn.execute("REINDEX")
                    problem = self._inconsistency()
            except sqlite3.Error as again:
                problem = str(again)
            if problem is None:
                log.warning(
                    "outbox %s: an index was damaged (%s); rebuilt it from the records, none lost", self.path, exc
                )
                return self, None
            reason = f"{reason}; rebuilding its indexes did not mend it: {problem}"
        self.close()
        return Outbox._move_aside(self.path, reason, beat)

    def _inconsistency(self) -> str | None:
        """What quick_check finds, or a record stored above the head; None when the outbox is whole."""
        result = self.quick_check()
        if result != "ok":
            return result[:200]
        top = self.conn.execute("SELECT MAX(seq) FROM records").fetchone()[0]
        head = self.head()[0]
        if top is not None and top > head:
            return f"seq {top} is stored above the head, seq {head}"
        return None

    def close(self) -> None:
        self.sidecar.close()
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ meta
    def _meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def _set_meta(self, values: dict[str, str]) -> None:
        self.conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", list(values.items()))

    def head(self) -> tuple[int, str]:
        m = self._meta()
        return int(m["head_seq"]), m["head_hash"]

    # ------------------------------------------------------------ appending
    def append(
        self,
        items: Sequence[tuple[str, dict[str, Any]]],
        *,
        device: str,
        key: DeviceKey,
        clock: Clock,
        max_bytes: int,
        rotate_to: DeviceKey | None = None,
    ) -> list[dict[str, Any]]:
        """Sign, chain and commit a batch in ONE transaction; return the records once durable.

        `rotate_to`: the key that signs everything after the `key_rotation` record announcing it,
        from that very record on, so no record after a rotation carries the old key.

        When the batch would push stored bytes past max_bytes, delivered records go first, then
        undelivered ones by priority (telemetry/health/sensor, then events, then trips and
        inspections), oldest first, and a signed `gap` record listing them is appended.
        """
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            seq, prev = self.head()
            stored = int(self._meta()["bytes"])
            records = []
            rows = []
            for kind, body in items:
                seq += 1
                t, clock_state = clock.now()
                rec = make_record(
                    device=device, seq=seq, ts=format_ts(t), clock=clock_state, kind=kind, body=body, prev=prev, key=key
                )
                data = encode(rec)
                prev = rec["hash"]
                records.append(rec)
                rows.append((seq, kind, KIND_PRIORITY.get(kind, 1), rec["ts"], data, prev, len(data), time.time()))
                if kind == "key_rotation" and rotate_to is not None and body.get("new_key_id") == rotate_to.key_id:
                    key = rotate_to
            incoming = sum(r[6] for r in rows)
            if stored + incoming > max_bytes:
                seq, prev, stored, incoming = self._evict_for(
                    rows, records, seq, prev, stored, incoming, device=device, key=key, clock=clock, max_bytes=max_bytes
                )
            self.conn.executemany(
                "INSERT INTO records(seq, kind, priority, ts, data, hash, size, created_at) VALUES (?,?,?,?,?,?,?,?)",
                rows,
            )
            self._set_meta({"head_seq": str(seq), "head_hash": prev, "bytes": str(stored + incoming)})
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
        # Before anyone is told of these records (on_commit), the sidecar knows they exist.
        self.sidecar.write(seq, prev)
        return records

    def append_gap(self, body: dict[str, Any], *, device: str, key: DeviceKey, clock: Clock) -> dict[str, Any]:
        return self.append([("gap", body)], device=device, key=key, clock=clock, max_bytes=1 << 62)[0]

    def _evict_for(  # noqa: PLR0917 - the batch's running state, threaded through one helper
        self,
        rows: list[tuple[Any, ...]],
        records: list[dict[str, Any]],
        seq: int,
        prev: str,
        stored: int,
        incoming: int,
        *,
        device: str,
        key: DeviceKey,
        clock: Clock,
        max_bytes: int,
    ) -> tuple[int, str, int, int]:
        """Inside append's transaction: evict until the batch and its gap record fit under max_bytes.

        The gap record counts against the bound like any record, and it replaces every older
        undelivered outbox_full gap (merged into it), so gaps cannot pile up past the bound.
        """
        evicted: list[tuple[int, str, str]] = []
        merged: list[dict[str, Any]] = []
        need = stored + incoming - int(max_bytes * 0.9)
        gap: dict[str, Any] | None = None
        data = b""
        for _ in range(4):  # a few rounds: each knows the size of the gap it must make room for
            more, freed, more_merged = self._make_room(need)
            stored -= freed
            evicted += more
            merged += more_merged
            if not evicted and not merged:
                return seq, prev, stored, incoming
            t, clock_state = clock.now()
            body = gap_body("outbox_full", sorted(evicted), merged, max_bytes=max_bytes)
            gap = make_record(
                device=device,
                seq=seq + 1,
                ts=format_ts(t),
                clock=clock_state,
                kind="gap",
                body=body,
                prev=prev,
                key=key,
            )
            data = encode(gap)
            need = stored + incoming + len(data) - max_bytes
            if need <= 0 or not (more or more_merged):
                break
        if gap is None:
            return seq, prev, stored, incoming
        # The gap record takes the next seq after the batch and is part of this transaction.
        seq += 1
        prev = gap["hash"]
        records.append(gap)
        rows.append((seq, "gap", NEVER_EVICT, gap["ts"], data, prev, len(data), time.time()))
        log.warning(
            "outbox full (outbox.max_mb): evicted %d undelivered record(s), seq %s; signed gap record seq %d "
            "tells central",
            len(evicted),
            ranges_text(evicted) if evicted else "-",
            seq,
        )
        return seq, prev, stored, incoming + len(data)

    def _make_room(self, need_bytes: int) -> tuple[list[tuple[int, str, str]], int, list[dict[str, Any]]]:
        """Inside a transaction: free need_bytes.

        Returns the evicted undelivered (seq, hash, kind), the bytes freed, and the bodies of the
        undelivered outbox_full gap records removed to be merged into the next one.
        """
        freed = 0
        for seq, size in self.conn.execute(
            "SELECT seq, size FROM records WHERE delivered_at IS NOT NULL ORDER BY seq"
        ).fetchall():
            if freed >= need_bytes:
                break
            self.conn.execute("DELETE FROM records WHERE seq = ?", (seq,))
            freed += size
        evicted: list[tuple[int, str, str]] = []
        merged: list[dict[str, Any]] = []
        if freed < need_bytes:
            cur = self.conn.execute(
                "SELECT seq, hash, kind, size FROM records WHERE delivered_at IS NULL AND priority < ? "
                "ORDER BY priority, seq",
                (NEVER_EVICT,),
            )
            for seq, h, kind, size in cur.fetchall():
                if freed >= need_bytes:
                    break
                evicted.append((seq, h, kind))
                freed += size
            self.conn.executemany("DELETE FROM records WHERE seq = ?", [(s,) for s, _, _ in evicted])
        if evicted or freed < need_bytes:
            # Older undelivered gaps of a full outbox are folded into the new one.
            for seq, h, size, data in self.conn.execute(
                "SELECT seq, hash, size, data FROM records WHERE delivered_at IS NULL AND kind = 'gap'"
            ).fetchall():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    body = json.loads(bytes(data))["body"]
                    if body.get("reason") != "outbox_full":
                        continue
                    merged.append({**body, "_seq": seq, "_hash": h})
                    self.conn.execute("DELETE FROM records WHERE seq = ?", (seq,))
                    freed += size
        evicted.sort()
        return evicted, freed, merged

    # ------------------------------------------------------------ delivery
    def undelivered(self, after_seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        return [
            (s, k, bytes(d))
            for s, k, d in self.conn.execute(
                "SELECT seq, kind, data FROM records WHERE delivered_at IS NULL AND seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        ]

    def first_undelivered_seq(self) -> int | None:
        row = self.conn.execute("SELECT MIN(seq) FROM records WHERE delivered_at IS NULL").fetchone()
        return row[0] if row and row[0] is not None else None

    def mark_delivered(self, seqs: Iterable[int]) -> None:
        seq_list = [(time.time(), s) for s in seqs]
        if not seq_list:
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(
                "UPDATE records SET delivered_at = ? WHERE seq = ? AND delivered_at IS NULL", seq_list
            )
            top = max(s for _, s in seq_list)
            self.conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'last_delivered_seq' AND CAST(value AS INTEGER) < ?",
                (str(top), top),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise

    def mark_undelivered(self, first_seq: int, last_seq: int) -> int:
        """Queue stored records again (central asked for a resend); returns how many."""
        cur = self.conn.execute(
            "UPDATE records SET delivered_at = NULL WHERE seq BETWEEN ? AND ? AND delivered_at IS NOT NULL",
            (first_seq, last_seq),
        )
        return cur.rowcount

    def prune_delivered(self, retention_s: float) -> int:
        """Delete delivered records older than the retention; keeps the chain head in meta."""
        cutoff = time.time() - retention_s
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            row = self.conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records "
                "WHERE delivered_at IS NOT NULL AND delivered_at < ?",
                (cutoff,),
            ).fetchone()
            self.conn.execute("DELETE FROM records WHERE delivered_at IS NOT NULL AND delivered_at < ?", (cutoff,))
            self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) - ? WHERE key = 'bytes'", (int(row[1]),))
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
        return int(row[0])

    # ------------------------------------------------------------ reading
    def stats(self) -> Stats:
        m = self._meta()
        depth, oldest = self.conn.execute("SELECT COUNT(*), MIN(ts) FROM records WHERE delivered_at IS NULL").fetchone()
        stored = self.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        age = None
        if oldest:
            age = max(0.0, time.time() - datetime.fromisoformat(oldest.replace("Z", "+00:00")).timestamp())
        return Stats(
            head_seq=int(m["head_seq"]),
            head_hash=m["head_hash"],
            depth=int(depth),
            oldest_undelivered_ts=oldest,
            oldest_undelivered_age_s=age,
            last_delivered_seq=int(m["last_delivered_seq"]),
            stored=int(stored),
            stored_bytes=int(m["bytes"]),
        )

    def stored_seqs(self, first_seq: int, last_seq: int) -> list[int]:
        """The seqs still stored in [first_seq, last_seq] (others were pruned or evicted)."""
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT seq FROM records WHERE seq BETWEEN ? AND ? ORDER BY seq", (first_seq, last_seq)
            ).fetchall()
        ]

    def tail(self, n: int) -> list[tuple[int, bytes]]:
        """The newest n records as (seq, data), oldest first."""
        rows = self.conn.execute("SELECT seq, data FROM records ORDER BY seq DESC LIMIT ?", (n,)).fetchall()
        return [(int(s), _blob(d)) for s, d in reversed(rows)]

    def latest(self, kind: str | None = None) -> tuple[str, bytes] | None:
        """(ts, data) of the newest stored record, of one kind if given; None when there is none."""
        if kind is None:
            row = self.conn.execute("SELECT ts, data FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        else:
            row = self.conn.execute(
                "SELECT ts, data FROM records WHERE kind = ? ORDER BY seq DESC LIMIT 1", (kind,)
            ).fetchone()
        return (str(row[0]), _blob(row[1])) if row else None

    def foreign_chain(self, device_id: str) -> str | None:
        """What is wrong when the newest stored record belongs to another device than `device_id` (its id was
        changed on a device that had run: its records would go on from that device's head); else None."""
        newest = self.latest()
        owner = None
        if newest is not None:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                owner = json.loads(newest[1]).get("device")
        if not isinstance(owner, str) or owner == device_id:
            return None
        return (
            f"{self.path}: the outbox holds the chain of device {owner!r} (up to seq {self.head()[0]}), not of "
            f"{device_id!r} (device.id)"
        )

    def checkpoint_truncate(self) -> None:
        """Copy the WAL into the database and cut the WAL file to zero (frees disk space at once)."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def quick_check(self) -> str:
        """SQLite's PRAGMA quick_check: "ok", or what is damaged."""
        return str(self.conn.execute("PRAGMA quick_check").fetchone()[0])

    def export(self, since_seq: int = 0, until_seq: int | None = None) -> Iterable[bytes]:
        q = "SELECT data FROM records WHERE seq >= ?"
        args: list[Any] = [since_seq]
        if until_seq is not None:
            q += " AND seq <= ?"
            args.append(until_seq)
        for (data,) in self.conn.execute(q + " ORDER BY seq", args):
            yield _blob(data)


def reader(path: Path, current: Outbox | None) -> Outbox:
    """A read-only connection to the outbox at path: `current` while it still reads the file there, else a
    new one (the agent moved a damaged outbox aside and started a fresh one)."""
    if current is not None:
        if not current.replaced():
            return current
        current.close()
    return Outbox(path, readonly=True)


def _blob(data: bytes | str | float | None) -> bytes:
    """A stored record's bytes; a row someone rewrote by hand may hold TEXT (doctor must still read it), and a
    damaged one any type (an INTEGER is no length: bytes(10**12) would take a terabyte)."""
    if isinstance(data, bytes):
        return data
    return (data if isinstance(data, str) else str(data)).encode("utf-8")


__all__ = ["Outbox", "Stats", "gap_body", "is_damage", "read_head_sidecar", "reader", "seq_ranges"]
