"""The example proof in docs/anchoring.md verifies, breaks when touched, and has the shape `central prove` makes."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.central.anchor.chain import AnchorContract
from edge_agent.central.anchor.proof import verify_proof
from edge_agent.central.anchor.run import anchor_once
from edge_agent.central.db import open_db
from tests.central.anchor_rpc import RpcBridge
from tests.central.anchor_support import deployed, fill_fleet, new_chain

DOC = Path(__file__).resolve().parents[2] / "docs" / "anchoring.md"


def _example() -> dict[str, Any]:
    m = re.search(r"<!-- example-proof -->\s*```json\n(.*?)\n```", DOC.read_text(encoding="utf-8"), re.S)
    assert m, "docs/anchoring.md lost its example proof"
    proof: dict[str, Any] = json.loads(m.group(1))
    return proof


def test_docs__example_proof_verifies_offline() -> None:
    checks = verify_proof(_example())
    assert [(c.name, c.ok) for c in checks] == [("signature", True), ("root", True)], checks


@pytest.mark.parametrize(
    "touch",
    [
        lambda p: p["record"]["body"].__setitem__("co2_kg", p["record"]["body"]["co2_kg"] + 1),
        lambda p: p.__setitem__("leaf_index", p["leaf_index"] - 1),
        lambda p: p["audit_path"].reverse(),
        lambda p: p.__setitem__("root", "00" + p["root"][2:]),
    ],
)
def test_docs__example_proof_fails_when_touched(touch: Any) -> None:
    proof = copy.deepcopy(_example())
    touch(proof)
    assert not all(c.ok for c in verify_proof(proof))


def test_docs__example_has_the_shape_prove_makes(tmp_path: Path) -> None:
    import edge_agent.central.anchor.store  # noqa: F401
    from edge_agent.central.anchor.proof import build_proof

    with open_db(f"sqlite:///{tmp_path / 'c.db'}") as db:
        fill_fleet(db, tmp_path / "keys", {"truck-01": 3})
        anchor_once(db, deployed(new_chain(tmp_path, n_members=1)))
        made = build_proof(db, "truck-01", 2)
    example = _example()
    assert set(example) == set(made)
    assert set(example["anchor"]) == set(made["anchor"])
    assert example["format"] == made["format"]


def test_docs__example_record_is_what_the_simulator_publishes_now() -> None:
    """The example is sim-00001's 20th record of `central simulate --seed docs`; made again, it must be the same
    (it was not when simulated trips gained co2_gas)."""
    from datetime import datetime

    from edge_agent.central.simulate import build_fleet, step

    record = _example()["record"]
    device = build_fleet(2, seed="docs")[1]
    assert record["device"] == device.device
    for _ in range(record["seq"]):
        [out] = step(device, "edge", datetime.fromisoformat(record["ts"]))
    assert json.loads(out.payload) == record


def _verifier(tmp_path: Path) -> Path:
    m = re.search(r"<!-- standalone-verifier -->\s*```python\n(.*?)\n```", DOC.read_text(encoding="utf-8"), re.S)
    assert m, "docs/anchoring.md lost its stand-alone verifier"
    script = tmp_path / "check_proof.py"
    script.write_text(m.group(1))
    return script


def _run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=60, check=False)


def test_docs__standalone_verifier_checks_the_example_and_catches_a_change(tmp_path: Path) -> None:
    script = _verifier(tmp_path)
    good = tmp_path / "example.json"
    good.write_text(json.dumps(_example()))
    r = _run(script, str(good))
    assert r.returncode == 0 and r.stdout.strip() == "VERIFIED", r.stderr
    bad = _example()
    bad["record"]["body"]["distance_km"] += 0.1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    r = _run(script, str(tmp_path / "bad.json"))
    assert r.returncode == 1 and "the record was altered" in r.stderr
    bent = _example()
    bent["audit_path"][0], bent["audit_path"][1] = bent["audit_path"][1], bent["audit_path"][0]
    (tmp_path / "bent.json").write_text(json.dumps(bent))
    r = _run(script, str(tmp_path / "bent.json"))
    assert r.returncode == 1 and "the path does not lead to the root" in r.stderr


def test_docs__standalone_verifier_asks_the_chain(tmp_path: Path) -> None:
    import edge_agent.central.anchor.store  # noqa: F401
    from edge_agent.central.anchor.proof import build_proof

    chain = new_chain(tmp_path, n_members=2)
    c = deployed(chain, k=2)
    with open_db(f"sqlite:///{tmp_path / 'c.db'}") as db:
        fill_fleet(db, tmp_path / "keys", {"truck-01": 5})
        anchor_once(db, c)
        proof = build_proof(db, "truck-01", 3)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(proof))
    script = _verifier(tmp_path)
    bridge = RpcBridge(chain.w3).start()
    try:
        r = _run(script, str(path), bridge.url)
        assert r.returncode == 1 and "not confirmed by k members" in r.stderr
        other = AnchorContract(chain.w3, c.address, chain.members[1])
        other.wait(other.send_endorse(bytes.fromhex(batch_id_hex(proof["root"])), bytes.fromhex(proof["root"])), 10)
        r = _run(script, str(path), bridge.url)
        assert r.returncode == 0 and r.stdout.strip() == "VERIFIED", r.stderr
        proof["anchor"]["block_number"] -= 1
        proof["anchor"]["block_hash"] = chain.w3.eth.get_block(proof["anchor"]["block_number"])["hash"].to_0x_hex()
        path.write_text(json.dumps(proof))
        r = _run(script, str(path), bridge.url)
        assert r.returncode == 1 and "did not hold this root at that block" in r.stderr
    finally:
        bridge.stop()


def batch_id_hex(root_hex: str) -> str:
    from edge_agent.central.anchor.chain import batch_id_for

    return batch_id_for(bytes.fromhex(root_hex)).hex()
