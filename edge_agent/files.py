"""Durable files shared by every layer: atomic writes (write beside, fsync, rename, fsync the folder), and
SQLite files found damaged (checked at open, moved aside, never deleted)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write(path: Path, data: bytes, mode: int | None = None, owner: tuple[int, int] | None = None) -> None:
    """Write to a temp file in the same folder, fsync, rename over the target, fsync the folder.

    `mode` defaults to the target's own; `owner` (uid, gid; -1 keeps either) is given to the file first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
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


def sqlite_uri(path: Path, mode: str) -> str:
    """SQLite's URI for the file at path: `?`, `#` and `%` in a folder's name are data, not URI syntax."""
    return f"file:{urllib.parse.quote(str(path))}?mode={mode}"


def rows_past_damage(conn: sqlite3.Connection, select: str, after: int, upto: int) -> Iterator[tuple[Any, ...]]:
    """The rows of `select` on a damaged file, read past damaged pages. `select` takes (after, upto) and returns
    rows whose first column is an integer key above `after` and at most `upto`, in key order (a table read NOT
    INDEXED: its indexes may be the damage). Where a page cannot be read, reading goes on after the last key
    read, further each time (24 times at most). Each row comes with its key as an int."""
    last, step = after, 1
    for _ in range(24):
        if last >= upto:
            return
        try:
            for row in conn.execute(select, (last, upto)):
                last, step = int(row[0]), 1
                yield (last, *row[1:])
            return
        except (sqlite3.Error, TypeError, ValueError):
            last, step = last + step, step * 2  # past the damaged page, further each time
