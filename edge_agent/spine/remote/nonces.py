"""The replay guard: nonces of accepted commands, kept across restarts until their command has expired."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

# Nonces are kept this long past their command's expiry, in case the device clock steps back.
NONCE_GRACE_S = 24 * 3600
NONCES_DB = "commands.db"


class NonceStore:
    """Nonces of accepted commands in `<state_dir>/commands.db`, so a replay is refused across restarts.

    Every time here comes from the caller's security clock (the one that checks expiry), never
    from time.time() on its own: pruning by another clock than the one that judges expiry lets a
    command outlive its nonce.
    """

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
        return self.conn.execute("DELETE FROM nonces WHERE expires_at < ?", (cutoff,)).rowcount

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM nonces").fetchone()[0])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
