"""Central-side verification of a device's record stream: signatures, hashes, links, seq, gaps, forks."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.spine.gaps import read_gap
from edge_agent.spine.keys import key_id_for
from edge_agent.spine.records import GENESIS_PREV, check_record, parse_line, verify_detached

FAIL = "fail"
INFO = "info"


@dataclass(frozen=True)
class Finding:
    level: str  # "fail" breaks the stream's integrity; "info" is worth knowing (signed gap, resent duplicate)
    # bad_signature | altered | malformed | unknown_key | broken_link | hole | signed_gap | duplicate
    # | fork | out_of_order | bad_genesis | start
    what: str
    seq: int | None
    message: str

    def line(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "stream"
        return f"{self.level.upper():4} {where}: {self.what}: {self.message}"


@dataclass
class Verifier:
    """Collects records (in any order) and checks them; `strict_order` for exports, where order is seq order."""

    public_keys: list[Ed25519PublicKey]
    strict_order: bool = False
    device: str | None = None
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    received: int = 0
    # Where the stream is expected to start (records before it were checked earlier); None: at seq 1.
    from_seq: int | None = None
    # A signed checkpoint vouches for the stream (verify --checkpoint): a later start is not a failure.
    anchored_start: bool = False
    # Read live from a broker (verify --mqtt): a subscriber never sees what was published before it joined,
    # so without from_seq the stream starts at the lowest seq seen, and says so.
    live: bool = False
    # Check only this device's records (verify --device); the others are counted in other_devices. Live, the
    # first device seen is the one checked when none is named: a `+` in the topic brings a fleet's records.
    only_device: str | None = None
    other_devices: Counter[str] = field(default_factory=Counter)
    _last_seq_seen: int | None = None

    def add_line(self, line: str | bytes, where: str = "") -> None:
        text = line.strip() if isinstance(line, str) else line.strip().decode("utf-8", "replace")
        if not text:
            return
        try:
            rec = parse_line(text)
        except ValueError as exc:
            self.findings.append(Finding(FAIL, "malformed", None, f"{where}{exc}"))
            return
        self.add(rec, where)

    def add(self, rec: dict[str, Any], where: str = "") -> None:
        dev = rec.get("device")
        chosen = self.only_device or (self.device if self.live else None)
        if chosen is not None and dev != chosen:
            self.other_devices[str(dev)] += 1
            return
        self.received += 1
        seq = rec.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            self.findings.append(Finding(FAIL, "malformed", None, f"{where}record without an integer seq"))
            return
        if self.device is None:
            self.device = rec.get("device")
        elif rec.get("device") != self.device:
            self.findings.append(
                Finding(
                    FAIL,
                    "malformed",
                    seq,
                    f"{where}record of device {rec.get('device')!r} in a stream of {self.device!r}"
                    " (verify one device at a time: --device ID)",
                )
            )
            return
        if self.strict_order and self._last_seq_seen is not None and seq <= self._last_seq_seen:
            self.findings.append(
                Finding(
                    FAIL, "out_of_order", seq, f"{where}comes after seq {self._last_seq_seen} (expected ascending seq)"
                )
            )
        self._last_seq_seen = seq if self._last_seq_seen is None else max(seq, self._last_seq_seen)
        old = self.records.get(seq)
        if old is None:
            self.records[seq] = rec
        elif old.get("hash") == rec.get("hash") and old.get("sig") == rec.get("sig"):
            self.findings.append(
                Finding(FAIL if self.strict_order else INFO, "duplicate", seq, f"{where}received again (same hash)")
            )
        else:
            self.findings.append(Finding(FAIL, "fork", seq, f"{where}two different records carry this seq"))

    def finish(self) -> list[Finding]:  # noqa: PLR0912, PLR0915 - the checks read best in one pass
        """Check the collected records in seq order; returns all findings (also kept in .findings)."""
        keys = {key_id_for(k): k for k in self.public_keys}
        seqs = sorted(self.records)
        gap_hashes: dict[int, str] = {}
        declared: list[tuple[int, int]] = []  # seq ranges a signed gap declares (with or without hashes)
        sound: dict[int, bool] = {}

        def is_declared(s: int) -> bool:
            return s in gap_hashes or any(a <= s <= b for a, b in declared)

        # First pass: each record on its own, following key rotations in seq order.
        retired: dict[str, int] = {}  # key id -> seq of the rotation that retired it
        for seq in seqs:
            rec = self.records[seq]
            kid = rec.get("key")
            key = keys.get(kid) if isinstance(kid, str) else None
            problems = check_record(rec, key)
            if key is not None and seq > retired.get(rec["key"], seq):
                problems.append(f"signed by key {rec['key']}, which the device retired at seq {retired[rec['key']]}")
            if key is None and not any(p.startswith("missing") for p in problems):
                self.findings.append(
                    Finding(
                        FAIL,
                        "unknown_key",
                        seq,
                        f"signed by key {rec.get('key')!r}, which is neither given nor announced",
                    )
                )
            for p in problems:
                what = (
                    "bad_signature"
                    if p == "bad signature"
                    else "altered"
                    if p.startswith("hash")
                    else "retired_key"
                    if "retired" in p
                    else "malformed"
                )
                self.findings.append(Finding(FAIL, what, seq, p))
            ok = not problems and key is not None
            sound[seq] = ok
            if not ok:
                continue
            body = rec.get("body")
            if not isinstance(body, dict):
                body = {}
            if rec["kind"] == "gap":
                self._read_gap(seq, body, gap_hashes, declared)
            elif rec["kind"] == "key_rotation":
                new = _public_from_body(body)
                if new is not None:
                    keys[key_id_for(new)] = new
                    retired.setdefault(rec["key"], seq)
        # Second pass: the chain.
        for i, seq in enumerate(seqs):
            rec = self.records[seq]
            if "prev" not in rec:
                continue
            if seq == 1:
                if rec["prev"] != GENESIS_PREV:
                    self.findings.append(Finding(FAIL, "bad_genesis", 1, "first record's prev is not 64 zeros"))
                continue
            before = self.records.get(seq - 1)
            if before is not None:
                if rec["prev"] != before.get("hash"):
                    self.findings.append(
                        Finding(FAIL, "broken_link", seq, f"prev does not match the hash of seq {seq - 1}")
                    )
                continue
            if i == 0:
                lo = seq
                while lo > 1 and is_declared(lo - 1):
                    lo -= 1
                self._check_start(lo)
                if lo == seq:
                    continue
            else:
                lo = seqs[i - 1] + 1
            missing = range(lo, seq)
            signed = [s for s in missing if is_declared(s)]
            silent = [s for s in missing if not is_declared(s)]
            if signed:
                self.findings.append(
                    Finding(
                        INFO,
                        "signed_gap",
                        seq,
                        f"seq {_span(signed)} dropped by the device and declared in a signed gap record",
                    )
                )
            if silent:
                self.findings.append(
                    Finding(FAIL, "hole", seq, f"seq {_span(silent)} missing with no gap record declaring them")
                )
            if (seq - 1) in gap_hashes and rec["prev"] != gap_hashes[seq - 1]:
                self.findings.append(
                    Finding(
                        FAIL, "broken_link", seq, f"prev does not match the hash the gap record gives for seq {seq - 1}"
                    )
                )
        # A declared record that did arrive must be the one declared.
        for s, h in gap_hashes.items():
            if s in self.records and self.records[s].get("hash") != h:
                self.findings.append(Finding(FAIL, "fork", s, "differs from the hash a gap record declares for it"))
        self.findings.sort(key=lambda f: (f.seq or 0, f.level))
        return self.findings

    def _read_gap(
        self, seq: int, body: dict[str, Any], gap_hashes: dict[int, str], declared: list[tuple[int, int]]
    ) -> None:
        """Collect what a signed gap declares; a malformed one is a failure, never a traceback."""
        got = read_gap(body, seq)
        if got is None:
            self.findings.append(Finding(FAIL, "malformed", seq, "gap record: `hashes` and `ranges` must be lists"))
            return
        items, ranges = got
        gap_hashes.update((s, h) for s, (h, _kind) in items.items())
        declared.extend(ranges)

    def _check_start(self, first: int) -> None:
        """A stream that does not start at seq 1 (or --from-seq) has lost its beginning, unless vouched for."""
        if first <= 1:
            return
        if self.anchored_start or (self.from_seq is not None and first <= self.from_seq):
            self.findings.append(
                Finding(INFO, "start", first, "stream starts here (earlier records not in this input)")
            )
        elif self.from_seq is None and self.live:
            self.findings.append(
                Finding(
                    INFO,
                    "start",
                    first,
                    f"live stream: the first record seen is seq {first}; seq {_span(range(1, first))} were published "
                    f"before this subscription and are not checked (--from-seq SEQ makes a later start a failure)",
                )
            )
        elif self.from_seq is not None:
            self.findings.append(
                Finding(
                    FAIL,
                    "hole",
                    first,
                    f"seq {_span(range(self.from_seq, first))} missing: the stream was to start at {self.from_seq}",
                )
            )
        else:
            self.findings.append(
                Finding(
                    FAIL,
                    "start",
                    first,
                    f"stream starts at seq {first}: seq {_span(range(1, first))} are not in this input "
                    f"(pass --from-seq {first} if they were verified before, or --checkpoint)",
                )
            )

    @property
    def ok(self) -> bool:
        return not any(f.level == FAIL for f in self.findings)

    def others_line(self) -> str:
        """`skipped 5 record(s) of other devices: bench-2 3, bench-3 2 (...)`, or "" when none."""
        if not self.other_devices:
            return ""
        devs = ", ".join(f"{d} {n}" for d, n in sorted(self.other_devices.items()))
        return (
            f"skipped {self.other_devices.total()} record(s) of other devices: {devs}"
            " (one device is checked at a time: --device ID)"
        )

    def summary(self) -> dict[str, Any]:
        seqs = sorted(self.records)
        return {
            "device": self.device,
            "received": self.received,
            "unique": len(seqs),
            "first_seq": seqs[0] if seqs else None,
            "last_seq": seqs[-1] if seqs else None,
            "failures": sum(1 for f in self.findings if f.level == FAIL),
            "intact": self.ok,
        }


def _public_from_body(body: dict[str, Any]) -> Ed25519PublicKey | None:
    raw = body.get("new_public_key")
    if not isinstance(raw, str):
        return None
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(raw, validate=True))
    except ValueError:
        return None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _span(seqs: Iterable[int]) -> str:
    s = sorted(seqs)
    parts = []
    start = prev = s[0]
    for x in s[1:]:
        if x == prev + 1:
            prev = x
            continue
        parts.append(f"{start}-{prev}" if start != prev else str(start))
        start = prev = x
    parts.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(parts)


# ------------------------------------------- checkpoints (made by edge_agent/spine/checkpoint.py)


def _announced_keys(verifier: Verifier, given: list[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """The given keys plus every key announced by a soundly signed key_rotation record, in seq order."""
    keys = {key_id_for(k): k for k in given}
    for seq in sorted(verifier.records):
        rec = verifier.records[seq]
        if rec.get("kind") != "key_rotation":
            continue
        key = keys.get(rec.get("key", ""))
        if key is None or check_record(rec, key):
            continue
        new = _public_from_body(rec.get("body") or {})
        if new is not None:
            keys[key_id_for(new)] = new
    return keys


def check_checkpoint(  # noqa: PLR0911 - one finding per way a checkpoint can be wrong
    verifier: Verifier, checkpoint: dict[str, Any], keys: list[Ed25519PublicKey]
) -> list[Finding]:
    """Compare a device's signed checkpoint with the stream: a stream ending before it is a truncated tail."""
    out: list[Finding] = []
    cp_seq = checkpoint.get("seq") if isinstance(checkpoint, dict) else None
    if not isinstance(checkpoint, dict) or not isinstance(cp_seq, int) or isinstance(cp_seq, bool):
        return [Finding(FAIL, "bad_checkpoint", None, "checkpoint: expected an object with an integer seq")]
    missing = [f for f in ("device", "head_hash", "ts", "key", "sig") if not isinstance(checkpoint.get(f), str)]
    if missing:
        what = f"checkpoint: missing or non-string field(s) {', '.join(missing)}"
        return [Finding(FAIL, "bad_checkpoint", cp_seq, what)]
    known = _announced_keys(verifier, keys)
    public = known.get(checkpoint["key"])
    if public is None:
        return [
            Finding(
                FAIL,
                "bad_checkpoint",
                cp_seq,
                f"checkpoint signed by key {checkpoint['key']!r}, which is neither given nor announced",
            )
        ]
    if not verify_detached(public, checkpoint, checkpoint["sig"]):
        return [Finding(FAIL, "bad_checkpoint", cp_seq, "checkpoint signature does not verify")]
    if verifier.device is not None and checkpoint["device"] != verifier.device:
        return [
            Finding(
                FAIL,
                "bad_checkpoint",
                cp_seq,
                f"checkpoint of device {checkpoint['device']!r}, stream of {verifier.device!r}",
            )
        ]
    last = max(verifier.records) if verifier.records else 0
    if last < cp_seq:
        out.append(
            Finding(
                FAIL,
                "truncated_tail",
                cp_seq,
                f"stream ends at seq {last} but the device's checkpoint of {checkpoint['ts']} is at seq "
                f"{cp_seq}: records {last + 1}-{cp_seq} are missing",
            )
        )
        return out
    rec = verifier.records.get(cp_seq)
    if rec is not None and rec.get("hash") != checkpoint["head_hash"]:
        out.append(Finding(FAIL, "fork", cp_seq, "record differs from the head hash the device's checkpoint gives"))
    else:
        out.append(Finding(INFO, "checkpoint", cp_seq, f"stream reaches the device's checkpoint of {checkpoint['ts']}"))
    return out


def check_live_checkpoint(verifier: Verifier, checkpoint: Any, keys: list[Ed25519PublicKey]) -> list[Finding]:
    """A checkpoint seen on a live subscription (.../checkpoint): signature and device always, the hash when
    its seq is among the records seen. A live reading ends when it is stopped, so a checkpoint after the last
    record seen (or before the first) is information, not a truncated tail."""
    found = check_checkpoint(verifier, checkpoint, keys)
    if any(f.what == "bad_checkpoint" for f in found) or not verifier.records:
        return found
    first, last = min(verifier.records), max(verifier.records)
    cp_seq = checkpoint["seq"]
    if first <= cp_seq <= last:
        return found
    where = "after the last" if cp_seq > last else "before the first"
    return [
        Finding(
            INFO,
            "checkpoint",
            cp_seq,
            f"the device's checkpoint of {checkpoint['ts']} is {where} record seen (seq {first}..{last}); "
            "its signature checks out, the chain was not compared with it",
        )
    ]
