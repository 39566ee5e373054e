"""`edge-agent central anchor|prove|verify-proof` as a user runs them, against a JSON-RPC endpoint over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.central.anchor import store  # noqa: F401 - registers the anchor tables
from edge_agent.central.anchor.chain import AnchorContract
from edge_agent.central.db import open_db
from tests.central.anchor_rpc import RpcBridge
from tests.central.anchor_support import Chain, fill_fleet, new_chain
from tests.helpers import wait_until

FLEET = {"truck-01": 30, "truck-02": 12, "sensor-9": 5}


def cli(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "central", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "central", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return new_chain(tmp_path, n_members=2)


@pytest.fixture
def rpc(chain: Chain) -> Iterator[RpcBridge]:
    bridge = RpcBridge(chain.w3).start()
    yield bridge
    bridge.stop()


@pytest.fixture
def setup(tmp_path: Path, chain: Chain, rpc: RpcBridge) -> tuple[str, str, str]:
    """(db dsn, contract address, member key file) with the fleet's records verified and a contract deployed."""
    dsn = f"sqlite:///{tmp_path / 'central.db'}"
    with open_db(dsn) as db:
        fill_fleet(db, tmp_path / "keys", FLEET)
    members = ",".join(m.address for m in chain.members)
    r = cli("anchor", "deploy", "--rpc", rpc.url, "--key", str(chain.key_files[0]), "--members", members, "--k", "1")
    assert r.returncode == 0, r.stderr
    address = r.stdout.split("contract:")[1].split()[0]
    return dsn, address, str(chain.key_files[0])


def test_cli__key_new_is_0600_and_never_printed(tmp_path: Path) -> None:
    out = tmp_path / "k" / "member.key"
    r = cli("anchor", "key", "new", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    secret = out.read_text().strip()
    assert secret not in r.stdout + r.stderr
    shown = cli("anchor", "key", "show", "--key", str(out))
    assert shown.stdout.strip() in r.stdout
    again = cli("anchor", "key", "new", "--out", str(out))
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    out.chmod(0o644)
    loose = cli("anchor", "key", "show", "--key", str(out))
    assert loose.returncode == 1 and "expected 0600" in loose.stderr and secret not in loose.stderr


def test_cli__key_new_refuses_a_folder_as_out_with_or_without_force(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir()
    for force in ([], ["--force"]):
        r = cli("anchor", "key", "new", "--out", str(folder), *force)
        assert r.returncode == 1
        assert r.stderr == (
            f"edge-agent: {folder}: is a folder; --out is the key FILE to write, e.g. --out {folder}/anchor.key "
            "(unlike `central keygen --out DIR`)\n"
        )
    assert list(tmp_path.rglob("*")) == [folder], "no key written, no temporary file left"


def test_key_new__a_failed_rename_leaves_no_private_key_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_agent.central.anchor.ethkeys import new_eth_key

    out = tmp_path / "member.key"
    rename = os.replace

    def folder_appears_first(src: str, dst: Path) -> None:
        # The race the up-front check cannot close: a folder made at --out after it; the real rename then fails.
        out.mkdir()
        rename(src, dst)

    monkeypatch.setattr(os, "replace", folder_appears_first)
    with pytest.raises(IsADirectoryError):
        new_eth_key(out, force=True)
    assert list(tmp_path.rglob("*")) == [out], "the temporary private key is removed"


def test_cli__anchor_prove_verify(tmp_path: Path, setup: tuple[str, str, str], rpc: RpcBridge, chain: Chain) -> None:
    dsn, address, key = setup
    r = cli("anchor", "--db", dsn, "--rpc", rpc.url, "--contract", address, "--key", key)
    assert r.returncode == 0, r.stderr
    assert "anchored 1 batch(es), 47 record(s)" in r.stdout
    again = cli("anchor", "--db", dsn, "--rpc", rpc.url, "--contract", address, "--key", key)
    assert again.returncode == 0 and "nothing to anchor" in again.stdout

    proof_file = tmp_path / "proof.json"
    p = cli("prove", "--db", dsn, "--device", "truck-02", "--seq", "7")
    assert p.returncode == 0, p.stderr
    proof = json.loads(p.stdout)
    assert proof["record"]["device"] == "truck-02" and proof["anchor"]["contract"] == address
    # leaves in (device, seq) order: sensor-9 0..4, truck-01 5..34, truck-02 35..46; 47 = 32 + 8 + 4 + 3
    assert proof["leaf_index"] == 41 and proof["tree_size"] == 47 and len(proof["audit_path"]) == 5
    proof_file.write_text(p.stdout)

    v = cli("verify-proof", str(proof_file), "--rpc", rpc.url)
    assert v.returncode == 0, v.stdout + v.stderr
    assert v.stdout.splitlines()[-1] == "VERIFIED"
    assert cli("verify-proof", str(proof_file), "--offline").returncode == 0
    no_chain = cli("verify-proof", str(proof_file))
    assert no_chain.returncode == 2 and "--offline" in no_chain.stderr

    proof["record"]["body"]["co2_kg"] = 0.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(proof))
    v = cli("verify-proof", str(bad), "--rpc", rpc.url, "--json")
    assert v.returncode == 1
    result = json.loads(v.stdout)
    assert not result["ok"] and [c["name"] for c in result["checks"] if not c["ok"]] == ["signature"]


def test_cli__verify_proof_with_a_device_key_file(tmp_path: Path, setup: tuple[str, str, str], rpc: RpcBridge) -> None:
    dsn, address, key = setup
    assert cli("anchor", "--db", dsn, "--rpc", rpc.url, "--contract", address, "--key", key).returncode == 0
    proof = tmp_path / "proof.json"
    assert (
        cli("prove", "--db", dsn, "--device", "sensor-9", "--seq", "5", "--out", str(proof), "--compact").returncode
        == 0
    )
    assert len(proof.read_text().splitlines()) == 1
    from edge_agent.spine.keys import load_key, public_pem

    right, wrong = tmp_path / "right.pem", tmp_path / "wrong.pem"
    right.write_bytes(public_pem(load_key(tmp_path / "keys" / "sensor-9.pem").public))
    wrong.write_bytes(public_pem(load_key(tmp_path / "keys" / "truck-01.pem").public))
    assert cli("verify-proof", str(proof), "--rpc", rpc.url, "--pubkey", str(right)).returncode == 0
    v = cli("verify-proof", str(proof), "--rpc", rpc.url, "--pubkey", str(wrong))
    assert v.returncode == 1 and "FAIL signature: record is signed by key" in v.stdout


def test_cli__works_with_bft_block_headers(tmp_path: Path, setup: tuple[str, str, str], rpc: RpcBridge) -> None:
    """Besu's QBFT puts 97+ bytes in extraData; anchoring and checking a proof must not trip over it."""
    dsn, address, key = setup
    rpc.bft_extra_data = True
    r = cli("anchor", "--db", dsn, "--rpc", rpc.url, "--contract", address, "--key", key)
    assert r.returncode == 0, r.stderr
    proof = tmp_path / "p.json"
    assert cli("prove", "--db", dsn, "--device", "truck-01", "--seq", "1", "--out", str(proof)).returncode == 0
    v = cli("verify-proof", str(proof), "--rpc", rpc.url)
    assert v.returncode == 0, v.stdout + v.stderr


def test_cli__anchor_killed_after_sending_finds_its_transaction_on_rerun(
    setup: tuple[str, str, str], rpc: RpcBridge, chain: Chain
) -> None:
    dsn, address, key = setup
    proc = popen("anchor", "--db", dsn, "--rpc", rpc.url, "--contract", address, "--key", key)
    # The node has the transaction; the sender dies before it hears the hash back, let alone records it.
    rpc.on_send_raw = lambda _tx: os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    rpc.on_send_raw = None
    assert len(rpc.sent_raw) == 2  # the deployment and the anchor
    with open_db(dsn) as db:
        assert db.query("SELECT status, tx_hash FROM anchor_batches") == [("pending", None)]

    r = cli("anchor", "--db", dsn, "--rpc", rpc.url, "--contract", address, "--key", key)
    assert r.returncode == 0, r.stderr
    assert "1 found on chain from an earlier run" in r.stdout
    assert len(rpc.sent_raw) == 2  # nothing sent again
    contract = AnchorContract(chain.w3, address)
    assert contract.contract.functions.batch_count().call() == 1
    with open_db(dsn) as db:
        rows = db.query("SELECT DISTINCT status, tx_hash, block_number FROM record_anchors")
        assert len(rows) == 1 and rows[0][0] == "anchored" and rows[0][1] == rpc.sent_raw[1]
        assert db.query_one("SELECT COUNT(*) FROM record_anchors")[0] == sum(FLEET.values())  # type: ignore[index]


def test_cli__anchor_every_runs_until_sigterm(setup: tuple[str, str, str], rpc: RpcBridge) -> None:
    dsn, address, key = setup
    proc = popen("anchor", "--db", dsn, "--rpc", rpc.url, "--contract", address, "--key", key, "--every", "1h")
    try:

        def anchored() -> bool:
            with open_db(dsn) as db:
                return db.query_one("SELECT COUNT(*) FROM anchor_batches WHERE status = 'anchored'")[0] == 1  # type: ignore[index]

        assert wait_until(anchored, timeout_s=60)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "anchored 1 batch(es), 47 record(s)" in out


def test_cli__bad_arguments_say_what_is_expected(tmp_path: Path, rpc: RpcBridge, chain: Chain) -> None:
    r = cli("anchor", "--db", "sqlite:///x.db", "--rpc", rpc.url, "--contract", "0x12", "--key", "k", "--every", "soon")
    assert r.returncode == 2 and "expected a positive duration such as 30s, 10m or 1h" in r.stderr
    r = cli("anchor", "deploy", "--rpc", rpc.url, "--key", str(chain.key_files[0]), "--members", "0xnothex")
    assert r.returncode == 1 and "'0xnothex' is not an Ethereum address" in r.stderr
    r = cli(
        "anchor",
        "deploy",
        "--rpc",
        "127.0.0.1:8545",
        "--key",
        str(chain.key_files[0]),
        "--members",
        chain.members[0].address,
    )
    assert r.returncode == 1 and "expected an http:// or https:// JSON-RPC URL" in r.stderr
    dsn = f"sqlite:///{tmp_path / 'c.db'}"
    open_db(dsn).close()  # an empty central: anchor and prove refuse a path with no database
    r = cli(
        "anchor",
        "--db",
        dsn,
        "--rpc",
        rpc.url,
        "--contract",
        chain.members[0].address,
        "--key",
        str(chain.key_files[0]),
    )
    assert r.returncode == 1 and "no contract there" in r.stderr
    r = cli("prove", "--db", dsn, "--device", "nobody", "--seq", "1")
    assert r.returncode == 1 and "no such record" in r.stderr
    garbage = tmp_path / "g.json"
    garbage.write_text("{not json")
    r = cli("verify-proof", str(garbage), "--offline")
    assert r.returncode == 2 and "not JSON" in r.stderr


def test_cli__second_member_endorses_and_the_proof_then_verifies(tmp_path: Path, rpc: RpcBridge, chain: Chain) -> None:
    a_dsn, b_dsn = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    with open_db(a_dsn) as a:
        fill_fleet(a, tmp_path / "keys", {"truck-01": 8})
        rows = a.query("SELECT device, site, pubkey, key_id, added_at FROM devices")
        keys = a.query("SELECT device, key_id, pubkey, from_seq, source, added_at FROM device_keys")
        recs = a.query("SELECT device, seq, hash, prev, kind, ts, key_id, record, ingested_at, verified FROM records")
    with open_db(b_dsn) as b:
        b.insert_many("devices", ("device", "site", "pubkey", "key_id", "added_at"), rows)
        b.insert_many("device_keys", ("device", "key_id", "pubkey", "from_seq", "source", "added_at"), keys)
        cols = ("device", "seq", "hash", "prev", "kind", "ts", "key_id", "record", "ingested_at", "verified")
        b.insert_many("records", cols, recs)
    members = ",".join(m.address for m in chain.members)
    key_a, key_b = str(chain.key_files[0]), str(chain.key_files[1])
    d = cli("anchor", "deploy", "--rpc", rpc.url, "--key", key_a, "--members", members, "--k", "2")
    address = d.stdout.split("contract:")[1].split()[0]
    assert cli("anchor", "--db", a_dsn, "--rpc", rpc.url, "--contract", address, "--key", key_a).returncode == 0
    proof = tmp_path / "p.json"
    assert cli("prove", "--db", a_dsn, "--device", "truck-01", "--seq", "8", "--out", str(proof)).returncode == 0
    v = cli("verify-proof", str(proof), "--rpc", rpc.url)
    assert v.returncode == 1 and "confirmed by 1 of the 2 members needed" in v.stdout
    e = cli("anchor", "endorse", "--db", b_dsn, "--rpc", rpc.url, "--contract", address, "--key", key_b)
    assert e.returncode == 0, e.stderr
    assert "checked and stored 1 batch(es) of other members, endorsed 1" in e.stdout
    assert cli("verify-proof", str(proof), "--rpc", rpc.url).returncode == 0
    # b can hand out the same proof from its own database
    pb = cli("prove", "--db", b_dsn, "--device", "truck-01", "--seq", "8")
    assert json.loads(pb.stdout) == json.loads(proof.read_text())
