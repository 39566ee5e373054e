"""`<outbox>.head`: the highest seq ever made and its hash, fsynced after every commit, outside the database."""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from pathlib import Path


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".head")


# The sidecar holds the highest (seq, hash) ever committed, in two fixed slots written in turn
# and each checked by a CRC: a torn write spoils at most one, and the other is one batch older.
_SLOT_BYTES = 256


def _slot_bytes(seq: int, h: str) -> bytes:
    text = json.dumps({"seq": seq, "hash": h}, separators=(",", ":"))
    line = f"{text} {zlib.crc32(text.encode()):08x}\n".encode()
    return line.ljust(_SLOT_BYTES, b" ")


def _parse_slot(raw: bytes) -> tuple[int, str] | None:
    with contextlib.suppress(ValueError, KeyError, TypeError, UnicodeDecodeError):
        text, crc = raw.decode("ascii").strip().rsplit(" ", 1)
        if int(crc, 16) != zlib.crc32(text.encode()):
            return None
        d = json.loads(text)
        return int(d["seq"]), str(d["hash"])
    return None


class HeadSidecar:
    """`<outbox>.head`: the highest seq ever made and its hash, fsynced after every commit.

    It survives the outbox being zeroed, deleted or losing its WAL tail, so a device never
    makes a seq twice: the next record continues after it, behind a signed gap(outbox_lost).
    """

    def __init__(self, db_path: Path) -> None:
        self.path = _sidecar(db_path)
        self._fd: int | None = None
        self._next_slot = 0

    def write(self, seq: int, h: str) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            best = read_head_sidecar(self.path.with_name(self.path.name.removesuffix(".head")))
            self._next_slot = 0 if best is None else 1  # never overwrite the only good slot first
        os.pwrite(self._fd, _slot_bytes(seq, h), self._next_slot * _SLOT_BYTES)
        os.fdatasync(self._fd)
        self._next_slot ^= 1

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def read_head_sidecar(db_path: Path) -> tuple[int, str] | None:
    """The highest (seq, hash) the sidecar holds, or None when it is missing or unreadable."""
    try:
        raw = _sidecar(db_path).read_bytes()
    except OSError:
        return None
    slots = [_parse_slot(raw[i : i + _SLOT_BYTES]) for i in range(0, min(len(raw), 2 * _SLOT_BYTES), _SLOT_BYTES)]
    good = [s for s in slots if s is not None]
    if not good:
        # The JSON file of older versions.
        with contextlib.suppress(ValueError, KeyError, TypeError):
            d = json.loads(raw)
            return int(d["seq"]), str(d["hash"])
        return None
    return max(good)
