# pragma version 0.4.3
"""
@title edge-agent record anchor
@notice Merkle roots (RFC 9162) of verified device records, written only by consortium members.
        A batch is confirmed when k of the n members have submitted the same root for it.
@dev Devices are named by SHA-256 of their UTF-8 id. Each device's anchored seqs only move
     forward: a batch whose range for a device starts at or below what an earlier batch covered
     is refused, so no record can be anchored twice under different roots.
"""

MAX_MEMBERS: constant(uint256) = 32
# One batch names at most this many devices; the anchor splits larger fleets into more batches.
# Each range costs one storage write (about 22,000 gas the first time a device is seen).
MAX_RANGES: constant(uint256) = 256


struct SeqRange:
    device: bytes32
    first_seq: uint64
    last_seq: uint64


struct Batch:
    root: bytes32
    record_count: uint64
    submitter: address
    anchored_block: uint256
    confirmations: uint256


event Anchored:
    batch_id: indexed(bytes32)
    root: indexed(bytes32)
    member: indexed(address)
    record_count: uint64
    device_count: uint256


event Endorsed:
    batch_id: indexed(bytes32)
    root: indexed(bytes32)
    member: indexed(address)
    confirmations: uint256


event Confirmed:
    batch_id: indexed(bytes32)
    root: indexed(bytes32)
    confirmations: uint256


is_member: public(HashMap[address, bool])
member_count: public(uint256)
k: public(uint256)
batches: public(HashMap[bytes32, Batch])
endorsed: public(HashMap[bytes32, HashMap[address, bool]])
# Per device: the first seq not yet covered by any batch.
next_seq: public(HashMap[bytes32, uint64])
batch_count: public(uint256)


@deploy
def __init__(members: DynArray[address, MAX_MEMBERS], k: uint256):
    assert len(members) > 0, "no members"
    assert k >= 1, "k must be at least 1"
    assert k <= len(members), "k exceeds the number of members"
    for m: address in members:
        assert m != empty(address), "zero address as member"
        assert not self.is_member[m], "member listed twice"
        self.is_member[m] = True
    self.member_count = len(members)
    self.k = k


@external
def anchor(batch_id: bytes32, root: bytes32, record_count: uint64, ranges: DynArray[SeqRange, MAX_RANGES]):
    """
    @notice Record a batch's root; the sender's submission is its first endorsement.
    """
    assert self.is_member[msg.sender], "not a member"
    assert batch_id != empty(bytes32), "zero batch id"
    assert root != empty(bytes32), "zero root"
    assert record_count > 0, "empty batch"
    assert len(ranges) > 0, "no device ranges"
    assert convert(record_count, uint256) >= len(ranges), "fewer records than devices"
    assert self.batches[batch_id].root == empty(bytes32), "batch id already used"
    span: uint256 = 0
    for r: SeqRange in ranges:
        assert r.device != empty(bytes32), "zero device"
        assert r.first_seq >= 1, "seq starts at 1"
        assert r.first_seq <= r.last_seq, "range ends before it starts"
        # Also catches the same device twice in one batch: the first range has moved next_seq on.
        assert r.first_seq >= self.next_seq[r.device], "range overlaps an earlier anchor"
        self.next_seq[r.device] = r.last_seq + 1
        span += convert(r.last_seq - r.first_seq, uint256) + 1
    assert convert(record_count, uint256) <= span, "more records than the ranges hold"
    self.batches[batch_id] = Batch(
        root=root,
        record_count=record_count,
        submitter=msg.sender,
        anchored_block=block.number,
        confirmations=1,
    )
    self.endorsed[batch_id][msg.sender] = True
    self.batch_count += 1
    log Anchored(batch_id=batch_id, root=root, member=msg.sender, record_count=record_count, device_count=len(ranges))
    if self.k == 1:
        log Confirmed(batch_id=batch_id, root=root, confirmations=1)


@external
def endorse(batch_id: bytes32, root: bytes32):
    """
    @notice Another member's submission of the same root for an anchored batch.
    """
    assert self.is_member[msg.sender], "not a member"
    b: Batch = self.batches[batch_id]
    assert b.root != empty(bytes32), "unknown batch id"
    assert b.root == root, "root differs from the anchored one"
    assert not self.endorsed[batch_id][msg.sender], "member already endorsed this batch"
    self.endorsed[batch_id][msg.sender] = True
    n: uint256 = b.confirmations + 1
    self.batches[batch_id].confirmations = n
    log Endorsed(batch_id=batch_id, root=root, member=msg.sender, confirmations=n)
    if n == self.k:
        log Confirmed(batch_id=batch_id, root=root, confirmations=n)


@view
@external
def root_of(batch_id: bytes32) -> bytes32:
    return self.batches[batch_id].root


@view
@external
def is_confirmed(batch_id: bytes32) -> bool:
    b: Batch = self.batches[batch_id]
    return b.root != empty(bytes32) and b.confirmations >= self.k
