"""The example proof in docs/anchoring.md verifies, breaks when touched, and has the shape `central prove` makes."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from edge_agent.central.anchor.proof import verify_proof
from edge_agent.central.anchor.run import anchor_once
from edge_agent.central.db import open_db
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
