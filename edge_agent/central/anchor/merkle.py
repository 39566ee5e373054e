"""RFC 6962 / RFC 9162 Merkle tree over record hashes: root, audit paths and their verification.

Leaf i is SHA-256(0x00 || the 32 raw bytes of record i's hash); an inner node is
SHA-256(0x01 || left || right). The tree over n leaves splits at the largest power of two below n
(RFC 9162 section 2.1.1). Built bottom-up, that is the same as carrying the last node of an odd
level up unchanged, which is what `MerkleTree` does: one list of digests per level, so a tree of a
million leaves is about 2 million SHA-256 calls and 64 MB of digests, and every audit path is a
walk up the levels with no hashing at all.

pymerkle implements the same tree; tests/central/test_anchor_merkle.py checks both agree, and
benchmarks/bench_anchor.py compares their cost. We keep our own because the anchor builds a
tree per batch from hashes already in the database, and pymerkle's append-one-entry API costs
about ten times as much per leaf (benchmarks/results/anchor.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
DIGEST_SIZE = 32


class ProofError(ValueError):
    """An audit path that does not fit the tree it claims to be from."""


def leaf_hash(record_hash: bytes) -> bytes:
    """RFC 9162 leaf hash of one record: SHA-256(0x00 || record hash bytes)."""
    return hashlib.sha256(LEAF_PREFIX + record_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def record_leaf(record_hash_hex: str) -> bytes:
    """Leaf hash of a record from its 64-hex `hash` field; ValueError for anything else."""
    raw = bytes.fromhex(record_hash_hex)
    if len(raw) != DIGEST_SIZE:
        raise ValueError(f"record hash: expected 64 hex digits, got {len(record_hash_hex)} characters")
    return leaf_hash(raw)


class MerkleTree:
    """A whole tree held as levels of digests; build once per batch, then ask for paths."""

    __slots__ = ("levels",)

    def __init__(self, leaves: Sequence[bytes]) -> None:
        """`leaves` are leaf hashes (see `leaf_hash`), in leaf-index order; at least one."""
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        sha = hashlib.sha256
        level = list(leaves)
        levels = [level]
        while len(level) > 1:
            # Local names and one bytes concatenation per node: this loop is the anchor's hot path.
            nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            levels.append(nxt)
            level = nxt
        self.levels = levels

    @classmethod
    def from_record_hashes(cls, record_hashes_hex: Sequence[str]) -> MerkleTree:
        sha = hashlib.sha256
        fromhex = bytes.fromhex
        return cls([sha(b"\x00" + fromhex(h)).digest() for h in record_hashes_hex])

    @property
    def size(self) -> int:
        return len(self.levels[0])

    @property
    def root(self) -> bytes:
        return self.levels[-1][0]

    def audit_path(self, index: int) -> list[bytes]:
        """RFC 9162 inclusion proof for leaf `index`: sibling digests from the leaf up to the root."""
        if not 0 <= index < self.size:
            raise IndexError(f"leaf index {index} outside a tree of {self.size}")
        path = []
        i = index
        for level in self.levels[:-1]:
            sibling = i ^ 1
            # An odd level's last node has no sibling: it is carried up and adds nothing to the path.
            if sibling < len(level):
                path.append(level[sibling])
            i >>= 1
        return path


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root an audit path leads to (RFC 9162 section 2.1.3.2); ProofError when it cannot fit.

    Compare the result with the root you trust; this function only checks that the path has the
    shape a tree of `size` leaves gives leaf `index`.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} outside a tree of {size}")
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if len(p) != DIGEST_SIZE:
            raise ProofError(f"audit path entry of {len(p)} bytes, expected {DIGEST_SIZE}")
        if sn == 0:
            raise ProofError("audit path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("audit path is shorter than the tree is deep")
    return r


@dataclass(frozen=True, slots=True)
class Inclusion:
    """One leaf's place in a tree: enough, with the leaf, to recompute the root."""

    index: int
    size: int
    path: tuple[bytes, ...]
    root: bytes

    def verify(self, leaf: bytes) -> bool:
        try:
            return root_from_path(leaf, self.index, self.size, self.path) == self.root
        except ProofError:
            return False
