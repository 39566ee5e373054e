"""Gap records' bodies: which seqs a device declares dropped, kept small whatever it declares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Limits that keep a gap record small whatever it declares: its `ranges` are exact up to
# GAP_RANGES_MAX (then neighbours are joined, declaring a few kept records too, which is harmless),
# and `hashes` keeps each range's last seq (what the next record links to) plus the newest ones.
GAP_RANGES_MAX = 64
GAP_HASHES_MAX = 256


def gap_body(
    reason: str,
    evicted: Sequence[tuple[int, str, str]],
    merged: Sequence[dict[str, Any]] = (),
    *,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    """Signed account of dropped records: every dropped seq in `ranges`, hashes where they matter.

    `merged` are the bodies (with their own seq, hash) of older undelivered gap records this one
    replaces, so evictions never pile up gap records: one gap declares them all.
    """
    seqs = [s for s, _, _ in evicted]
    hashes: dict[int, tuple[str, str]] = {s: (h, k) for s, h, k in evicted}
    ranges = seq_ranges(seqs)
    count = len(evicted)
    for old in merged:
        seqs_old = [old["_seq"]]
        hashes[old["_seq"]] = (old["_hash"], "gap")
        ranges = ranges + seq_ranges(seqs_old)
        for r in old.get("ranges") or []:
            if isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r):
                ranges.append([r[0], r[1]])
        for item in old.get("hashes") or []:
            if isinstance(item, list) and len(item) >= 2 and isinstance(item[0], int):
                hashes.setdefault(item[0], (str(item[1]), str(item[2]) if len(item) > 2 else ""))
        count += 1 + int(old.get("count") or 0)
    # A gap may take an eighth of the outbox's bound (about 110 bytes per range with its hash).
    share = GAP_HASHES_MAX if max_bytes is None else max(2, max_bytes // 8 // 110)
    ranges = _coarsen(_union(ranges), min(GAP_RANGES_MAX, share))
    ends = {b for _, b in ranges}
    keep = sorted(s for s in hashes if s in ends)
    newest = sorted((s for s in hashes if s not in ends), reverse=True)[
        : max(0, min(GAP_HASHES_MAX, share) - len(keep))
    ]
    return {
        "reason": reason,
        "count": count,
        "ranges": ranges,
        "hashes": [[s, *hashes[s]] for s in sorted([*keep, *newest])],
    }


def _union(ranges: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _coarsen(ranges: list[list[int]], limit: int) -> list[list[int]]:
    """At most `limit` ranges: join neighbours across the smallest distances first."""
    if len(ranges) <= limit:
        return ranges
    distances = sorted(ranges[i + 1][0] - ranges[i][1] for i in range(len(ranges) - 1))
    cut = distances[len(ranges) - limit - 1]  # join every distance up to this one
    out = [list(ranges[0])]
    for a, b in ranges[1:]:
        if a - out[-1][1] <= cut:
            out[-1][1] = b
        else:
            out.append([a, b])
    return out


def seq_ranges(seqs: Sequence[int]) -> list[list[int]]:
    """[3, 4, 5, 9] -> [[3, 5], [9, 9]]."""
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def ranges_text(evicted: Sequence[tuple[int, str, str]]) -> str:
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in seq_ranges([s for s, _, _ in evicted]))


def highest(a: tuple[int, str] | None, b: tuple[int, str] | None) -> tuple[int, str] | None:
    known = [h for h in (a, b) if h is not None]
    return max(known) if known else None


def loss_gap(
    reason: str, detail: str, head: tuple[int, str] | None, delivered: int, kept: Sequence[int] = ()
) -> dict[str, Any]:
    """A gap body for records lost with the file: at least last_delivered+1 .. the highest seq made, but for
    the undelivered records `kept` (read whole from a damaged file and queued again, ascending)."""
    last = head[0] if head else 0
    lo = min(delivered, last) + 1
    ranges = []
    for s in kept:
        if lo <= s <= last:
            if s > lo:
                ranges.append([lo, s - 1])
            lo = s + 1
    if lo <= last:
        ranges.append([lo, last])
    return {
        "reason": reason,
        "detail": detail,
        "last_known_seq": last,
        "count": sum(b - a + 1 for a, b in ranges),
        "ranges": ranges,
        "hashes": [],
    }


def read_gap(body: Any, gap_seq: int) -> tuple[dict[int, tuple[str, str | None]], list[tuple[int, int]]] | None:
    """What a signed gap declares: {seq: (hash, kind)} and the dropped seq ranges, all below `gap_seq`.

    `ranges` is the authority on what was dropped; `hashes` gives the hash of some of those seqs
    (each range's last, the newest ones) so a verifier can link across them. None when the body is
    malformed (`hashes` or `ranges` not lists). Used by `verify` and by central ingest alike.
    """
    if not isinstance(body, dict):
        return None
    hashes, ranges = body.get("hashes", []), body.get("ranges", [])
    if not isinstance(hashes, list) or not isinstance(ranges, list):
        return None
    items: dict[int, tuple[str, str | None]] = {}
    for item in hashes:
        if isinstance(item, list) and len(item) >= 2 and _is_seq(item[0]) and item[0] < gap_seq:
            kind = item[2] if len(item) > 2 and isinstance(item[2], str) else None
            items[item[0]] = (str(item[1]), kind)
    declared = [
        (r[0], r[1])
        for r in ranges
        if isinstance(r, list) and len(r) == 2 and _is_seq(r[0]) and _is_seq(r[1]) and r[0] <= r[1] < gap_seq
    ]
    return items, declared


def _is_seq(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1
