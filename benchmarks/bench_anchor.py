"""Ledger anchoring benchmark: Merkle tree and proof cost against the ingest's own CPU, proof size and check time
in a 1,000,000-record batch, and one anchor transaction for 100,000+ records on a real EVM (py-evm).

Run on one core:  taskset -c 0 .venv/bin/python benchmarks/bench_anchor.py [--quick]
benchmarks/bench_central.py runs the same tables as its `anchor` section. Prints Markdown tables; the tree rows
have pymerkle (the library a user would reach for) beside ours, measured in the same run.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _cpu() -> float:
    return time.process_time()


def ingest_cpu_per_record_us(tmp: Path, devices: int, rounds: int) -> tuple[float, int]:
    """CPU per record of the real Ingestor (verify signature, hash, chain; store in SQLite), simulated fleet."""

    from edge_agent.central.db import open_db
    from edge_agent.central.ingest import Ingestor, IngestSettings, Message
    from edge_agent.central.simulate import build_fleet, register_fleet, step

    fleet = build_fleet(devices, seed="bench")
    db = open_db(f"sqlite:///{tmp / 'ingest.db'}")
    register_fleet(db, fleet)
    ing = Ingestor(db, IngestSettings())
    now = datetime.now(UTC)
    batches = [
        [Message(o.topic, o.payload, now.timestamp()) for d in fleet for o in step(d, "edge", now)]
        for _ in range(rounds)
    ]
    n = sum(len(b) for b in batches)
    t0 = _cpu()
    for b in batches:
        ing.process(b)
    cpu = _cpu() - t0
    db.close()
    return cpu / n * 1e6, n


def ours_tree_and_proofs_us(hashes: list[str]) -> tuple[float, float]:
    """(tree build, every leaf's audit path) CPU per record for our tree."""
    from edge_agent.central.anchor.merkle import MerkleTree

    t0 = _cpu()
    tree = MerkleTree.from_record_hashes(hashes)
    t1 = _cpu()
    for i in range(tree.size):
        tree.audit_path(i)
    t2 = _cpu()
    n = len(hashes)
    return (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6


def pymerkle_tree_and_proofs_us(hashes: list[str], proofs: int) -> tuple[float, float]:
    """(append every entry, one inclusion proof) CPU per record for pymerkle's InmemoryTree; proofs sampled."""
    from pymerkle import InmemoryTree

    t0 = _cpu()
    tree = InmemoryTree(algorithm="sha256")
    for h in hashes:
        tree.append_entry(bytes.fromhex(h))
    t1 = _cpu()
    step = max(1, len(hashes) // proofs)
    done = 0
    for i in range(1, len(hashes) + 1, step):
        tree.prove_inclusion(i)
        done += 1
    t2 = _cpu()
    return (t1 - t0) / len(hashes) * 1e6, (t2 - t1) / done * 1e6


def proof_in_big_batch(n: int, tmp: Path) -> dict[str, Any]:
    """A real signed record placed in an n-leaf batch: proof size and check time (signature + path)."""
    from edge_agent.central.anchor.merkle import MerkleTree, record_leaf, root_from_path
    from edge_agent.central.anchor.proof import PROOF_FORMAT, verify_proof
    from edge_agent.spine.keys import generate_key, public_raw_b64
    from edge_agent.spine.records import GENESIS_PREV, make_record

    key = generate_key(tmp / "dev.pem")
    rec = make_record(
        device="truck-0042",
        seq=123456,
        ts="2026-11-30T08:00:00.000Z",
        clock="gps",
        kind="trip",
        body={
            "timestamp": "2026-11-30T08:00:00.000Z",
            "transport_id": "T-88231",
            "route": "DEPOT-A>STORE-7",
            "distance_km": 42.7,
            "fuel_used_l": 5.9,
            "co2_kg": 15.6,
        },
        prev=GENESIS_PREV,
        key=key,
    )
    index = n * 3 // 4 + 1  # deep in the right half, a full-length path
    hashes = [hashlib.sha256(i.to_bytes(8, "big")).hexdigest() for i in range(n)]
    hashes[index] = rec["hash"]
    tree = MerkleTree.from_record_hashes(hashes)
    proof = {
        "format": PROOF_FORMAT,
        "record": rec,
        "device_public_key": public_raw_b64(key.public),
        "leaf_index": index,
        "tree_size": n,
        "audit_path": [base64.b64encode(p).decode() for p in tree.audit_path(index)],
        "root": tree.root.hex(),
        "anchor": {
            "chain_id": 1337,
            "contract": "0x" + "12" * 20,
            "tx_hash": "0x" + "34" * 32,
            "block_number": 123456789,
            "block_hash": "0x" + "56" * 32,
        },
    }
    text = json.dumps(proof, separators=(",", ":"))
    pretty = json.dumps(proof, indent=2)
    runs = 300
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        parsed = json.loads(text)
        checks = verify_proof(parsed)
        times.append(time.perf_counter() - t0)
        assert all(c.ok for c in checks), checks
    path = [base64.b64decode(p) for p in proof["audit_path"]]
    leaf = record_leaf(rec["hash"])
    t0 = time.perf_counter()
    for _ in range(runs):
        root_from_path(leaf, index, n, path)
    path_only = (time.perf_counter() - t0) / runs
    record_bytes = len(json.dumps(rec, separators=(",", ":")).encode())
    return {
        "record_bytes": record_bytes,
        "path_len": len(path),
        "bytes": len(text.encode()),
        "bytes_pretty": len(pretty.encode()),
        "verify_ms": statistics.median(times) * 1e3,
        "path_only_ms": path_only * 1e3,
    }


def one_transaction(tmp: Path, devices: int, per_device: int) -> dict[str, Any]:
    """A real anchor run from a central SQLite database of signed records to py-evm: one transaction."""
    from web3 import EthereumTesterProvider, Web3

    import edge_agent.central.anchor.store  # noqa: F401 - the anchor tables
    from edge_agent.central.anchor.chain import AnchorContract, deploy
    from edge_agent.central.anchor.ethkeys import load_eth_key, new_eth_key
    from edge_agent.central.anchor.run import anchor_once
    from edge_agent.central.db import open_db
    from edge_agent.spine.keys import generate_key
    from edge_agent.spine.records import GENESIS_PREV, encode, make_record

    db = open_db(f"sqlite:///{tmp / 'anchor.db'}")
    for d in range(devices):
        key = generate_key(tmp / f"k{d}.pem")
        prev, rows = GENESIS_PREV, []
        for seq in range(1, per_device + 1):
            rec = make_record(
                device=f"truck-{d:04d}",
                seq=seq,
                ts="2026-11-30T08:00:00.000Z",
                clock="ntp",
                kind="telemetry",
                body={"lat": 39.9, "lon": 116.4, "speed_kmh": 40.0},
                prev=prev,
                key=key,
            )
            prev = rec["hash"]
            rows.append(
                (
                    rec["device"],
                    seq,
                    rec["hash"],
                    rec["prev"],
                    "telemetry",
                    rec["ts"],
                    key.key_id,
                    encode(rec).decode(),
                    time.time(),
                    1,
                )
            )
        db.insert_many(
            "records",
            ("device", "seq", "hash", "prev", "kind", "ts", "key_id", "record", "ingested_at", "verified"),
            rows,
        )
    w3 = Web3(EthereumTesterProvider())
    new_eth_key(tmp / "m.key")
    member = load_eth_key(tmp / "m.key")
    w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": member.address, "value": 10**21})
    address, _ = deploy(w3, member, [member.address], 1)
    contract = AnchorContract(w3, address, member)
    t0, c0 = time.perf_counter(), _cpu()
    report = anchor_once(db, contract)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    (tx,) = db.query("SELECT DISTINCT tx_hash FROM anchor_batches")
    receipt = w3.eth.get_transaction_receipt(tx[0])
    calldata = len(bytes(w3.eth.get_transaction(tx[0])["input"]))
    db.close()
    return {
        "records": report.records,
        "batches": len(report.anchored),
        "gas": receipt["gasUsed"],
        "calldata": calldata,
        "wall_s": wall,
        "cpu_us_per_record": cpu / report.records * 1e6,
    }


def section_lines(quick: bool = False, worker_per_s: float | None = None) -> list[str]:
    """The anchoring tables as Markdown lines; `worker_per_s` is bench_central's one-worker rate, if measured."""
    out: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        devices, rounds = (20, 50) if quick else (50, 200)
        ingest_us, n_ingest = ingest_cpu_per_record_us(tmp, devices, rounds)
        sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
        out += [
            "### Merkle tree and proofs against the ingest's own CPU (one core)",
            "",
            f"Ingest (real Ingestor, SQLite, {n_ingest} records of {devices} simulated devices): "
            f"**{ingest_us:.1f} µs CPU per record**."
            + (
                f" One ingest worker into PostgreSQL (throughput section): {1e6 / worker_per_s:.1f} µs per record."
                if worker_per_s
                else ""
            ),
            "",
            "| leaves | ours: tree µs/rec | ours: every proof µs/rec | ours: share of ingest "
            "| pymerkle: tree µs/rec | pymerkle: one proof µs |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for n in sizes:
            hashes = [hashlib.sha256(i.to_bytes(8, "big")).hexdigest() for i in range(n)]
            tree_us, proofs_us = ours_tree_and_proofs_us(hashes)
            share = (tree_us + proofs_us) / ingest_us * 100
            if n <= 100_000:
                pm_tree, pm_proof = pymerkle_tree_and_proofs_us(hashes, 200)
                pm = f"{pm_tree:.2f} | {pm_proof:.0f}"
            else:
                pm = "not run (≈ same per leaf as 100k) | -"
            out.append(f"| {n:,} | {tree_us:.2f} | {proofs_us:.2f} | {share:.1f} % | {pm} |")
        big = 100_000 if quick else 1_000_000
        p = proof_in_big_batch(big, tmp)
        out += [
            "",
            f"### A proof in a {big:,}-record batch",
            "",
            "| audit path | proof without the record | whole document, compact (record included) "
            "| whole document, indented | verify (parse + Ed25519 + path), median | path alone |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {p['path_len']} hashes | {p['bytes'] - p['record_bytes']:,} B | {p['bytes']:,} B "
            f"({p['record_bytes']} B record) | {p['bytes_pretty']:,} B | {p['verify_ms']:.3f} ms "
            f"| {p['path_only_ms']:.3f} ms |",
        ]
        devs, per = (20, 500) if quick else (100, 1_000)
        t = one_transaction(tmp, devs, per)
        out += [
            "",
            f"### One anchor transaction ({devs} devices x {per:,} records, py-evm)",
            "",
            "| records | transactions | gas | calldata | anchor run wall | anchor run CPU/record |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {t['records']:,} | {t['batches']} | {t['gas']:,} | {t['calldata']:,} B | {t['wall_s']:.1f} s "
            f"| {t['cpu_us_per_record']:.1f} µs |",
        ]
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    print("## Anchoring\n")
    print("\n".join(section_lines(ap.parse_args().quick)))
