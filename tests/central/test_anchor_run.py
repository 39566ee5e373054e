"""Anchoring a real central database of signed device records on a real EVM, and proving each record's inclusion."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.central.anchor.chain import AnchorContract, batch_id_for, device_key
from edge_agent.central.anchor.proof import ProofNotAvailable, build_proof, verify_proof
from edge_agent.central.anchor.run import AnchorSettings, anchor_once, ranges_of
from edge_agent.central.anchor.store import PENDING, candidates, get_batch, write_batch
from edge_agent.central.db import Database, open_db
from edge_agent.spine.keys import generate_key
from edge_agent.spine.records import GENESIS_PREV
from tests.central.anchor_support import Chain, add_device, add_records, deployed, fill_fleet, new_chain

FLEET = {"truck-01": 40, "truck-02": 25, "bench-7": 1, "sensor-x": 12}


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return new_chain(tmp_path)


@pytest.fixture
def db(sqlite_dsn: str) -> Iterator[Database]:
    import edge_agent.central.anchor.store  # noqa: F401 - registers the anchor tables

    d = open_db(sqlite_dsn)
    yield d
    d.close()


def _head(db: Database, device: str, seq: int) -> str:
    row = db.query_one("SELECT hash FROM records WHERE device = ? AND seq = ?", (device, seq))
    assert row is not None
    return str(row[0])


def _ok(checks: list) -> bool:  # type: ignore[type-arg]
    return all(c.ok for c in checks)


def test_anchor__one_run_anchors_every_verified_record_once(dsn: str, chain: Chain, tmp_path: Path) -> None:
    import edge_agent.central.anchor.store  # noqa: F401

    with open_db(dsn) as db:
        keys = fill_fleet(db, tmp_path / "keys", FLEET)
        add_records(
            db, "truck-02", keys["truck-02"], 26, 3, prev=_head(db, "truck-02", 25), verified=False
        )  # not verified: not anchored
        c = deployed(chain)
        report = anchor_once(db, c)
        assert report.complete and len(report.anchored) == 1 and report.records == sum(FLEET.values())
        rows = db.query(
            "SELECT device, seq, tx_hash, block_number, block_hash, root FROM record_anchors ORDER BY device, seq"
        )
        assert len(rows) == sum(FLEET.values())
        assert len({(r[2], r[3], r[4], r[5]) for r in rows}) == 1  # one transaction for all of them
        tx, block_number, block_hash, root = rows[0][2:]
        receipt = chain.w3.eth.get_transaction_receipt(tx)
        assert receipt["blockNumber"] == block_number and "0x" + bytes(receipt["blockHash"]).hex() == block_hash
        assert c.root_at(bytes.fromhex(get_batch(db, report.anchored[0]).batch_id)) == bytes.fromhex(root)  # type: ignore[union-attr]
        assert c.next_seq("truck-01") == 41 and c.next_seq("truck-02") == 26 and c.next_seq("bench-7") == 2
        # nothing new: nothing sent
        nonce = chain.w3.eth.get_transaction_count(c.account.address)  # type: ignore[union-attr]
        again = anchor_once(db, c)
        assert again.anchored == [] and chain.w3.eth.get_transaction_count(c.account.address) == nonce  # type: ignore[union-attr]
        # more records arrive: the next batch starts where the last one ended
        add_records(db, "truck-01", keys["truck-01"], 41, 5, prev=_head(db, "truck-01", 40))
        nxt = anchor_once(db, c)
        assert nxt.records == 5 and c.next_seq("truck-01") == 46
        assert _ok(verify_proof(build_proof(db, "truck-01", 45), contract=c))
        assert _ok(verify_proof(build_proof(db, "bench-7", 1), contract=c))


def test_anchor__batches_split_by_size_and_devices(db: Database, chain: Chain, tmp_path: Path) -> None:
    fill_fleet(db, tmp_path / "keys", FLEET)
    c = deployed(chain)
    report = anchor_once(db, c, AnchorSettings(max_records=30, max_devices=2))
    sizes = sorted(get_batch(db, b).record_count for b in report.anchored)  # type: ignore[union-attr]
    assert sum(sizes) == 78 and max(sizes) <= 30
    for b in report.anchored:
        batch = get_batch(db, b)
        assert batch is not None and len(batch.ranges) <= 2
    assert c.contract.functions.batch_count().call() == len(report.anchored)


def test_prove__first_middle_last_and_a_batch_of_one(db: Database, chain: Chain, tmp_path: Path) -> None:
    fill_fleet(db, tmp_path / "keys", FLEET)
    c = deployed(chain)
    anchor_once(db, c)
    leaves = db.query("SELECT device, seq FROM anchor_leaves ORDER BY leaf_index")
    for device, seq in (leaves[0], leaves[len(leaves) // 2], leaves[-1]):
        proof = build_proof(db, device, seq)
        assert proof["record"]["device"] == device and proof["record"]["seq"] == seq
        assert proof["tree_size"] == 78
        checks = verify_proof(
            json.loads(json.dumps(proof)), contract=AnchorContract(chain.w3, proof["anchor"]["contract"])
        )
        assert _ok(checks), checks
    # a batch of one record: the root is the leaf, the path is empty
    key = generate_key(tmp_path / "keys" / "lonely.pem")
    add_device(db, "lonely", key)
    add_records(db, "lonely", key, 1, 1, prev=GENESIS_PREV)
    report = anchor_once(db, c)
    assert report.records == 1
    proof = build_proof(db, "lonely", 1)
    assert proof["tree_size"] == 1 and proof["audit_path"] == [] and proof["leaf_index"] == 0
    assert _ok(verify_proof(proof, contract=c))


def test_verify_proof__fails_on_each_kind_of_tampering(db: Database, chain: Chain, tmp_path: Path) -> None:
    keys = fill_fleet(db, tmp_path / "keys", FLEET)
    c = deployed(chain)
    anchor_once(db, c)
    good = build_proof(db, "truck-01", 17)
    assert _ok(verify_proof(good, contract=c))

    def failed(proof: dict, **kw: object) -> set[str]:  # type: ignore[type-arg]
        return {ch.name for ch in verify_proof(proof, contract=c, **kw) if not ch.ok}  # type: ignore[arg-type]

    changed = copy.deepcopy(good)
    changed["record"]["body"]["co2_kg"] = 0.1
    assert failed(changed) == {"signature"}  # the hash no longer matches the content
    rehashed = copy.deepcopy(good)
    rehashed["record"]["hash"] = build_proof(db, "truck-01", 18)["record"]["hash"]
    assert "root" in failed(rehashed) and "signature" in failed(rehashed)

    bent = copy.deepcopy(good)
    bent["audit_path"][2] = base64.b64encode(bytes(32)).decode()
    assert failed(bent) == {"root"}
    short = copy.deepcopy(good)
    short["audit_path"].pop()
    assert failed(short) == {"root"}

    # a record, path and root that agree, but the root was never anchored: a tree of just this record
    lone = copy.deepcopy(good)
    lone.update(
        leaf_index=0,
        tree_size=1,
        audit_path=[],
        root=__import__("edge_agent.central.anchor.merkle", fromlist=["x"]).record_leaf(good["record"]["hash"]).hex(),
    )
    assert failed(lone) == {"chain"}
    # the right root, asked of another RecordAnchor contract that never held it
    other = deployed(chain)
    assert {ch.name for ch in verify_proof(good, contract=other) if not ch.ok} == {"chain"}
    wrong_block = copy.deepcopy(good)
    wrong_block["anchor"]["block_hash"] = "0x" + "22" * 32
    assert failed(wrong_block) == {"chain"}

    # a record checked against a key that is not its device's
    stranger = generate_key(tmp_path / "stranger.pem")
    assert failed(good, public=stranger.public) == {"signature"}
    swapped = copy.deepcopy(good)
    swapped["device_public_key"] = build_proof(db, "truck-02", 1)["device_public_key"]
    assert failed(swapped) == {"signature"}
    assert _ok(verify_proof(good, public=keys["truck-01"].public, contract=c))


def test_verify_proof__k_of_n_counts_only_when_confirmed(tmp_path: Path, chain: Chain) -> None:
    """Two members run their own databases over the same records; the second's run endorses the first's batch."""
    import edge_agent.central.anchor.store  # noqa: F401

    c_a = deployed(chain, k=2)
    c_b = AnchorContract(chain.w3, c_a.address, chain.members[1])
    with open_db(f"sqlite:///{tmp_path / 'a.db'}") as a, open_db(f"sqlite:///{tmp_path / 'b.db'}") as b:
        keys = fill_fleet(a, tmp_path / "keys", {"truck-01": 9, "truck-02": 4})
        for device, key in keys.items():
            add_device(b, device, key)
        b.insert_many(
            "records",
            ("device", "seq", "hash", "prev", "kind", "ts", "key_id", "record", "ingested_at", "verified"),
            a.query("SELECT device, seq, hash, prev, kind, ts, key_id, record, ingested_at, verified FROM records"),
        )
        ra = anchor_once(a, c_a)
        proof = build_proof(a, "truck-02", 3)
        checks = verify_proof(proof, contract=c_a)
        assert [ch.name for ch in checks if not ch.ok] == ["chain"]
        assert "confirmed by 1 of the 2 members needed" in checks[-1].detail
        rb = anchor_once(b, c_b)
        assert rb.endorsed == ra.anchored == rb.recovered
        assert _ok(verify_proof(proof, contract=c_a))
        assert build_proof(b, "truck-02", 3)["anchor"] == proof["anchor"]


def test_anchor__run_stopped_between_send_and_record_finds_its_tx(db: Database, chain: Chain, tmp_path: Path) -> None:
    """The state a kill leaves: batch written (pending, no tx hash), transaction mined. The re-run sends nothing."""
    fill_fleet(db, tmp_path / "keys", FLEET)
    c = deployed(chain)
    leaves = list(candidates(db))
    from edge_agent.central.anchor.merkle import MerkleTree

    root = MerkleTree.from_record_hashes([x.hash for x in leaves]).root.hex()
    ranges = ranges_of(leaves)
    bid = batch_id_for(bytes.fromhex(root)).hex()
    write_batch(
        db, batch_id=bid, root=root, leaves=leaves, ranges=ranges, contract=c.address, chain_id=chain.w3.eth.chain_id
    )
    tx = c.send_anchor(bytes.fromhex(bid), bytes.fromhex(root), len(leaves), ranges)
    c.wait(tx, 10)
    assert get_batch(db, bid).status == PENDING  # type: ignore[union-attr]
    nonce = chain.w3.eth.get_transaction_count(c.account.address)  # type: ignore[union-attr]
    report = anchor_once(db, c)
    assert report.recovered == [bid] and report.anchored == [bid]
    assert chain.w3.eth.get_transaction_count(c.account.address) == nonce  # type: ignore[union-attr]
    stored = get_batch(db, bid)
    assert stored is not None and stored.tx_hash == tx and stored.status == "anchored"
    assert c.contract.functions.batch_count().call() == 1
    assert _ok(verify_proof(build_proof(db, "sensor-x", 12), contract=c))


def test_anchor__a_refused_batch_stays_and_is_sent_on_a_later_run(db: Database, chain: Chain, tmp_path: Path) -> None:
    fill_fleet(db, tmp_path / "keys", {"truck-01": 5})
    c = deployed(chain, n=2)
    outsider = AnchorContract(chain.w3, c.address, chain.outsider)
    report = anchor_once(db, outsider)
    assert report.failed and not report.complete
    (bid,) = report.failed
    batch = get_batch(db, bid)
    assert batch is not None and batch.status == PENDING
    assert "not a member" in db.query_one("SELECT last_error FROM anchor_batches WHERE batch_id = ?", (bid,))[0]  # type: ignore[index]
    with pytest.raises(ProofNotAvailable, match="not on chain yet"):
        build_proof(db, "truck-01", 1)
    report = anchor_once(db, c)
    assert report.anchored == [bid] and c.next_seq("truck-01") == 6
    assert c.contract.functions.next_seq(device_key("truck-01")).call() == 6


def test_prove__unknown_and_unanchored_records(db: Database, chain: Chain, tmp_path: Path) -> None:
    keys = fill_fleet(db, tmp_path / "keys", {"truck-01": 3})
    with pytest.raises(ProofNotAvailable, match="no such record"):
        build_proof(db, "truck-01", 99)
    with pytest.raises(ProofNotAvailable, match="not in any batch yet"):
        build_proof(db, "truck-01", 1)
    anchor_once(db, deployed(chain))
    add_records(db, "truck-01", keys["truck-01"], 4, 1, prev=_head(db, "truck-01", 3), verified=False)
    with pytest.raises(ProofNotAvailable, match="not in any batch yet"):
        build_proof(db, "truck-01", 4)


def test_anchor__records_from_the_real_ingest_of_a_misbehaving_fleet(dsn: str, chain: Chain) -> None:
    """Simulated devices (one drops records with a signed gap, one withholds one, one forges one) through the
    Ingestor: exactly the verified records are anchored, and each later run picks up where the last ended."""
    from datetime import UTC, datetime

    import edge_agent.central.anchor.store  # noqa: F401
    from edge_agent.central.ingest import Ingestor, IngestSettings, Message
    from edge_agent.central.simulate import build_fleet, register_fleet, step

    fleet = build_fleet(5, seed="anchor", misbehave={"gap": 1, "hole": 1, "forge": 1}, at_seq=4)
    with open_db(dsn) as db:
        register_fleet(db, fleet)
        ing = Ingestor(db, IngestSettings(hole_after_s=3600, replay_window_s=3600))

        def rounds(n: int) -> None:
            now = datetime.now(UTC)
            msgs = [
                Message(o.topic, o.payload, now.timestamp())
                for _ in range(n)
                for d in fleet
                for o in step(d, "edge", now)
            ]
            ing.process(msgs)

        c = deployed(chain)
        rounds(10)
        first = anchor_once(db, c)
        verified = db.query("SELECT device, seq FROM records WHERE verified = 1 ORDER BY device, seq")
        assert db.query("SELECT device, seq FROM anchor_leaves ORDER BY device, seq") == verified
        assert first.records == len(verified) and 0 < len(verified) < db.query_one("SELECT COUNT(*) FROM records")[0]  # type: ignore[index]
        holed = next(d for d in fleet if d.misbehave == "hole").device
        assert c.next_seq(holed) == 4  # anchored up to the withheld record, not past it
        gapped = next(d for d in fleet if d.misbehave == "gap").device
        assert _ok(verify_proof(build_proof(db, gapped, 10), contract=c))  # after the signed gap
        assert not any(db.query("SELECT 1 FROM anchor_leaves WHERE device = ? AND seq IN (4, 5)", (gapped,)))  # dropped

        rounds(5)
        second = anchor_once(db, c)
        assert second.records > 0 and second.anchored and set(second.anchored).isdisjoint(first.anchored)
        verified = db.query("SELECT device, seq FROM records WHERE verified = 1 ORDER BY device, seq")
        assert db.query("SELECT device, seq FROM anchor_leaves ORDER BY device, seq") == verified
        for d in fleet:
            if d.misbehave != "hole":
                assert c.next_seq(d.device) == d.seq + 1, d.device


def test_anchor__a_transaction_not_mined_in_time_is_recorded_by_a_later_run(
    db: Database, chain: Chain, tmp_path: Path
) -> None:
    fill_fleet(db, tmp_path / "keys", {"truck-01": 4})
    c = deployed(chain)
    tester = chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    tester.disable_auto_mine_transactions()
    report = anchor_once(db, c, AnchorSettings(receipt_timeout_s=0.3))
    (bid,) = report.waiting
    assert not report.complete and report.anchored == []
    stored = get_batch(db, bid)
    assert stored is not None and stored.status == "sent" and stored.tx_hash is not None
    with pytest.raises(ProofNotAvailable, match="is sent, not on chain yet"):
        build_proof(db, "truck-01", 1)
    # still pending at the next run: it waits again rather than sending a second copy
    again = anchor_once(db, c, AnchorSettings(receipt_timeout_s=0.3))
    assert again.waiting == [bid] and get_batch(db, bid).tx_hash == stored.tx_hash  # type: ignore[union-attr]
    tester.mine_blocks(1)
    tester.enable_auto_mine_transactions()
    done = anchor_once(db, c)
    assert done.anchored == [bid] and done.complete
    final = get_batch(db, bid)
    assert final is not None and final.status == "anchored" and final.tx_hash == stored.tx_hash
    assert c.contract.functions.batch_count().call() == 1
    assert _ok(verify_proof(build_proof(db, "truck-01", 4), contract=c))


def test_anchor__a_record_verified_after_its_device_was_anchored_past_it_is_reported(
    db: Database, chain: Chain, tmp_path: Path
) -> None:
    keys = fill_fleet(db, tmp_path / "keys", {"truck-01": 6})
    with db.transaction():
        db.execute("UPDATE records SET verified = 0 WHERE device = 'truck-01' AND seq = 3")
    c = deployed(chain)
    anchor_once(db, c)
    assert c.next_seq("truck-01") == 7
    with db.transaction():
        db.execute("UPDATE records SET verified = 1 WHERE device = 'truck-01' AND seq = 3")
    add_records(db, "truck-01", keys["truck-01"], 7, 2, prev=_head(db, "truck-01", 6))
    report = anchor_once(db, c)
    # seq 3 cannot go on chain any more (the contract would refuse the overlap); 7 and 8 still do
    assert report.skipped_late == 1 and report.records == 2 and report.complete
    assert db.query_one("SELECT COUNT(*) FROM anchor_leaves WHERE device = 'truck-01' AND seq = 3") == (0,)


_RECORD_COLS = ("device", "seq", "hash", "prev", "kind", "ts", "key_id", "record", "ingested_at", "verified")


def _mirror(src: Database, dst: Database, keys: dict, where: str = "1 = 1") -> None:  # type: ignore[type-arg]
    """Another member's central database, fed the same device streams."""
    for device, key in keys.items():
        if not dst.query_one("SELECT 1 FROM devices WHERE device = ?", (device,)):
            add_device(dst, device, key)
    rows = src.query(f"SELECT {', '.join(_RECORD_COLS)} FROM records WHERE {where}")  # noqa: S608
    dst.insert_many("records", _RECORD_COLS, rows, conflict="ON CONFLICT DO NOTHING")


def test_endorse__a_member_endorses_only_roots_its_own_records_give(tmp_path: Path, chain: Chain) -> None:
    import edge_agent.central.anchor.store  # noqa: F401
    from edge_agent.central.anchor.run import endorse_once

    c_a = deployed(chain, k=2)
    c_b = AnchorContract(chain.w3, c_a.address, chain.members[1])
    with open_db(f"sqlite:///{tmp_path / 'a.db'}") as a, open_db(f"sqlite:///{tmp_path / 'b.db'}") as b:
        keys = fill_fleet(a, tmp_path / "keys", {"truck-01": 6, "truck-02": 4})
        _mirror(a, b, keys)
        with b.transaction():  # b's ingest has not verified truck-02's tail yet
            b.execute("UPDATE records SET verified = 0 WHERE device = 'truck-02' AND seq >= 3")
        (first,) = anchor_once(a, c_a).anchored
        assert not c_a.is_confirmed(bytes.fromhex(first))
        waiting = endorse_once(b, c_b)
        assert waiting.not_yet == [first] and not waiting.endorsed
        with b.transaction():
            b.execute("UPDATE records SET verified = 1")
        done = endorse_once(b, c_b)
        assert done.endorsed == [first] == done.recorded and done.complete
        assert c_a.is_confirmed(bytes.fromhex(first))
        proof_b = build_proof(b, "truck-02", 4)
        assert proof_b["anchor"] == build_proof(a, "truck-02", 4)["anchor"]
        assert _ok(verify_proof(proof_b, contract=c_b))
        assert endorse_once(b, c_b).recorded == []  # nothing new

        # a's database is tampered with before its next anchor: b's honest records refuse the root
        add_records(a, "truck-01", keys["truck-01"], 7, 3, prev=_head(a, "truck-01", 6))
        _mirror(a, b, keys, "seq >= 7")
        with a.transaction():
            row = a.query_one("SELECT record FROM records WHERE device = 'truck-01' AND seq = 8")
            forged = json.loads(str(row[0]))  # type: ignore[index]
            forged["body"]["co2_kg"] = 0.0
            import hashlib

            from edge_agent.spine.records import encode, signing_bytes

            forged["hash"] = hashlib.sha256(signing_bytes(forged)).hexdigest()
            a.execute(
                "UPDATE records SET record = ?, hash = ? WHERE device = 'truck-01' AND seq = 8",
                (encode(forged).decode(), forged["hash"]),
            )
        (second,) = anchor_once(a, c_a).anchored
        refused = endorse_once(b, c_b)
        assert refused.mismatched == [second] and not refused.endorsed and not refused.complete
        assert not c_a.is_confirmed(bytes.fromhex(second))
        checks = verify_proof(build_proof(a, "truck-01", 7), contract=c_a)
        assert [ch.name for ch in checks if not ch.ok] == ["chain"]


def test_anchor__two_members_anchoring_different_views_are_told_to_endorse_instead(
    tmp_path: Path, chain: Chain, caplog: pytest.LogCaptureFixture
) -> None:
    import edge_agent.central.anchor.store  # noqa: F401

    c_a = deployed(chain, k=2)
    c_b = AnchorContract(chain.w3, c_a.address, chain.members[1])
    with open_db(f"sqlite:///{tmp_path / 'a.db'}") as a, open_db(f"sqlite:///{tmp_path / 'b.db'}") as b:
        keys = fill_fleet(a, tmp_path / "keys", {"truck-01": 6})
        _mirror(a, b, keys, "seq <= 5")  # b has not received seq 6 yet
        anchor_once(a, c_a)
        report = anchor_once(b, c_b)
        assert report.failed and not report.anchored
        assert "range overlaps an earlier anchor" in caplog.text
        assert "the others `central anchor endorse`" in caplog.text
