"""Talking to the anchoring contract over any EVM JSON-RPC endpoint: deploy, anchor, endorse, look up.

Transactions are signed here with eth-account and sent raw, so the node never holds a key
(Besu, GoQuorum and public nodes all accept `eth_sendRawTransaction`). Before each transaction
the same call is run as `eth_call`, so a refusal comes back with the contract's reason instead of
a mined failure.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError, TimeExhausted
from web3.middleware import ExtraDataToPOAMiddleware

from edge_agent.central.anchor.contract import artifact
from edge_agent.errors import EdgeAgentError

log = logging.getLogger(__name__)

ZERO32 = bytes(32)
Block = int | Literal["latest"]


class AnchorError(EdgeAgentError):
    """The chain, the contract or the anchor's own records cannot do what was asked."""


class ContractRefused(AnchorError):
    """The contract rejected a call; `reason` is its revert message."""

    def __init__(self, action: str, reason: str) -> None:
        super().__init__(f"the anchor contract refused {action}: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DeviceRange:
    """The seqs of one device a batch covers, as the contract sees them."""

    device: str
    first_seq: int
    last_seq: int

    @property
    def device_key(self) -> bytes:
        return device_key(self.device)


@dataclass(frozen=True, slots=True)
class OnChainAnchor:
    """A batch as the chain holds it, with the transaction that anchored it."""

    batch_id: bytes
    root: bytes
    record_count: int
    submitter: str
    confirmations: int
    tx_hash: str
    block_number: int
    block_hash: str


def batch_id_for(root: bytes) -> bytes:
    """A batch's id: SHA-256 over a domain tag and its root.

    The root fixes the leaves, and each leaf (a record hash) fixes its device and seq, so the root
    fixes the whole batch: the same batch gets the same id on every try and at every member, and a
    verifier derives the id from the root instead of taking it from the proof.
    """
    return hashlib.sha256(b"edge-agent anchor batch\n" + root).digest()


def device_key(device: str) -> bytes:
    """How the contract names a device: SHA-256 of its UTF-8 id (ids are not bounded to 32 bytes)."""
    return hashlib.sha256(device.encode("utf-8")).digest()


def connect(rpc_url: str, *, timeout_s: float = 30.0) -> Web3:
    """A Web3 on an HTTP(S) JSON-RPC endpoint; AnchorError naming the URL when it does not answer."""
    if not rpc_url.startswith(("http://", "https://")):
        raise AnchorError(
            f"--rpc {rpc_url!r}: expected an http:// or https:// JSON-RPC URL (e.g. http://127.0.0.1:8545)"
        )
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}))
    # QBFT, IBFT and Clique put validator data in a block's extraData (more than the 32 bytes
    # Ethereum mainnet allows); without this web3 refuses every block those chains return.
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    try:
        w3.eth.chain_id  # noqa: B018 - the first request tells whether anyone answers
    except Exception as exc:  # noqa: BLE001 - requests, JSON and RPC errors all mean the same here
        raise AnchorError(f"--rpc {rpc_url}: no JSON-RPC answer ({exc.__class__.__name__}: {exc})") from None
    return w3


def revert_reason(exc: BaseException) -> str:
    """The contract's message out of whichever exception the provider raised."""
    text = str(exc.args[0] if exc.args and isinstance(exc.args[0], str) else exc)
    return text.removeprefix("execution reverted: ").removeprefix("execution reverted:").strip() or text


def _refusal_or_error(action: str, exc: Exception) -> AnchorError:
    """A revert is the contract saying no (ContractRefused); anything else is the node or the link failing."""
    if isinstance(exc, ContractLogicError) or "revert" in str(exc).lower():
        return ContractRefused(action, revert_reason(exc))
    return AnchorError(f"{action}: the node could not prepare the transaction ({exc.__class__.__name__}: {exc})")


def _send(w3: Web3, account: LocalAccount, tx: dict[str, Any]) -> str:
    signed = account.sign_transaction(tx)
    return "0x" + bytes(w3.eth.send_raw_transaction(signed.raw_transaction)).hex().removeprefix("0x")


def _tx_params(w3: Web3, account: LocalAccount) -> dict[str, Any]:
    return {
        "from": account.address,
        "nonce": w3.eth.get_transaction_count(account.address, "pending"),
        "chainId": w3.eth.chain_id,
    }


def deploy(
    w3: Web3, account: LocalAccount, members: Sequence[str], k: int, *, timeout_s: float = 120.0
) -> tuple[str, str]:
    """Deploy the shipped contract with these members and k; returns (address, tx hash) once mined."""
    art = artifact()
    checked = []
    for m in members:
        if not Web3.is_address(m):
            raise AnchorError(f"--members: {m!r} is not an Ethereum address (expected 0x and 40 hex digits)")
        checked.append(Web3.to_checksum_address(m))
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    ctor = factory.constructor(checked, k)
    try:
        tx = ctor.build_transaction(_tx_params(w3, account))
    except Exception as exc:  # noqa: BLE001 - eth_estimateGas reverts arrive as provider-specific types
        raise _refusal_or_error("the deployment", exc) from None
    tx_hash = _send(w3, account, tx)
    receipt = _wait(w3, tx_hash, timeout_s)
    if receipt is None:
        raise AnchorError(f"deployment transaction {tx_hash} not mined within {timeout_s:.0f} s")
    if receipt["status"] != 1:
        raise AnchorError(f"deployment transaction {tx_hash} failed (status 0)")
    address = str(receipt["contractAddress"])
    log.info(
        "anchor contract deployed at %s by %s (tx %s, k=%d of %d)", address, account.address, tx_hash, k, len(checked)
    )
    return address, tx_hash


def _wait(w3: Web3, tx_hash: str, timeout_s: float) -> Any:
    try:
        return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s, poll_latency=0.2)  # type: ignore[arg-type]
    except TimeExhausted:
        return None


class AnchorContract:
    """The deployed contract at one address, optionally with the member account that writes to it."""

    def __init__(self, w3: Web3, address: str, account: LocalAccount | None = None, *, check_code: bool = True) -> None:
        if not Web3.is_address(address):
            raise AnchorError(f"--contract {address!r}: not an Ethereum address (expected 0x and 40 hex digits)")
        self.w3 = w3
        self.address = Web3.to_checksum_address(address)
        self.account = account
        self.contract = w3.eth.contract(address=self.address, abi=artifact()["abi"])
        if check_code:
            self.check_code()

    def check_code(self, block: Block = "latest") -> None:
        """Refuse an address whose code is not exactly the shipped contract: anything else could say anything."""
        code = bytes(self.w3.eth.get_code(self.address, block_identifier=block))
        if not code:
            raise AnchorError(f"{self.address}: no contract there (at block {block}); deploy one first")
        if code.hex() != artifact()["bytecode_runtime"].removeprefix("0x"):
            raise AnchorError(f"{self.address}: the code there is not the edge-agent RecordAnchor contract")

    # -- reads
    def k(self) -> int:
        return int(self.contract.functions.k().call())

    def is_member(self, address: str) -> bool:
        return bool(self.contract.functions.is_member(Web3.to_checksum_address(address)).call())

    def next_seq(self, device: str) -> int:
        return int(self.contract.functions.next_seq(device_key(device)).call())

    def root_at(self, batch_id: bytes, block: Block = "latest") -> bytes:
        return bytes(self.contract.functions.root_of(batch_id).call(block_identifier=block))

    def batch(self, batch_id: bytes, block: Block = "latest") -> tuple[bytes, int, str, int, int]:
        """(root, record_count, submitter, anchored_block, confirmations); root is 32 zero bytes if unknown."""
        root, count, submitter, anchored_block, confirmations = self.contract.functions.batches(batch_id).call(
            block_identifier=block
        )
        return bytes(root), int(count), str(submitter), int(anchored_block), int(confirmations)

    def is_confirmed(self, batch_id: bytes, block: Block = "latest") -> bool:
        return bool(self.contract.functions.is_confirmed(batch_id).call(block_identifier=block))

    def find(self, batch_id: bytes) -> OnChainAnchor | None:
        """The batch and its anchoring transaction if the chain has it: how a re-run learns what it sent."""
        root, count, submitter, anchored_block, confirmations = self.batch(batch_id)
        if root == ZERO32:
            return None
        logs = self.contract.events.Anchored.get_logs(
            argument_filters={"batch_id": batch_id}, from_block=anchored_block, to_block=anchored_block
        )
        if not logs:
            raise AnchorError(
                f"{self.address}: batch {batch_id.hex()} is on chain (block {anchored_block}) but the node returned "
                "no Anchored event for it; is the node pruning logs?"
            )
        ev = logs[0]
        return OnChainAnchor(
            batch_id=batch_id,
            root=root,
            record_count=count,
            submitter=submitter,
            confirmations=confirmations,
            tx_hash="0x" + bytes(ev["transactionHash"]).hex().removeprefix("0x"),
            block_number=int(ev["blockNumber"]),
            block_hash="0x" + bytes(ev["blockHash"]).hex().removeprefix("0x"),
        )

    # -- writes
    def _member(self) -> LocalAccount:
        if self.account is None:
            raise AnchorError("writing to the anchor contract needs a member key (--key)")
        return self.account

    def _transact(self, fn: Any, action: str) -> str:
        account = self._member()
        try:
            fn.call({"from": account.address})
            tx = fn.build_transaction(_tx_params(self.w3, account))
        except Exception as exc:  # noqa: BLE001 - reverts arrive as ContractLogicError or the provider's own type
            raise _refusal_or_error(action, exc) from None
        return _send(self.w3, account, tx)

    def send_anchor(self, batch_id: bytes, root: bytes, record_count: int, ranges: Sequence[DeviceRange]) -> str:
        """Send (not wait for) the anchoring transaction; returns its hash."""
        fn = self.contract.functions.anchor(
            batch_id, root, record_count, [(r.device_key, r.first_seq, r.last_seq) for r in ranges]
        )
        return self._transact(fn, f"batch {batch_id.hex()[:16]}")

    def send_endorse(self, batch_id: bytes, root: bytes) -> str:
        return self._transact(self.contract.functions.endorse(batch_id, root), f"endorsing batch {batch_id.hex()[:16]}")

    def wait(self, tx_hash: str, timeout_s: float) -> Any:
        """The receipt, or None when the transaction is not mined within timeout_s."""
        return _wait(self.w3, tx_hash, timeout_s)
