"""Inclusion proofs: one self-contained JSON document per record, and the checks anyone can run on it.

A proof holds the record exactly as the device signed it, the device's public key, the leaf's
index, the audit path, the root, and where the root was anchored (chain id, contract, transaction,
block number and hash). Checking it needs no trust in central: the signature ties the record to
the device key, the path ties it to the root, and the chain (asked directly, with --rpc) says the
contract held that root at that block.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from web3.exceptions import Web3Exception

from edge_agent.central.anchor.chain import AnchorContract, AnchorError, batch_id_for
from edge_agent.central.anchor.merkle import MerkleTree, ProofError, record_leaf, root_from_path
from edge_agent.central.anchor.store import ANCHORED, batch_leaf_hashes, get_batch, leaf_of
from edge_agent.central.db import Database
from edge_agent.spine.keys import key_id_for
from edge_agent.spine.records import check_record

PROOF_FORMAT = "edge-agent/anchor-proof/1"


class ProofNotAvailable(AnchorError):
    """No proof can be made for this record (unknown, not anchored yet, or the database disagrees with itself)."""


def build_proof(db: Database, device: str, seq: int, *, tree: MerkleTree | None = None) -> dict[str, Any]:
    """The proof for (device, seq) from the central database; `tree` reuses a batch's tree already built."""
    row = db.query_one("SELECT record, hash, key_id FROM records WHERE device = ? AND seq = ?", (device, seq))
    if row is None:
        raise ProofNotAvailable(f"device {device!r} seq {seq}: no such record in the central database")
    where = leaf_of(db, device, seq)
    if where is None:
        raise ProofNotAvailable(
            f"device {device!r} seq {seq}: not in any batch yet (not verified, or verified since the last anchor run)"
        )
    batch_id, index = where
    batch = get_batch(db, batch_id)
    if batch is None or batch.status != ANCHORED:
        status = batch.status if batch else "missing"
        raise ProofNotAvailable(
            f"device {device!r} seq {seq}: its batch {batch_id[:16]} is {status}, not on chain yet; "
            "run `central anchor` and ask again"
        )
    record = json.loads(str(row[0]))
    if tree is None or tree.size != batch.record_count:
        tree = MerkleTree.from_record_hashes(batch_leaf_hashes(db, batch_id))
    if tree.root.hex() != batch.root:
        raise ProofNotAvailable(f"batch {batch_id}: its leaves in the database no longer give the anchored root")
    if tree.levels[0][index] != record_leaf(str(row[1])):
        raise ProofNotAvailable(f"device {device!r} seq {seq}: the stored record's hash is not the anchored leaf")
    key = db.query_one(
        "SELECT pubkey FROM device_keys WHERE device = ? AND key_id = ?", (device, str(row[2]))
    ) or db.query_one("SELECT pubkey FROM devices WHERE device = ? AND key_id = ?", (device, str(row[2])))
    return {
        "format": PROOF_FORMAT,
        "record": record,
        "device_public_key": str(key[0]) if key else None,  # raw Ed25519, base64
        "leaf_index": index,
        "tree_size": tree.size,
        # Base64 per entry, as RFC 6962's JSON API does: a 20-entry path stays under 1 KB.
        "audit_path": [base64.b64encode(p).decode("ascii") for p in tree.audit_path(index)],
        "root": batch.root,
        "anchor": {
            "chain_id": batch.chain_id,
            "contract": batch.contract,
            "tx_hash": batch.tx_hash,
            "block_number": batch.block_number,
            "block_hash": batch.block_hash,
        },
    }


@dataclass(frozen=True, slots=True)
class Check:
    name: str  # "signature", "root", "chain"
    ok: bool
    detail: str


def public_key_from_b64(raw_b64: str) -> Ed25519PublicKey:
    raw = base64.b64decode(raw_b64, validate=True)
    return Ed25519PublicKey.from_public_bytes(raw)


def check_signature(proof: dict[str, Any], public: Ed25519PublicKey | None) -> Check:
    record = proof.get("record")
    if not isinstance(record, dict):
        return Check("signature", False, "the proof has no record object")
    if public is None:
        raw = proof.get("device_public_key")
        if not raw:
            return Check("signature", False, "no device public key in the proof; pass one with --pubkey")
        try:
            public = public_key_from_b64(str(raw))
        except ValueError as exc:
            return Check("signature", False, f"device_public_key is not a base64 Ed25519 public key ({exc})")
    kid = key_id_for(public)
    if record.get("key") != kid:
        return Check("signature", False, f"record is signed by key {record.get('key')}, the public key given is {kid}")
    problems = check_record(record, public)
    if problems:
        return Check("signature", False, "; ".join(problems))
    return Check("signature", True, f"device {record['device']} seq {record['seq']}, signed by {kid}")


def check_root(proof: dict[str, Any]) -> Check:
    try:
        leaf = record_leaf(str(proof["record"]["hash"]))
        path = [base64.b64decode(str(p), validate=True) for p in proof["audit_path"]]
        index, size = int(proof["leaf_index"]), int(proof["tree_size"])
        root = bytes.fromhex(str(proof["root"]))
        got = root_from_path(leaf, index, size, path)
    except (KeyError, TypeError, ValueError, OverflowError, binascii.Error) as exc:  # Overflow: int(inf)
        return Check("root", False, f"malformed proof ({exc.__class__.__name__}: {exc})")
    if got != root:
        return Check("root", False, f"the audit path leads to {got.hex()}, not to the proof's root {root.hex()}")
    return Check("root", True, f"leaf {index} of {size} leads to root {root.hex()}")


def check_chain(proof: dict[str, Any], contract: AnchorContract) -> Check:
    """The contract (with the shipped code) held the proof's root for its batch at the proof's block."""
    try:
        return _check_chain(proof, contract)
    except (Web3Exception, OSError, ValueError, TypeError, KeyError) as exc:
        # A block or transaction the node does not have, an RPC error, a dropped connection: not verified.
        return Check("chain", False, f"the node could not confirm it ({exc.__class__.__name__}: {exc})")


def _check_chain(proof: dict[str, Any], contract: AnchorContract) -> Check:  # noqa: PLR0911 - one exit per check
    try:
        a = proof["anchor"]
        block_number = int(a["block_number"])
        if block_number < 0:
            raise ValueError(f"block_number {block_number} is negative")
        root = bytes.fromhex(str(proof["root"]))
        batch_id = batch_id_for(root)
        block_hash = str(a["block_hash"]).lower()
        tx_hash = str(a["tx_hash"])
        chain_id = int(a["chain_id"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(inf)
        return Check("chain", False, f"malformed anchor section ({exc.__class__.__name__}: {exc})")
    w3 = contract.w3
    if int(w3.eth.chain_id) != chain_id:
        return Check("chain", False, f"the endpoint serves chain id {w3.eth.chain_id}, the proof is for {chain_id}")
    try:
        contract.check_code(block_number)
    except AnchorError as exc:
        return Check("chain", False, str(exc))
    block = w3.eth.get_block(block_number)
    got_hash = "0x" + bytes(block["hash"]).hex().removeprefix("0x")
    if got_hash != block_hash:
        return Check("chain", False, f"block {block_number} has hash {got_hash}, the proof says {block_hash}")
    held = contract.root_at(batch_id, block_number)
    if held != root:
        return Check(
            "chain",
            False,
            f"at block {block_number} the contract holds root {held.hex()} for batch {batch_id.hex()[:16]}, "
            f"not {root.hex()}",
        )
    receipt = w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    if receipt["status"] != 1 or int(receipt["blockNumber"]) != block_number:
        return Check("chain", False, f"transaction {tx_hash} is not the successful anchor in block {block_number}")
    if str(receipt["to"]).lower() != contract.address.lower():
        return Check("chain", False, f"transaction {tx_hash} was sent to {receipt['to']}, not to {contract.address}")
    k = contract.k()
    confirmations = contract.batch(batch_id)[4]
    if confirmations < k:
        return Check(
            "chain",
            False,
            f"root anchored at block {block_number} but confirmed by {confirmations} of the {k} members needed",
        )
    return Check(
        "chain",
        True,
        f"contract {contract.address} holds the root since block {block_number}, confirmed by {confirmations} of k={k}",
    )


def verify_proof(
    proof: dict[str, Any], *, public: Ed25519PublicKey | None = None, contract: AnchorContract | None = None
) -> list[Check]:
    """Signature, root, and (with a contract on a live endpoint) the chain; every Check must be ok."""
    if proof.get("format") != PROOF_FORMAT:
        return [Check("format", False, f"expected format {PROOF_FORMAT!r}, got {proof.get('format')!r}")]
    checks = [check_signature(proof, public), check_root(proof)]
    if contract is not None:
        checks.append(check_chain(proof, contract))
    return checks


__all__ = ["PROOF_FORMAT", "Check", "ProofError", "ProofNotAvailable", "build_proof", "verify_proof"]
