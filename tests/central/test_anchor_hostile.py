"""verify-proof on hostile proofs: every field replaced by any JSON value gives a failed check, never a crash."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.central.anchor.chain import AnchorContract, connect
from edge_agent.central.anchor.proof import build_proof, verify_proof
from edge_agent.central.anchor.run import anchor_once
from edge_agent.central.db import open_db
from tests.central.anchor_rpc import RpcBridge
from tests.central.anchor_support import Chain, deployed, fill_fleet, new_chain

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def anchored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Chain, AnchorContract, dict[str, Any]]]:
    """A proof of an anchored record, and the contract as verify-proof sees it: over JSON-RPC on HTTP."""
    import edge_agent.central.anchor.store  # noqa: F401

    tmp: Path = tmp_path_factory.mktemp("hostile")
    chain = new_chain(tmp, n_members=1)
    c = deployed(chain)
    with open_db(f"sqlite:///{tmp / 'c.db'}") as db:
        fill_fleet(db, tmp / "keys", {"truck-01": 9})
        anchor_once(db, c)
        proof = build_proof(db, "truck-01", 5)
    bridge = RpcBridge(chain.w3).start()
    try:
        remote = AnchorContract(connect(bridge.url), c.address, check_code=False)
        assert all(ch.ok for ch in verify_proof(proof, contract=remote))
        yield chain, remote, proof
    finally:
        bridge.stop()


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile__any_field_replaced_fails_cleanly_offline(
    anchored: tuple[Chain, AnchorContract, dict[str, Any]], data: st.DataObject
) -> None:
    _chain, _c, good = anchored
    proof = copy.deepcopy(good)
    paths = [p for p in _paths(proof) if p[0] != "anchor"]  # the anchor section is checked on chain only
    path = data.draw(st.sampled_from(paths))
    value = data.draw(JSON)
    _set(proof, path, value)
    orig: Any = good
    for p in path:
        orig = orig[p]
    checks = verify_proof(json.loads(json.dumps(proof)))
    if json.dumps(value, sort_keys=True) != json.dumps(orig, sort_keys=True):
        assert not all(c.ok for c in checks), (path, value)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("block_number", 10**9, "could not confirm"),
        ("block_number", -1, "negative"),
        ("block_number", "soon", "malformed anchor section"),
        ("tx_hash", "0x" + "77" * 32, "could not confirm"),
        ("tx_hash", "nothex", "could not confirm"),
        ("chain_id", 1, "chain id"),
        ("block_hash", None, "the proof says none"),
    ],
)
def test_hostile__bad_anchor_sections_fail_cleanly_on_chain(
    anchored: tuple[Chain, AnchorContract, dict[str, Any]], field: str, value: Any, says: str
) -> None:
    _chain, c, good = anchored
    proof = copy.deepcopy(good)
    proof["anchor"][field] = value
    checks = verify_proof(proof, contract=c)
    chain_check = checks[-1]
    assert chain_check.name == "chain" and not chain_check.ok
    assert says in chain_check.detail, chain_check.detail


def test_hostile__a_proof_that_is_not_a_proof(anchored: tuple[Chain, AnchorContract, dict[str, Any]]) -> None:
    for proof in ({}, {"format": "edge-agent/anchor-proof/1"}, {"format": "something/else", "record": {}}):
        assert not all(c.ok for c in verify_proof(proof))  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["leaf_index", "tree_size"])
def test_hostile__an_infinite_index_is_a_failed_root_check(
    anchored: tuple[Chain, AnchorContract, dict[str, Any]], field: str
) -> None:
    # found by the property test above: json reads 1e999 as inf, and int(inf) raises OverflowError
    _chain, _contract, proof = anchored
    bad = json.loads(json.dumps(proof).replace(f'"{field}": {proof[field]}', f'"{field}": 1e999'))
    assert bad[field] == float("inf")
    root = next(c for c in verify_proof(bad) if c.name == "root")
    assert not root.ok and "OverflowError" in root.detail
