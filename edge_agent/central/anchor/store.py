"""The anchor's tables in the central database: batches, which record is which leaf of which batch, per-device progress.

A batch is written (status `pending`, with all its leaves) in one transaction before its
transaction is sent, so whatever happens after that, a re-run finds it and either learns from the
chain that it was anchored or sends it again. A record is a leaf of at most one batch: the leaf
table's primary key is the record's (device, seq).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import edge_agent.central.schema  # noqa: F401 - the central tables register first; ours follow them
from edge_agent.central.anchor.chain import DeviceRange
from edge_agent.central.db import POSTGRESQL, Database, Migration, register_migrations

PENDING = "pending"  # written, not yet known to be sent
SENT = "sent"  # a transaction was sent; not yet seen mined
ANCHORED = "anchored"  # on chain; tx hash, block number and block hash stored

_TABLES = [
    """CREATE TABLE IF NOT EXISTS anchor_batches (
        batch_id TEXT PRIMARY KEY,            -- 64 hex, SHA-256 over the batch's content (see batch_id_for)
        root TEXT NOT NULL,                   -- RFC 9162 Merkle root, 64 hex
        record_count BIGINT NOT NULL,
        ranges TEXT NOT NULL,                 -- JSON [[device, first_seq, last_seq], ...] as sent to the contract
        contract TEXT NOT NULL,               -- checksummed address the batch is for
        chain_id BIGINT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'anchored')),
        created_at DOUBLE PRECISION NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        tx_hash TEXT,                         -- the latest transaction sent for it
        sent_at DOUBLE PRECISION,
        last_error TEXT,
        block_number BIGINT,
        block_hash TEXT,
        anchored_at DOUBLE PRECISION
    )""",
    "CREATE INDEX IF NOT EXISTS anchor_batches_status ON anchor_batches (status, created_at)",
    """CREATE TABLE IF NOT EXISTS anchor_leaves (
        device TEXT NOT NULL,
        seq BIGINT NOT NULL,
        batch_id TEXT NOT NULL REFERENCES anchor_batches (batch_id),
        leaf_index BIGINT NOT NULL,
        hash TEXT NOT NULL,                   -- the record hash the leaf was made from
        PRIMARY KEY (device, seq)
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS anchor_leaves_batch ON anchor_leaves (batch_id, leaf_index)",
    # Mirrors the contract's next_seq: the first seq of each device no batch covers yet.
    """CREATE TABLE IF NOT EXISTS anchor_devices (
        device TEXT PRIMARY KEY,
        next_seq BIGINT NOT NULL
    )""",
    # The seed's block_hash, per record: what a BI tool or an auditor joins to.
    """CREATE VIEW record_anchors AS SELECT
        l.device, l.seq, l.batch_id, l.leaf_index, b.root, b.status, b.contract, b.chain_id,
        b.tx_hash, b.block_number, b.block_hash
    FROM anchor_leaves l JOIN anchor_batches b ON b.batch_id = l.batch_id""",
]

register_migrations("anchor", [Migration(1, "anchor batches, leaves, device progress, record_anchors view", _TABLES)])


@dataclass(frozen=True, slots=True)
class Candidate:
    device: str
    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class StoredBatch:
    batch_id: str
    root: str
    record_count: int
    ranges: tuple[DeviceRange, ...]
    contract: str
    chain_id: int
    status: str
    attempts: int
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None


_BATCH_COLS = (
    "batch_id, root, record_count, ranges, contract, chain_id, status, attempts, tx_hash, block_number, block_hash"
)


def _batch(row: Sequence[object]) -> StoredBatch:
    ranges = tuple(DeviceRange(str(d), int(a), int(b)) for d, a, b in json.loads(str(row[3])))
    return StoredBatch(
        batch_id=str(row[0]),
        root=str(row[1]),
        record_count=int(row[2]),  # type: ignore[call-overload]
        ranges=ranges,
        contract=str(row[4]),
        chain_id=int(row[5]),  # type: ignore[call-overload]
        status=str(row[6]),
        attempts=int(row[7]),  # type: ignore[call-overload]
        tx_hash=None if row[8] is None else str(row[8]),
        block_number=None if row[9] is None else int(row[9]),  # type: ignore[call-overload]
        block_hash=None if row[10] is None else str(row[10]),
    )


def unfinished_batches(db: Database, contract: str) -> list[StoredBatch]:
    """Batches written or sent for this contract and not yet seen on chain, oldest first."""
    rows = db.query(
        f"SELECT {_BATCH_COLS} FROM anchor_batches WHERE contract = ? AND status <> ? ORDER BY created_at, batch_id",  # noqa: S608
        (contract, ANCHORED),
    )
    return [_batch(r) for r in rows]


def get_batch(db: Database, batch_id: str) -> StoredBatch | None:
    row = db.query_one(f"SELECT {_BATCH_COLS} FROM anchor_batches WHERE batch_id = ?", (batch_id,))  # noqa: S608
    return _batch(row) if row else None


_CANDIDATES = (
    "SELECT r.device, r.seq, r.hash FROM records r WHERE r.verified = 1 AND NOT EXISTS "
    "(SELECT 1 FROM anchor_leaves l WHERE l.device = r.device AND l.seq = r.seq)"
)


def candidates(db: Database) -> Iterator[Candidate]:
    """Verified records in no batch yet, by device then seq (the order leaves take)."""
    # Code-point order on both dialects (PostgreSQL's default collation follows the locale), so
    # members running the same records build the same batches.
    collate = ' COLLATE "C"' if db.dialect == POSTGRESQL else ""
    # S608: only the constant collation is spliced in.
    sql = f"{_CANDIDATES} ORDER BY r.device{collate}, r.seq"
    cur = db.execute(sql)
    while True:
        rows = cur.fetchmany(10000)
        if not rows:
            return
        for device, seq, h in rows:
            yield Candidate(str(device), int(seq), str(h))


def next_seqs(db: Database) -> dict[str, int]:
    return {str(d): int(n) for d, n in db.query("SELECT device, next_seq FROM anchor_devices")}


def write_batch(
    db: Database,
    *,
    batch_id: str,
    root: str,
    leaves: Sequence[Candidate],
    ranges: Sequence[DeviceRange],
    contract: str,
    chain_id: int,
) -> None:
    """The batch, its leaves and the devices' progress, in one transaction, before anything is sent."""
    now = time.time()
    with db.transaction():
        db.execute(
            "INSERT INTO anchor_batches (batch_id, root, record_count, ranges, contract, chain_id, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                batch_id,
                root,
                len(leaves),
                json.dumps([[r.device, r.first_seq, r.last_seq] for r in ranges]),
                contract,
                chain_id,
                PENDING,
                now,
            ),
        )
        db.insert_many(
            "anchor_leaves",
            ("device", "seq", "batch_id", "leaf_index", "hash"),
            [(c.device, c.seq, batch_id, i, c.hash) for i, c in enumerate(leaves)],
        )
        for r in ranges:
            # Both dialects: an upsert that only ever moves a device forward.
            db.execute(
                "INSERT INTO anchor_devices (device, next_seq) VALUES (?, ?) ON CONFLICT (device) DO UPDATE "
                "SET next_seq = CASE WHEN excluded.next_seq > anchor_devices.next_seq "
                "THEN excluded.next_seq ELSE anchor_devices.next_seq END",
                (r.device, r.last_seq + 1),
            )


def mark_sent(db: Database, batch_id: str, tx_hash: str) -> None:
    with db.transaction():
        db.execute(
            "UPDATE anchor_batches SET status = ?, tx_hash = ?, sent_at = ?, attempts = attempts + 1,"
            " last_error = NULL WHERE batch_id = ? AND status <> ?",
            (SENT, tx_hash, time.time(), batch_id, ANCHORED),
        )


def mark_error(db: Database, batch_id: str, error: str) -> None:
    with db.transaction():
        db.execute("UPDATE anchor_batches SET last_error = ? WHERE batch_id = ?", (error[:500], batch_id))


def mark_anchored(db: Database, batch_id: str, tx_hash: str, block_number: int, block_hash: str) -> None:
    with db.transaction():
        db.execute(
            "UPDATE anchor_batches SET status = ?, tx_hash = ?, block_number = ?, block_hash = ?, anchored_at = ?,"
            " last_error = NULL WHERE batch_id = ?",
            (ANCHORED, tx_hash, block_number, block_hash, time.time(), batch_id),
        )


def batch_leaf_hashes(db: Database, batch_id: str) -> list[str]:
    """The batch's record hashes in leaf order: enough to rebuild its tree."""
    return [
        str(h)
        for (h,) in db.query("SELECT hash FROM anchor_leaves WHERE batch_id = ? ORDER BY leaf_index", (batch_id,))
    ]


def leaf_of(db: Database, device: str, seq: int) -> tuple[str, int] | None:
    """(batch id, leaf index) of a record, or None when no batch holds it."""
    row = db.query_one("SELECT batch_id, leaf_index FROM anchor_leaves WHERE device = ? AND seq = ?", (device, seq))
    return (str(row[0]), int(row[1])) if row else None
