"""The replay guard: nonces of accepted commands, kept across restarts until their command has expired."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.files import move_aside, quick_check_or_raise, sqlite_damaged
from edge_agent.spine.clock import format_ts

log = logging.getLogger(__name__)

# Nonces are kept this long past their command's expiry, in case the device clock steps back.
NONCE_GRACE_S = 24 * 3600
NONCES_DB = "commands.db"


class NonceStore:
    """Nonces of accepted commands in `<state_dir>/commands.db`, so a replay is refused across restarts.

    Every time here comes from the caller's security clock (the one that checks expiry), never
    from time.time() on its own: pruning by another clock than the one that judges expiry lets a
    command outlive its nonce.
    """

    def __init__(self, path: Path, *, now: datetime | None = None) -> None:
        """Open (creating) the store. A store starts with a `floor`, `now` on the security clock: every command
        issued before it is refused as a possible replay, since the nonces of any earlier store are not in it.
        That holds for a file deleted as for one found damaged, which is moved aside (kept) first. Commands
        live at most 7 days, so that costs nothing after a week, and central signs a fresh one meanwhile."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        floor = now or datetime.now(UTC)
        try:
            self.conn = self._open()
        except sqlite3.DatabaseError as exc:
            if not sqlite_damaged(exc):
                raise
            moved = move_aside(path)
            self.conn = self._open()
            self._set_floor(floor)
            log.critical(
                "replay guard %s was damaged (%s); moved it aside to %s and started a fresh one. Commands issued "
                "before %s are refused as possible replays (their nonces were lost): central must sign them again",
                path,
                exc,
                moved.name,
                format_ts(floor),
            )
        else:
            if self._created:
                self._set_floor(floor)
                log.info("replay guard %s started: commands issued before %s are refused", path, format_ts(floor))
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'floor'").fetchone()
        self.floor: datetime | None = datetime.fromtimestamp(float(row[0]), UTC) if row else None

    @property
    def forgotten_before(self) -> datetime | None:
        """Nonces of commands that expired before this time may have been pruned: such a command is refused
        whatever the clock now says (a clock set back, by a spoofed GPS on an unsynced device, would revive it)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'forgotten_before'").fetchone()
        return datetime.fromtimestamp(float(row[0]), UTC) if row else None

    def beyond_memory(self, issued_at: datetime, expires_at: datetime, now: datetime) -> str | None:
        """Why a command is older than this store can vouch for (its nonce may have been used and not kept), or
        None: issued before the store began, or expired before the nonces it has pruned."""
        if self.floor is not None and issued_at < self.floor:
            return (
                f"issued at {format_ts(issued_at)}, before the replay guard {NONCES_DB} was started at "
                f"{format_ts(self.floor)} (the nonces of commands before it are not kept): sign it again"
            )
        forgotten = self.forgotten_before
        if forgotten is not None and expires_at < forgotten:
            return (
                f"expired at {format_ts(expires_at)}, before {format_ts(forgotten)}: the replay guard no "
                f"longer keeps the nonces of commands that old (device time {format_ts(now)} is behind?)"
            )
        return None

    def _set_floor(self, floor: datetime) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('floor', ?)", (floor.timestamp(),))

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=1.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            quick_check_or_raise(conn)
            # A file with no nonces table is new, or was emptied: either way its nonces are not here.
            self._created = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'nonces'").fetchone() is None
            conn.execute(
                "CREATE TABLE IF NOT EXISTS nonces (key_id TEXT NOT NULL, nonce TEXT NOT NULL, "
                "expires_at REAL NOT NULL, seen_at REAL NOT NULL, name TEXT NOT NULL, PRIMARY KEY (key_id, nonce))"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL)")
        except BaseException:
            conn.close()
            raise
        return conn

    def __enter__(self) -> NonceStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def claim(self, key_id: str, nonce: str, expires_at: datetime, name: str, *, now: datetime | None = None) -> bool:
        """Record a nonce; False when it was seen before (a replay)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO nonces(key_id, nonce, expires_at, seen_at, name) VALUES (?, ?, ?, ?, ?)",
            (key_id, nonce, expires_at.timestamp(), (now or datetime.now(UTC)).timestamp(), name),
        )
        return cur.rowcount == 1

    def prune(self, now: datetime) -> int:
        """Forget nonces of commands that expired more than NONCE_GRACE_S before `now` (the expiry clock)."""
        cutoff = now.timestamp() - NONCE_GRACE_S
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            n = int(self.conn.execute("DELETE FROM nonces WHERE expires_at < ?", (cutoff,)).rowcount)
            if n:
                self.conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('forgotten_before', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
                    (cutoff,),
                )
        return n

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM nonces").fetchone()[0])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
