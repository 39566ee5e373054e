"""What the anchor tests share: an in-process EVM with funded member keys, the deployed contract, and a central
database filled with real signed records of simulated devices."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import EthereumTesterProvider, Web3

from edge_agent.central.anchor.chain import AnchorContract, deploy
from edge_agent.central.anchor.ethkeys import load_eth_key, new_eth_key
from edge_agent.central.db import Database
from edge_agent.spine.keys import DeviceKey, generate_key, public_raw_b64
from edge_agent.spine.records import GENESIS_PREV, encode, make_record


@dataclass
class Chain:
    w3: Web3
    members: list[LocalAccount]  # funded, keys on disk
    key_files: list[Path]
    outsider: LocalAccount  # funded, not a member


def new_chain(tmp_path: Path, n_members: int = 3) -> Chain:
    """A fresh py-evm chain; n member accounts and one outsider, each with a 0600 key file and 100 ether."""
    w3 = Web3(EthereumTesterProvider())
    faucet = w3.eth.accounts[0]
    files, accounts = [], []
    for i in range(n_members + 1):
        path = tmp_path / "eth" / f"member{i}.key"
        new_eth_key(path)
        acct = load_eth_key(path)
        w3.eth.send_transaction({"from": faucet, "to": acct.address, "value": 10**20})
        files.append(path)
        accounts.append(acct)
    return Chain(w3, accounts[:n_members], files[:n_members], accounts[n_members])


def deployed(chain: Chain, k: int = 1, n: int | None = None, by: int = 0) -> AnchorContract:
    members = chain.members[: n or len(chain.members)]
    address, _ = deploy(chain.w3, chain.members[by], [m.address for m in members], k)
    return AnchorContract(chain.w3, address, chain.members[by])


def add_device(db: Database, device: str, key: DeviceKey, site: str = "site-a") -> None:
    with db.transaction():
        db.execute(
            "INSERT INTO devices (device, site, pubkey, key_id, added_at) VALUES (?, ?, ?, ?, ?)",
            (device, site, public_raw_b64(key.public), key.key_id, time.time()),
        )
        db.execute(
            "INSERT INTO device_keys (device, key_id, pubkey, from_seq, source, added_at) VALUES (?, ?, ?, 1, 'registered', ?)",
            (device, key.key_id, public_raw_b64(key.public), time.time()),
        )


def add_records(
    db: Database, device: str, key: DeviceKey, first_seq: int, count: int, *, prev: str, verified: bool = True
) -> str:
    """Sign `count` trip records from first_seq on and store them as the ingest does; returns the last hash."""
    rows = []
    for seq in range(first_seq, first_seq + count):
        rec = make_record(
            device=device,
            seq=seq,
            ts=f"2026-11-30T08:{seq // 60 % 60:02d}:{seq % 60:02d}.000Z",
            clock="ntp",
            kind="trip",
            body={
                "transport_id": f"T-{seq}",
                "route": "DEPOT-A>STORE-7",
                "distance_km": 12.5 + seq,
                "fuel_used_l": 1.75,
                "co2_kg": 4.6,
            },
            prev=prev,
            key=key,
        )
        prev = rec["hash"]
        rows.append(
            (
                device,
                seq,
                rec["hash"],
                rec["prev"],
                rec["kind"],
                rec["ts"],
                key.key_id,
                encode(rec).decode(),
                time.time(),
                int(verified),
            )
        )
    db.insert_many(
        "records", ("device", "seq", "hash", "prev", "kind", "ts", "key_id", "record", "ingested_at", "verified"), rows
    )
    return prev


def fill_fleet(db: Database, keys_dir: Path, counts: dict[str, int]) -> dict[str, DeviceKey]:
    """Devices with `counts[device]` verified records each, seq 1..n, chained."""
    keys = {}
    for device, n in counts.items():
        key = generate_key(keys_dir / f"{device}.pem")
        add_device(db, device, key)
        add_records(db, device, key, 1, n, prev=GENESIS_PREV)
        keys[device] = key
    return keys
