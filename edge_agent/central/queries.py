"""What the central database says: per-device status, anomalies, and record export (JSON lines or CSV)."""

from __future__ import annotations

import csv
import io
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from edge_agent.central.db import Database


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _lag_s(last_seen: float | None, last_ts: str | None) -> float | None:
    """Ingest lag of the newest record: when central stored it minus when the device signed it."""
    if last_seen is None or not last_ts:
        return None
    try:
        t = datetime.fromisoformat(last_ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return round(float(last_seen) - t, 3)


def status(db: Database, device: str | None = None) -> list[dict[str, Any]]:
    """One dict per device: device, site, status, head_seq, verified_through, lag_s, last_seen, anomalies, by_kind."""
    where = " WHERE device = ?" if device else ""
    params: tuple[Any, ...] = (device,) if device else ()
    rows = db.query(
        "SELECT device, site, status, head_seq, verified_through, last_seen, last_ts, received, duplicates,"
        " checkpoint_seq, key_id FROM devices" + where + " ORDER BY device",
        params,
    )
    kinds: dict[str, dict[str, int]] = defaultdict(dict)
    for d, k, n in db.query("SELECT device, kind, COUNT(*) FROM records" + where + " GROUP BY device, kind", params):
        kinds[d][k] = int(n)
    open_: dict[str, int] = defaultdict(int)
    for d, n in db.query(
        "SELECT device, COUNT(*) FROM anomalies WHERE resolved_at IS NULL AND severity = 'fail'"
        + (" AND device = ?" if device else "")
        + " GROUP BY device",
        params,
    ):
        open_[d] = int(n)
    return [
        {
            "device": r[0],
            "site": r[1],
            "status": r[2],
            "head_seq": int(r[3]),
            "verified_through": int(r[4]),
            "lag_s": _lag_s(r[5], r[6]),
            "last_seen": _iso(r[5]),
            "anomalies": open_.get(r[0], 0),
            "by_kind": dict(sorted(kinds.get(r[0], {}).items())),
            "received": int(r[7]),
            "duplicates": int(r[8]),
            "checkpoint_seq": None if r[9] is None else int(r[9]),
            "key_id": r[10],
        }
        for r in rows
    ]


def anomalies(
    db: Database,
    *,
    device: str | None = None,
    kind: str | None = None,
    open_only: bool = False,
    since: float | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    conds: list[str] = []
    params: list[Any] = []
    if device:
        conds.append("device = ?")
        params.append(device)
    if kind:
        conds.append("kind = ?")
        params.append(kind)
    if open_only:
        conds.append("resolved_at IS NULL")
    if since is not None:
        conds.append("detected_at >= ?")
        params.append(since)
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    rows = db.query(
        "SELECT id, device, kind, seq, severity, detected_at, last_at, count, message, evidence, resolved_at"
        " FROM anomalies" + where + " ORDER BY detected_at, id LIMIT ?",
        [*params, limit],
    )
    return [
        {
            "id": int(r[0]),
            "device": r[1],
            "kind": r[2],
            "seq": None if r[3] is None else int(r[3]),
            "severity": r[4],
            "detected_at": _iso(r[5]),
            "last_at": _iso(r[6]),
            "count": int(r[7]),
            "message": r[8],
            "evidence": json.loads(r[9]),
            "resolved_at": _iso(r[10]),
        }
        for r in rows
    ]


def parse_since(text: str) -> float:
    """`--since`: ISO 8601 (2026-03-27, 2026-03-27T09:00:00Z) or a duration back from now (90s, 15m, 2h, 7d)."""
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected an ISO 8601 time (2026-03-27T09:00:00Z) or a duration (15m, 2h, 7d)"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def export_records(
    db: Database,
    *,
    device: str | None = None,
    kind: str | None = None,
    since: float | None = None,
    batch: int = 5000,
) -> Iterator[tuple[str, int, str, str, float, int, str]]:
    """(device, seq, kind, ts, ingested_at, verified, record JSON) in (device, seq) order, read in pages."""
    conds: list[str] = []
    params: list[Any] = []
    if device:
        conds.append("device = ?")
        params.append(device)
    if kind:
        conds.append("kind = ?")
        params.append(kind)
    if since is not None:
        conds.append("ingested_at >= ?")
        params.append(since)
    last: tuple[str, int] | None = None
    while True:
        page_conds = list(conds)
        page_params = list(params)
        if last is not None:
            page_conds.append("(device > ? OR (device = ? AND seq > ?))")
            page_params += [last[0], last[0], last[1]]
        where = (" WHERE " + " AND ".join(page_conds)) if page_conds else ""
        rows = db.query(
            "SELECT device, seq, kind, ts, ingested_at, verified, record FROM records"
            + where
            + " ORDER BY device, seq LIMIT ?",
            [*page_params, batch],
        )
        for r in rows:
            yield (r[0], int(r[1]), r[2], r[3], float(r[4]), int(r[5]), r[6])
        if len(rows) < batch:
            return
        last = (rows[-1][0], int(rows[-1][1]))


def write_export(rows: Iterator[tuple[str, int, str, str, float, int, str]], fmt: str, out: io.TextIOBase | Any) -> int:
    """JSON lines (the records exactly as received) or CSV (envelope columns + the record); returns the count."""
    n = 0
    if fmt == "jsonl":
        for r in rows:
            # A signed record may have been sent pretty-printed; one record must stay one line.
            out.write((r[6] if "\n" not in r[6] else json.dumps(json.loads(r[6]), ensure_ascii=False)) + "\n")
            n += 1
        return n
    w = csv.writer(out)
    w.writerow(["device", "seq", "kind", "ts", "ingested_at", "verified", "record"])
    for r in rows:
        w.writerow([r[0], r[1], r[2], r[3], _iso(r[4]), r[5], r[6]])
        n += 1
    return n
