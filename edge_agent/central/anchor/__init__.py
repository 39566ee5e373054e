"""Ledger anchoring: Merkle roots of verified records on an EVM consortium chain, and inclusion proofs."""
