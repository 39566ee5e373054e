"""Durable files shared by every layer: atomic writes (write beside, fsync, rename, fsync the folder), and
SQLite files found damaged (checked at open, moved aside, never deleted)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write to a temp file in the same folder, fsync, rename over the target, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        elif path.exists():
            os.fchmod(fd, path.stat().st_mode & 0o777)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def move_aside(path: Path, tag: str = "corrupt") -> Path:
    """Move a damaged SQLite file, with its -wal and -shm, to `<name>.<tag>-<UTC time>` beside it (never over an
    earlier one: -2, -3 within one second) and return the new path. Nothing is deleted."""
    from datetime import UTC, datetime

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    moved = path.with_name(f"{path.name}.{tag}-{stamp}")
    n = 1
    while moved.exists():
        n += 1
        moved = path.with_name(f"{path.name}.{tag}-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(moved) + suffix))
    return moved


class QuickCheckFailed(sqlite3.DatabaseError):
    """PRAGMA quick_check found the file damaged; the message is what it found."""


def sqlite_damaged(exc: BaseException) -> bool:
    """The SQLite file itself is damaged: SQLITE_CORRUPT or SQLITE_NOTADB (extended codes too), or its quick
    check failed. Not a lock, a full disk, an I/O error or a closed connection."""
    if isinstance(exc, QuickCheckFailed):
        return True
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def quick_check_or_raise(conn: sqlite3.Connection) -> None:
    """PRAGMA quick_check on a file just opened; QuickCheckFailed naming what it found when not "ok"."""
    found = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
    if found != ["ok"]:
        raise QuickCheckFailed("; ".join(found)[:200])
