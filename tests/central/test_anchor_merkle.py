"""The anchor's Merkle tree gives RFC 6962's published roots and paths, agrees with pymerkle, and rejects bent paths."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymerkle import InmemoryTree

from edge_agent.central.anchor.merkle import (
    MerkleTree,
    ProofError,
    leaf_hash,
    record_leaf,
    root_from_path,
)

# The Certificate Transparency reference inputs and tree heads for sizes 1..8 (RFC 6962 test data,
# as used by every CT implementation's test suite).
CT_INPUTS = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, audit path) from the same reference data.
CT_PATHS = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (0, 1, []),
]


def test_merkle__rfc6962_roots_for_sizes_1_to_8() -> None:
    leaves = [leaf_hash(x) for x in CT_INPUTS]
    for n in range(1, 9):
        assert MerkleTree(leaves[:n]).root.hex() == CT_ROOTS[n - 1], f"size {n}"


@pytest.mark.parametrize(("index", "size", "path"), CT_PATHS)
def test_merkle__rfc6962_audit_paths(index: int, size: int, path: list[str]) -> None:
    leaves = [leaf_hash(x) for x in CT_INPUTS[:size]]
    tree = MerkleTree(leaves)
    assert [p.hex() for p in tree.audit_path(index)] == path
    assert root_from_path(leaves[index], index, size, [bytes.fromhex(p) for p in path]).hex() == CT_ROOTS[size - 1]


def _record_hashes(n: int) -> list[str]:
    return [hashlib.sha256(f"record {i}".encode()).hexdigest() for i in range(n)]


@given(st.integers(min_value=1, max_value=70))
def test_merkle__every_path_in_every_size_leads_to_the_root(n: int) -> None:
    hashes = _record_hashes(n)
    tree = MerkleTree.from_record_hashes(hashes)
    for i, h in enumerate(hashes):
        assert root_from_path(record_leaf(h), i, n, tree.audit_path(i)) == tree.root


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 100, 1025])
def test_merkle__same_root_and_paths_as_pymerkle(n: int) -> None:
    hashes = _record_hashes(n)
    ours = MerkleTree.from_record_hashes(hashes)
    theirs = InmemoryTree(algorithm="sha256")
    for h in hashes:
        theirs.append_entry(bytes.fromhex(h))
    assert theirs.get_size() == n
    assert ours.root == theirs.get_root()
    for i in {0, n // 2, n - 1}:
        # pymerkle numbers leaves from 1 and puts the leaf itself first on its path
        proof = theirs.prove_inclusion(i + 1).serialize()["path"]
        assert [p.hex() for p in ours.audit_path(i)] == proof[1:]


def test_merkle__a_changed_leaf_or_sibling_gives_another_root() -> None:
    hashes = _record_hashes(9)
    tree = MerkleTree.from_record_hashes(hashes)
    path = tree.audit_path(4)
    other_leaf = record_leaf(_record_hashes(10)[9])
    assert root_from_path(other_leaf, 4, 9, path) != tree.root
    bent = [*path]
    bent[1] = bytes(32)
    assert root_from_path(record_leaf(hashes[4]), 4, 9, bent) != tree.root
    # the right path for the wrong position
    assert root_from_path(record_leaf(hashes[4]), 5, 9, path) != tree.root


def test_merkle__a_path_of_the_wrong_length_is_refused() -> None:
    hashes = _record_hashes(9)
    tree = MerkleTree.from_record_hashes(hashes)
    leaf = record_leaf(hashes[3])
    path = tree.audit_path(3)
    with pytest.raises(ProofError, match="longer than the tree is deep"):
        root_from_path(leaf, 3, 9, [*path, bytes(32)])
    with pytest.raises(ProofError, match="shorter than the tree is deep"):
        root_from_path(leaf, 3, 9, path[:-1])
    with pytest.raises(ProofError, match="outside a tree of 9"):
        root_from_path(leaf, 9, 9, path)
    with pytest.raises(ProofError, match="33 bytes"):
        root_from_path(leaf, 3, 9, [bytes(33), *path[1:]])


def test_merkle__bad_inputs() -> None:
    with pytest.raises(ValueError, match="at least one leaf"):
        MerkleTree([])
    with pytest.raises(ValueError, match="64 hex digits"):
        record_leaf("abcd")
    with pytest.raises(IndexError, match="outside a tree of 1"):
        MerkleTree([leaf_hash(b"")]).audit_path(1)
