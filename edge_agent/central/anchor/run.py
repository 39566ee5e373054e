"""One anchor run: finish what an earlier run left, then batch the newly verified records, one transaction each.

Order of a batch's life, each step durable before the next:
  1. its leaves and root are written to the database (status pending);
  2. its transaction is sent (status sent, tx hash kept);
  3. its receipt is seen (status anchored, tx hash, block number and block hash kept).
A run killed anywhere leaves a batch at 1 or 2. The next run first asks the contract whether the
batch id is there (the id is a hash of the batch's root, so it is the same on every try); if it
is, it reads the transaction from the contract's Anchored event instead of sending again. If not,
it sends again: the contract refuses a batch id or a device seq it has already seen, so a second
copy mined late cannot anchor anything twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from edge_agent.central.anchor.chain import (
    AnchorContract,
    AnchorError,
    ContractRefused,
    DeviceRange,
    batch_id_for,
    device_key,
)
from edge_agent.central.anchor.merkle import MerkleTree
from edge_agent.central.anchor.store import (
    ANCHORED,
    PENDING,
    Candidate,
    StoredBatch,
    candidates,
    mark_anchored,
    mark_error,
    mark_sent,
    next_seqs,
    unfinished_batches,
    write_batch,
)
from edge_agent.central.db import Database

log = logging.getLogger(__name__)

MAX_RANGES = 256  # the contract's MAX_RANGES: devices per batch


@dataclass(frozen=True, slots=True)
class AnchorSettings:
    max_records: int = 1_000_000  # leaves per batch (one transaction)
    max_devices: int = MAX_RANGES
    receipt_timeout_s: float = 120.0  # wait this long for a receipt, then leave the batch for the next run


@dataclass
class RunReport:
    anchored: list[str] = field(default_factory=list)  # batch ids seen mined in this run
    recovered: list[str] = field(default_factory=list)  # of those, found on chain without sending again
    endorsed: list[str] = field(default_factory=list)  # another member's batch that this member endorsed
    waiting: list[str] = field(default_factory=list)  # sent, not yet mined: the next run looks again
    failed: list[str] = field(default_factory=list)  # mined but reverted, or refused: kept, retried
    records: int = 0  # leaves in the batches anchored in this run
    skipped_late: int = 0  # verified after their device was anchored past them

    @property
    def complete(self) -> bool:
        return not self.waiting and not self.failed


def ranges_of(leaves: Iterable[Candidate]) -> list[DeviceRange]:
    """Per device (in leaf order) the first and last seq a batch holds."""
    out: list[DeviceRange] = []
    device, first, last = None, 0, 0
    for c in leaves:
        if c.device != device:
            if device is not None:
                out.append(DeviceRange(device, first, last))
            device, first = c.device, c.seq
        last = c.seq
    if device is not None:
        out.append(DeviceRange(device, first, last))
    return out


def plan(
    cands: Iterable[Candidate], next_seq: dict[str, int], s: AnchorSettings, report: RunReport
) -> Iterator[list[Candidate]]:
    """Cut the (device, seq)-ordered candidates into batches of at most max_records leaves and max_devices devices."""
    batch: list[Candidate] = []
    devices = 0
    last_device = None
    for c in cands:
        if c.seq < next_seq.get(c.device, 1):
            # The contract would refuse it: its device is anchored past it already.
            report.skipped_late += 1
            continue
        new_device = c.device != last_device
        if batch and (len(batch) >= s.max_records or (new_device and devices >= s.max_devices)):
            yield batch
            batch, devices = [], 0
            new_device = True
        if new_device:
            devices += 1
            last_device = c.device
        batch.append(c)
    if batch:
        yield batch


def anchor_once(db: Database, contract: AnchorContract, s: AnchorSettings | None = None) -> RunReport:
    """Finish unfinished batches, then anchor every verified record not yet in a batch."""
    s = s or AnchorSettings()
    report = RunReport()
    for b in unfinished_batches(db, contract.address):
        _finish(db, contract, b, s, report)
    chain_id = int(contract.w3.eth.chain_id)
    for leaves in plan(candidates(db), next_seqs(db), s, report):
        tree = MerkleTree.from_record_hashes([c.hash for c in leaves])
        root = tree.root.hex()
        ranges = ranges_of(leaves)
        bid = batch_id_for(tree.root).hex()
        write_batch(
            db, batch_id=bid, root=root, leaves=leaves, ranges=ranges, contract=contract.address, chain_id=chain_id
        )
        log.info("batch %s: %d record(s) of %d device(s), root %s", bid[:16], len(leaves), len(ranges), root[:16])
        stored = StoredBatch(
            bid, root, len(leaves), tuple(ranges), contract.address, chain_id, PENDING, 0, None, None, None
        )
        _finish(db, contract, stored, s, report)
    if report.skipped_late:
        log.warning(
            "%d verified record(s) not anchored: their device was already anchored past their seq "
            "(they were verified late); they stay in the database unanchored",
            report.skipped_late,
        )
    return report


def _record_found(db: Database, contract: AnchorContract, b: StoredBatch, report: RunReport) -> bool:
    bid = bytes.fromhex(b.batch_id)
    found = contract.find(bid)
    if found is None:
        return False
    if found.root.hex() != b.root:
        raise AnchorError(
            f"batch {b.batch_id}: the contract holds root {found.root.hex()} for it, this database has {b.root}"
        )
    me = contract.account.address if contract.account else None
    if me is not None and found.submitter != me and not contract.contract.functions.endorsed(bid, me).call():
        # Another member anchored the same content first: our submission is an endorsement (k of n).
        tx = contract.send_endorse(bid, found.root)
        receipt = contract.wait(tx, 120.0)
        if receipt is not None and receipt["status"] == 1:
            report.endorsed.append(b.batch_id)
            log.info("batch %s: anchored by member %s; endorsed it (tx %s)", b.batch_id[:16], found.submitter, tx)
    mark_anchored(db, b.batch_id, found.tx_hash, found.block_number, found.block_hash)
    report.anchored.append(b.batch_id)
    report.records += b.record_count
    log.info(
        "batch %s anchored: tx %s, block %d (%s), %d record(s)",
        b.batch_id[:16],
        found.tx_hash,
        found.block_number,
        found.block_hash,
        b.record_count,
    )
    return True


def _finish(  # noqa: PLR0911 - each return is one outcome of the batch, logged where it happens
    db: Database, contract: AnchorContract, b: StoredBatch, s: AnchorSettings, report: RunReport
) -> None:
    if b.status == ANCHORED:
        return
    if _record_found(db, contract, b, report):
        # On chain before this run sent anything: an earlier run was stopped after sending, or another
        # member anchored the same content.
        report.recovered.append(b.batch_id)
        return
    if b.tx_hash is not None:
        receipt = contract.wait(b.tx_hash, 0.5)
        if receipt is None and _still_known(contract, b.tx_hash):
            log.info("batch %s: tx %s still not mined; waiting for it", b.batch_id[:16], b.tx_hash)
            receipt = contract.wait(b.tx_hash, s.receipt_timeout_s)
            if receipt is None:
                report.waiting.append(b.batch_id)
                return
        if receipt is not None and receipt["status"] == 1 and _record_found(db, contract, b, report):
            return
    try:
        tx = contract.send_anchor(bytes.fromhex(b.batch_id), bytes.fromhex(b.root), b.record_count, list(b.ranges))
    except ContractRefused as exc:
        mark_error(db, b.batch_id, str(exc))
        hint = ""
        if exc.reason == "range overlaps an earlier anchor":
            # Only an anchor by someone else can have covered these seqs: this database did not.
            hint = (
                " (another member has anchored these devices' records: in a consortium one member runs "
                "`central anchor` and the others `central anchor endorse`)"
            )
        log.error(
            "batch %s not sent: %s%s; it stays pending and is tried again on the next run", b.batch_id[:16], exc, hint
        )
        report.failed.append(b.batch_id)
        return
    mark_sent(db, b.batch_id, tx)
    log.info("batch %s: sent tx %s", b.batch_id[:16], tx)
    receipt = contract.wait(tx, s.receipt_timeout_s)
    if receipt is None:
        log.warning(
            "batch %s: tx %s not mined within %.0f s; the next run checks it and sends again if it was dropped",
            b.batch_id[:16],
            tx,
            s.receipt_timeout_s,
        )
        report.waiting.append(b.batch_id)
        return
    if receipt["status"] != 1:
        mark_error(db, b.batch_id, f"tx {tx} reverted in block {receipt['blockNumber']}")
        log.error("batch %s: tx %s reverted; the next run tries again", b.batch_id[:16], tx)
        report.failed.append(b.batch_id)
        return
    mark_anchored(
        db, b.batch_id, tx, int(receipt["blockNumber"]), "0x" + bytes(receipt["blockHash"]).hex().removeprefix("0x")
    )
    report.anchored.append(b.batch_id)
    report.records += b.record_count
    log.info(
        "batch %s anchored: tx %s, block %d, %d record(s)", b.batch_id[:16], tx, receipt["blockNumber"], b.record_count
    )


def _still_known(contract: AnchorContract, tx_hash: str) -> bool:
    """Whether the node still has the transaction (pending or mined); a dropped one is sent again."""
    from web3.exceptions import TransactionNotFound

    try:
        contract.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
    except TransactionNotFound:
        return False
    return True


# ---------------------------------------------------------------- endorsing another member's batches


@dataclass
class EndorseReport:
    endorsed: list[str] = field(default_factory=list)  # batches this member checked and endorsed in this run
    recorded: list[str] = field(default_factory=list)  # checked and stored here (endorsed now or before)
    not_yet: list[str] = field(default_factory=list)  # this database lacks some of the batch's records so far
    mismatched: list[str] = field(default_factory=list)  # all records here, and they give another root

    @property
    def complete(self) -> bool:
        return not self.mismatched


def endorse_once(db: Database, contract: AnchorContract, *, from_block: int = 0) -> EndorseReport:
    """Check every batch other members anchored against this member's own verified records; endorse those that match.

    For each Anchored event not yet stored here, the batch's device ranges are read from its
    transaction, the same verified records are taken from this database, and the tree is rebuilt:
    only an identical root is endorsed. The batch is then stored here as anchored, so this member
    can also prove its records. A batch whose records are not all verified here yet is tried again
    on the next run; one whose records give another root is reported and never endorsed.
    """
    report = EndorseReport()
    if contract.account is None:
        raise AnchorError("endorsing needs a member key (--key)")
    known = {str(b) for (b,) in db.query("SELECT batch_id FROM anchor_batches WHERE status = ?", (ANCHORED,))}
    by_key = {device_key(str(d)): str(d) for (d,) in db.query("SELECT device FROM devices")}
    chain_id = int(contract.w3.eth.chain_id)
    for ev in contract.contract.events.Anchored.get_logs(from_block=from_block):
        bid = bytes(ev["args"]["batch_id"])
        if bid.hex() in known:
            continue
        tx = contract.w3.eth.get_transaction(ev["transactionHash"])
        _fn, params = contract.contract.decode_function_input(tx["input"])
        ranges = []
        for r in params["ranges"]:
            # web3 decodes a struct as a dict (or, in older releases, a tuple)
            dkey, first, last = (r["device"], r["first_seq"], r["last_seq"]) if isinstance(r, dict) else r
            device = by_key.get(bytes(dkey))
            if device is None:
                log.info("batch %s names a device this registry does not know; not endorsed yet", bid.hex()[:16])
                break
            ranges.append(DeviceRange(device, int(first), int(last)))
        else:
            leaves = [
                Candidate(str(d), int(q), str(h))
                for r in ranges
                for d, q, h in db.query(
                    "SELECT device, seq, hash FROM records WHERE device = ? AND seq BETWEEN ? AND ? AND verified = 1"
                    " ORDER BY seq",
                    (r.device, r.first_seq, r.last_seq),
                )
            ]
            if len(leaves) == int(params["record_count"]):
                _endorse_batch(db, contract, ev, leaves=leaves, ranges=ranges, chain_id=chain_id, report=report)
                continue
        report.not_yet.append(bid.hex())
    return report


def _endorse_batch(
    db: Database,
    contract: AnchorContract,
    ev: Any,
    *,
    leaves: list[Candidate],
    ranges: list[DeviceRange],
    chain_id: int,
    report: EndorseReport,
) -> None:
    bid, root = bytes(ev["args"]["batch_id"]), bytes(ev["args"]["root"])
    me = contract.account.address if contract.account else ""
    ours = MerkleTree.from_record_hashes([c.hash for c in leaves]).root
    if ours != root:
        log.error(
            "batch %s anchored by %s has root %s, but this database's verified records for its ranges give %s; "
            "not endorsed",
            bid.hex()[:16],
            ev["args"]["member"],
            root.hex(),
            ours.hex(),
        )
        report.mismatched.append(bid.hex())
        return
    if not contract.contract.functions.endorsed(bid, me).call():
        receipt = contract.wait(contract.send_endorse(bid, root), 120.0)
        if receipt is None or receipt["status"] != 1:
            raise AnchorError(f"batch {bid.hex()[:16]}: the endorsement was not mined; the next run tries again")
        report.endorsed.append(bid.hex())
    write_batch(
        db,
        batch_id=bid.hex(),
        root=root.hex(),
        leaves=leaves,
        ranges=ranges,
        contract=contract.address,
        chain_id=chain_id,
    )
    tx_hash = "0x" + bytes(ev["transactionHash"]).hex().removeprefix("0x")
    mark_anchored(
        db, bid.hex(), tx_hash, int(ev["blockNumber"]), "0x" + bytes(ev["blockHash"]).hex().removeprefix("0x")
    )
    report.recorded.append(bid.hex())
    log.info(
        "batch %s of %s: root checked against %d record(s) here; endorsed and stored",
        bid.hex()[:16],
        ev["args"]["member"],
        len(leaves),
    )
