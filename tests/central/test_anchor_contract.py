"""The Vyper contract on a real EVM: the shipped bytecode is what the source compiles to, and the contract keeps its rules."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from web3 import Web3
from web3.logs import DISCARD

from edge_agent.central.anchor.chain import (
    AnchorContract,
    AnchorError,
    ContractRefused,
    DeviceRange,
    deploy,
    device_key,
)
from edge_agent.central.anchor.contract import artifact, compile_artifact
from tests.central.anchor_support import Chain, deployed, new_chain


def _h(s: str) -> bytes:
    return hashlib.sha256(s.encode()).digest()


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return new_chain(tmp_path)


def test_contract__shipped_artifact_is_what_the_source_compiles_to() -> None:
    fresh = compile_artifact()
    shipped = artifact()
    assert fresh["source_sha256"] == shipped["source_sha256"], (
        "RecordAnchor.vy changed: run python -m edge_agent.central.anchor.contract"
    )
    assert fresh["bytecode"] == shipped["bytecode"]
    assert fresh["bytecode_runtime"] == shipped["bytecode_runtime"]
    assert fresh["abi"] == shipped["abi"]


def test_contract__deploy_sets_members_and_k(chain: Chain) -> None:
    c = deployed(chain, k=2)
    assert c.k() == 2
    assert all(c.is_member(m.address) for m in chain.members)
    assert not c.is_member(chain.outsider.address)
    assert c.contract.functions.member_count().call() == 3


@pytest.mark.parametrize(
    ("members", "k", "reason"),
    [
        ([], 1, "no members"),
        (None, 0, "k must be at least 1"),
        (None, 4, "k exceeds the number of members"),
        ("dup", 1, "member listed twice"),
    ],
)
def test_contract__deploy_refuses_bad_membership(chain: Chain, members: object, k: int, reason: str) -> None:
    addrs = [m.address for m in chain.members]
    if members == "dup":
        addrs = [addrs[0], addrs[0]]
    elif members == []:
        addrs = []
    with pytest.raises(ContractRefused, match=reason):
        deploy(chain.w3, chain.members[0], addrs, k)


def test_contract__an_address_with_other_code_is_refused(chain: Chain) -> None:
    with pytest.raises(AnchorError, match="no contract there"):
        AnchorContract(chain.w3, chain.outsider.address)


def test_contract__anchor_stores_root_and_emits_event(chain: Chain) -> None:
    c = deployed(chain)
    tx = c.send_anchor(
        _h("b1"), _h("r1"), 100_000, [DeviceRange("truck-1", 1, 60_000), DeviceRange("truck-2", 1, 40_000)]
    )
    receipt = c.wait(tx, 10)
    assert receipt["status"] == 1
    found = c.find(_h("b1"))
    assert found is not None
    assert found.root == _h("r1") and found.record_count == 100_000 and found.confirmations == 1
    assert found.tx_hash == tx and found.block_number == receipt["blockNumber"]
    assert c.is_confirmed(_h("b1"))
    assert c.next_seq("truck-1") == 60_001
    assert c.contract.functions.next_seq(device_key("truck-2")).call() == 40_001
    events = c.contract.events.Anchored().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["record_count"], e["args"]["device_count"]) for e in events] == [(100_000, 2)]


def _refusal(c: AnchorContract, batch: str, root: bytes, count: int, ranges: list[DeviceRange]) -> str:
    with pytest.raises(ContractRefused) as info:
        c.send_anchor(_h(batch), root, count, ranges)
    return info.value.reason


def test_contract__refuses_bad_batches(chain: Chain) -> None:
    c = deployed(chain)
    ok = [DeviceRange("d", 1, 10)]
    c.wait(c.send_anchor(_h("first"), _h("r"), 10, ok), 10)
    assert _refusal(c, "z", bytes(32), 10, [DeviceRange("e", 1, 10)]) == "zero root"
    assert _refusal(c, "z", _h("r2"), 0, [DeviceRange("e", 1, 10)]) == "empty batch"
    assert _refusal(c, "z", _h("r2"), 1, []) == "no device ranges"
    assert _refusal(c, "first", _h("r2"), 10, [DeviceRange("e", 1, 10)]) == "batch id already used"
    assert _refusal(c, "z", _h("r2"), 10, [DeviceRange("d", 10, 20)]) == "range overlaps an earlier anchor"
    assert (
        _refusal(c, "z", _h("r2"), 10, [DeviceRange("e", 1, 5), DeviceRange("e", 5, 9)])
        == "range overlaps an earlier anchor"
    )
    assert _refusal(c, "z", _h("r2"), 12, [DeviceRange("e", 1, 10)]) == "more records than the ranges hold"
    assert (
        _refusal(c, "z", _h("r2"), 1, [DeviceRange("e", 1, 1), DeviceRange("f", 1, 1)]) == "fewer records than devices"
    )
    assert _refusal(c, "z", _h("r2"), 1, [DeviceRange("e", 0, 0)]) == "seq starts at 1"
    assert _refusal(c, "z", _h("r2"), 1, [DeviceRange("e", 5, 4)]) == "range ends before it starts"
    # the next range of device d is fine
    assert c.wait(c.send_anchor(_h("second"), _h("r2"), 5, [DeviceRange("d", 11, 15)]), 10)["status"] == 1


def test_contract__a_non_member_is_refused_even_when_it_sends_the_transaction(chain: Chain) -> None:
    c = deployed(chain)
    stranger = AnchorContract(chain.w3, c.address, chain.outsider)
    assert _refusal(stranger, "b", _h("r"), 1, [DeviceRange("d", 1, 1)]) == "not a member"
    # Skip the pre-flight call: the mined transaction itself fails and changes nothing.
    fn = c.contract.functions.anchor(_h("b"), _h("r"), 1, [(device_key("d"), 1, 1)])
    tx = fn.build_transaction(
        {
            "from": chain.outsider.address,
            "gas": 300_000,
            "nonce": chain.w3.eth.get_transaction_count(chain.outsider.address),
            "chainId": chain.w3.eth.chain_id,
        }
    )
    tx_hash = chain.w3.eth.send_raw_transaction(chain.outsider.sign_transaction(tx).raw_transaction)
    assert chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)["status"] == 0
    assert c.find(_h("b")) is None
    assert c.contract.functions.batch_count().call() == 0


def test_contract__k_of_n_confirms_only_at_k_identical_roots(chain: Chain) -> None:
    c = deployed(chain, k=2)
    a, b, third = (AnchorContract(chain.w3, c.address, m) for m in chain.members)
    a.wait(a.send_anchor(_h("b"), _h("root"), 3, [DeviceRange("d", 1, 3)]), 10)
    assert not a.is_confirmed(_h("b"))
    with pytest.raises(ContractRefused, match="member already endorsed this batch"):
        a.send_endorse(_h("b"), _h("root"))
    with pytest.raises(ContractRefused, match="root differs from the anchored one"):
        b.send_endorse(_h("b"), _h("another root"))
    with pytest.raises(ContractRefused, match="unknown batch id"):
        b.send_endorse(_h("nope"), _h("root"))
    stranger = AnchorContract(chain.w3, c.address, chain.outsider)
    with pytest.raises(ContractRefused, match="not a member"):
        stranger.send_endorse(_h("b"), _h("root"))
    receipt = b.wait(b.send_endorse(_h("b"), _h("root")), 10)
    assert [
        e["args"]["confirmations"] for e in c.contract.events.Confirmed().process_receipt(receipt, errors=DISCARD)
    ] == [2]
    assert b.is_confirmed(_h("b"))
    third.wait(third.send_endorse(_h("b"), _h("root")), 10)
    assert c.batch(_h("b"))[4] == 3
    # the root as of the anchoring block stays readable at that block
    anchored_block = c.find(_h("b")).block_number  # type: ignore[union-attr]
    assert c.root_at(_h("b"), anchored_block) == _h("root")
    assert c.root_at(_h("b"), anchored_block - 1) == bytes(32)


def test_contract__gas_for_a_full_batch_of_256_devices(chain: Chain) -> None:
    c = deployed(chain)
    ranges = [DeviceRange(f"truck-{i:03d}", 1, 400) for i in range(256)]
    receipt = c.wait(c.send_anchor(_h("big"), _h("r"), 102_400, ranges), 30)
    assert receipt["status"] == 1
    assert receipt["gasUsed"] < 15_000_000, receipt["gasUsed"]
    assert Web3.to_checksum_address(receipt["to"]) == c.address
