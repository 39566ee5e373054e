"""Verified ingest: check each record (signature, hash, chain) and store it once, with anomalies as evidence.

`Ingestor.process(batch)` is the whole decision for a batch of MQTT messages, in one database
transaction; the caller acknowledges the messages only after it returns (the commit). Chain state
lives in the `devices` rows, locked in device order for the batch, so any number of workers on a
shared subscription can receive one device's records out of order and still follow its chain.
Signature checks (the CPU work) run before the transaction, outside every lock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.central.db import Database
from edge_agent.central.registry import KeySpan, load_keys
from edge_agent.spine.gaps import read_gap, seq_ranges
from edge_agent.spine.keys import key_id_for, public_raw_b64
from edge_agent.spine.records import ENVELOPE_FIELDS, canonical, check_record, loads_wire
from edge_agent.spine.remote.message import MAX_RESEND_SPAN

log = logging.getLogger(__name__)

FAIL = "fail"
INFO = "info"

# What a kind of anomaly means, for `central anomalies` and the docs.
ANOMALY_KINDS = {
    "oversize": "payload larger than --max-bytes (not parsed; size and SHA-256 kept)",
    "malformed": "not UTF-8 JSON, or not a record envelope",
    "topic_mismatch": "record published under another device's (or kind's, or site's) topic",
    "unknown_device": "record from a device not in the registry",
    "revoked_device": "record signed after the device was revoked",
    "bad_signature": "Ed25519 signature does not verify with the device's key",
    "altered": "hash does not match the record's content",
    "retired_key": "signed by a key the device rotated away from, for a seq after the rotation",
    "unknown_key": "signed by a key id the device never announced",
    "fork": "two different records with one seq",
    "broken_link": "prev does not match the hash of the record before",
    "hole": "seqs missing with no signed gap record, for longer than --hole-after-s",
    "signed_gap": "the device dropped records and said so in a signed gap record (info)",
    "truncated_tail": "stored chain ends before the device's signed checkpoint",
    "replay": "old records received again long after they were stored",
    "bad_checkpoint": "checkpoint whose signature or shape does not verify",
}

_EVIDENCE_MAX = 64 * 1024  # bytes of a record kept as evidence


class Message(NamedTuple):
    """One MQTT message as received; `token` is what the transport needs to acknowledge it.

    A named tuple, not a frozen dataclass: one is made per message on paho's thread, where every
    microsecond is taken from verification.
    """

    topic: str
    payload: bytes
    received_at: float
    token: Any = None
    from_pending: bool = False


@dataclass(frozen=True, slots=True)
class Anomaly:
    device: str | None
    kind: str
    seq: int | None
    dedupe: str
    message: str
    evidence: dict[str, Any]
    severity: str = FAIL


@dataclass(slots=True)
class _Rec:
    """A record whose signature and hash verified (or that waits for its key)."""

    device: str
    seq: int
    hash: str
    prev: str
    kind: str
    ts: str
    key_id: str
    text: str
    body: Any
    signing: bytes | None  # RFC 8785 bytes when loads_wire had them, else check_record computes them
    site: str
    received_at: float
    msg: Message


@dataclass(slots=True)
class _Checkpoint:
    device: str
    site: str
    cp: dict[str, Any]
    text: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch after stage 1 (Ingestor.prepare): parsed, classified, verified where the key was cached."""

    batch: list[Message]
    recs: list[_Rec]
    cps: list[_Checkpoint]
    good: list[_Rec]  # signature and hash verified with a cached key
    deferred: list[_Rec]  # device or key id not cached: verified in commit()
    anomalies: list[Anomaly]
    verify_failures: int


@dataclass
class BatchResult:
    stored: int = 0
    duplicates: int = 0
    anomalies: list[Anomaly] = field(default_factory=list)
    rotated: set[str] = field(default_factory=set)
    lags_s: dict[str, float] = field(default_factory=dict)  # device -> ingest lag of its newest record
    record_lags_s: list[float] = field(default_factory=list)
    verify_failures: int = 0


@dataclass(frozen=True, slots=True)
class IngestSettings:
    topic_prefix: str = "edge"
    max_bytes: int = 256 * 1024
    hole_after_s: float = 300.0
    replay_window_s: float = 600.0
    # Asking devices for their holes again (central ingest --resend-key): at most once per resend_every_s
    # per hole, only after the device was heard from since the last ask, at most resend_max times.
    resend_every_s: float = 600.0
    resend_max: int = 6


@dataclass(frozen=True, slots=True)
class ResendDue:
    """A hole to ask its device for: the seqs first..last, on `<prefix>/<site>/<device>/cmd/resend`."""

    device: str
    site: str
    first_seq: int
    last_seq: int
    attempt: int


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parse_ts(ts: str) -> float | None:
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


class Ingestor:
    """Turns batches of messages into stored records and anomalies; holds a key cache, nothing else."""

    def __init__(self, db: Database, settings: IngestSettings | None = None, *, clock: Callable[[], float] = time.time):
        self.db = db
        self.s = settings or IngestSettings()
        self.clock = clock
        self._keys: dict[str, dict[str, KeySpan]] = {}
        self._prefix_levels = len(self.s.topic_prefix.split("/"))

    # ------------------------------------------------------------ topics
    def _topic(self, topic: str) -> tuple[str, str, str, str] | None:
        """(site, device, 'rec'|'checkpoint', kind) for our topics, else None."""
        parts = topic.split("/")
        n = self._prefix_levels
        if "/".join(parts[:n]) != self.s.topic_prefix:
            return None
        rest = parts[n:]
        if len(rest) == 4 and rest[2] == "rec":
            return rest[0], rest[1], "rec", rest[3]
        if len(rest) == 3 and rest[2] == "checkpoint":
            return rest[0], rest[1], "checkpoint", ""
        return None

    def use_db(self, db: Database) -> None:
        """A new connection after a failure; cached keys are dropped, as they may be what went stale."""
        self.db = db
        self._keys = {}

    # ------------------------------------------------------------ keys
    def forget_keys(self, devices: Iterable[str]) -> None:
        for d in devices:
            self._keys.pop(d, None)

    def _ensure_keys(self, devices: set[str], *, force: Iterable[str] = ()) -> None:
        want = sorted({d for d in devices if d not in self._keys} | set(force))
        if want:
            self._keys.update(load_keys(self.db, want))

    # ------------------------------------------------------------ stage 1: parse and verify, no locks
    def _classify(  # noqa: PLR0911 - one exit per way a message can be refused
        self, msg: Message, out: BatchResult
    ) -> _Rec | _Checkpoint | None:
        where = self._topic(msg.topic)
        size = len(msg.payload)
        if size > self.s.max_bytes:
            device = where[1] if where else None
            out.anomalies.append(
                Anomaly(
                    device,
                    "oversize",
                    None,
                    f"oversize:{msg.topic}:{_sha256(msg.payload)}",
                    f"{size} bytes on {msg.topic}, more than --max-bytes {self.s.max_bytes}; not parsed",
                    {"topic": msg.topic, "size": size, "sha256": _sha256(msg.payload)},
                )
            )
            return None
        if where is None:
            out.anomalies.append(self._malformed(msg, "topic is not <prefix>/<site>/<device>/rec/<kind>"))
            return None
        site, device, what, topic_kind = where
        try:
            text = msg.payload.decode("utf-8")
            # I-JSON as the device's verifier reads it: duplicate keys and absurd nesting refused;
            # a payload in the device's own encoding also gives its signing bytes in the same pass
            obj, signing = loads_wire(msg.payload, text)
        except UnicodeDecodeError:
            out.anomalies.append(self._malformed(msg, "not UTF-8", device))
            return None
        except ValueError as exc:
            out.anomalies.append(self._malformed(msg, str(exc), device))
            return None
        if not isinstance(obj, dict):
            out.anomalies.append(self._malformed(msg, f"expected a JSON object, got {type(obj).__name__}", device))
            return None
        if what == "checkpoint":
            return _Checkpoint(device, site, obj, text)
        missing = [f for f in ENVELOPE_FIELDS if f not in obj]
        seq = obj.get("seq")
        if missing or not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            why = f"missing field(s) {', '.join(missing)}" if missing else f"seq: expected an integer >= 1, got {seq!r}"
            out.anomalies.append(self._malformed(msg, why, device))
            return None
        fields = (obj["device"], obj["hash"], obj["prev"], obj["kind"], obj["ts"], obj["key"])
        if not all(isinstance(f, str) for f in fields):
            out.anomalies.append(self._malformed(msg, "device, hash, prev, kind, ts and key must be strings", device))
            return None
        if obj["device"] != device or obj["kind"] != topic_kind:
            out.anomalies.append(
                Anomaly(
                    device,
                    "topic_mismatch",
                    seq,
                    f"topic_mismatch:{msg.topic}:{obj['hash']}",
                    f"record of device {obj['device']!r}, kind {obj['kind']!r} published on {msg.topic}",
                    {"topic": msg.topic, "record_device": obj["device"], "seq": seq, "hash": obj["hash"]},
                )
            )
            return None
        return _Rec(
            device=device,
            seq=seq,
            hash=obj["hash"],
            prev=obj["prev"],
            kind=obj["kind"],
            ts=obj["ts"],
            key_id=obj["key"],
            text=text,
            body=obj,
            signing=signing,
            site=site,
            received_at=msg.received_at,
            msg=msg,
        )

    def _malformed(self, msg: Message, reason: str, device: str | None = None) -> Anomaly:
        digest = _sha256(msg.payload)
        return Anomaly(
            device,
            "malformed",
            None,
            f"malformed:{msg.topic}:{digest}",
            f"{msg.topic}: {reason}",
            {"topic": msg.topic, "size": len(msg.payload), "sha256": digest, "head": msg.payload[:200].hex()},
        )

    def _verify(self, rec: _Rec, out: BatchResult) -> str:
        """'ok', 'unknown_device', 'unknown_key' or 'refused' (anomaly added)."""
        keys = self._keys.get(rec.device)
        if not keys:
            return "unknown_device"
        span = keys.get(rec.key_id)
        if span is None:
            return "unknown_key"
        problems = check_record(rec.body, span.public, signing=rec.signing)
        if problems:
            out.verify_failures += 1
            kind = (
                "bad_signature"
                if "bad signature" in problems
                else "altered"
                if any(p.startswith("hash") for p in problems)
                else "malformed"
            )
            out.anomalies.append(
                Anomaly(
                    rec.device,
                    kind,
                    rec.seq,
                    f"{kind}:{rec.device}:{rec.seq}:{rec.hash}",
                    f"seq {rec.seq}: {'; '.join(problems)}",
                    {
                        "topic": rec.msg.topic,
                        "seq": rec.seq,
                        "hash": rec.hash,
                        "key": rec.key_id,
                        "record": rec.text[:_EVIDENCE_MAX],
                    },
                )
            )
            return "refused"
        if not span.covers(rec.seq):
            out.anomalies.append(
                Anomaly(
                    rec.device,
                    "retired_key",
                    rec.seq,
                    f"retired_key:{rec.device}:{rec.seq}:{rec.hash}",
                    f"seq {rec.seq} signed by {rec.key_id}, valid for seq {span.from_seq}-{span.to_seq}",
                    {
                        "seq": rec.seq,
                        "hash": rec.hash,
                        "key": rec.key_id,
                        "from_seq": span.from_seq,
                        "to_seq": span.to_seq,
                        "record": rec.text[:_EVIDENCE_MAX],
                    },
                )
            )
            return "refused"
        return "ok"

    # ------------------------------------------------------------ stage 2: one transaction
    def process(self, batch: list[Message]) -> BatchResult:
        """prepare() then commit(): the whole decision for one batch."""
        return self.commit(self.prepare(batch))

    def prepare(self, batch: list[Message]) -> Prepared:
        """Stage 1, the CPU work and no database: parse, classify, verify against the cached keys.

        Safe on another thread than commit() (the worker prepares the next batch while the previous
        one commits). A record whose device or key id is not cached waits for commit(), which loads
        keys; a cached key's span is checked again there, under the device's row lock.
        """
        out = BatchResult()
        recs: list[_Rec] = []
        cps: list[_Checkpoint] = []
        for msg in batch:
            got = self._classify(msg, out)
            if isinstance(got, _Rec):
                recs.append(got)
            elif isinstance(got, _Checkpoint):
                cps.append(got)
        good: list[_Rec] = []
        deferred: list[_Rec] = []
        for r in recs:
            keys = self._keys.get(r.device)
            if not keys or r.key_id not in keys:
                deferred.append(r)
            elif self._verify(r, out) == "ok":
                good.append(r)
        return Prepared(batch, recs, cps, good, deferred, out.anomalies, out.verify_failures)

    def commit(self, prep: Prepared) -> BatchResult:  # noqa: PLR0912, PLR0915 - the batch's one transaction
        """Stage 2: keys not cached, registry state, chains, storage and anomalies, in one transaction.

        May be called again with the same Prepared after a failure (nothing in `prep` is changed).
        """
        out = BatchResult(anomalies=list(prep.anomalies), verify_failures=prep.verify_failures)
        now = self.clock()
        recs, cps = prep.recs, prep.cps
        self._ensure_keys({c.device for c in cps})
        good: list[_Rec] = list(prep.good)
        waiting: list[_Rec] = []
        if prep.deferred:
            self._ensure_keys(set(), force={r.device for r in prep.deferred})  # registered or rotated since cached
        for r in prep.deferred:
            verdict = self._verify(r, out)
            if verdict == "ok":
                good.append(r)
            elif verdict == "unknown_key":
                waiting.append(r)
            elif verdict == "unknown_device":
                out.anomalies.append(
                    Anomaly(
                        r.device,
                        "unknown_device",
                        r.seq,
                        f"unknown_device:{r.device}",
                        f"record seq {r.seq} from device {r.device!r}, which is not registered "
                        "(central devices add --device ... --pubkey ...)",
                        {"topic": r.msg.topic, "seq": r.seq, "hash": r.hash, "key": r.key_id},
                    )
                )
        # Parked records taken back: they leave `pending` once decided (stored or refused), not while still waiting.
        pending_done = {(r.device, r.seq, r.hash) for r in recs if r.msg.from_pending}

        with self.db.transaction():
            locked = sorted({r.device for r in good} | {r.device for r in waiting} | {c.device for c in cps})
            state: dict[str, list[Any]] = {}
            for i in range(0, len(locked), 500):
                where, params = self.db.in_values("device", locked[i : i + 500])
                for row in self.db.query(
                    "SELECT device, site, status, revoked_after_seq, head_seq, verified_through, verified_hash,"
                    " checkpoint_seq, key_id FROM devices WHERE " + where + " ORDER BY device" + self.db.for_update,
                    params,
                ):
                    state[row[0]] = list(row)
            good = self._recheck_spans(good, state, out)
            if waiting:
                # Under the lock, a rotation committed by another worker is visible now.
                self._ensure_keys(set(), force={r.device for r in waiting})
                still: list[_Rec] = []
                for r in waiting:
                    verdict = self._verify(r, out)
                    if verdict == "ok":
                        good.append(r)
                    elif verdict == "unknown_key":
                        still.append(r)
                pending_done -= {(r.device, r.seq, r.hash) for r in still}
                self.db.insert_many(
                    "pending",
                    ("device", "seq", "hash", "key_id", "record", "received_at"),
                    [(r.device, r.seq, r.hash, r.key_id, r.text, r.received_at) for r in still],
                    conflict="ON CONFLICT (device, seq, hash) DO NOTHING",
                )
            # Registry checks on the fresh, locked rows.
            accepted: list[_Rec] = []
            for r in good:
                st = state.get(r.device)
                if st is None:
                    continue
                if st[1] != r.site:
                    out.anomalies.append(
                        Anomaly(
                            r.device,
                            "topic_mismatch",
                            r.seq,
                            f"topic_mismatch:{r.msg.topic}:{r.hash}",
                            f"device {r.device!r} is registered at site {st[1]!r} but published on {r.msg.topic}",
                            {"topic": r.msg.topic, "registered_site": st[1], "seq": r.seq, "hash": r.hash},
                        )
                    )
                    continue
                if st[2] == "revoked" and r.seq > int(st[3] or 0):
                    out.anomalies.append(
                        Anomaly(
                            r.device,
                            "revoked_device",
                            r.seq,
                            f"revoked_device:{r.device}",
                            f"device {r.device!r} is revoked; record seq {r.seq} (after seq {st[3]}) refused",
                            {"seq": r.seq, "hash": r.hash, "revoked_after_seq": st[3], "topic": r.msg.topic},
                        )
                    )
                    continue
                accepted.append(r)
            # What is already stored (or declared dropped) at these seqs. Above the locked head_seq nothing
            # is: head_seq is the highest seq stored, and a gap declares only seqs below its own. In a
            # steady stream every record is above it, and a batch costs no lookup at all.
            pairs: list[tuple[str, int]] = sorted(
                {(r.device, r.seq) for r in accepted if r.seq <= int(state[r.device][4])}
            )
            existing: dict[tuple[str, int], tuple[str, float]] = {}
            declared: dict[tuple[str, int], str] = {}
            for i in range(0, len(pairs), 1000):
                where, params = self.db.in_pairs("device", "seq", pairs[i : i + 1000])
                for d, s, h, at in self.db.query(
                    "SELECT device, seq, hash, ingested_at FROM records WHERE " + where, params
                ):
                    existing[(d, int(s))] = (h, float(at))
                for d, s, h in self.db.query("SELECT device, seq, hash FROM gap_declared WHERE " + where, params):
                    declared[(d, int(s))] = h
            fresh: dict[str, dict[int, _Rec]] = defaultdict(dict)
            dup_count: dict[str, int] = defaultdict(int)
            for r in accepted:
                key = (r.device, r.seq)
                seen = existing.get(key)
                other = fresh[r.device].get(r.seq)
                known_hash = seen[0] if seen else other.hash if other else None
                if known_hash is None:
                    if key in declared and declared[key] != r.hash:
                        out.anomalies.append(self._fork(r, declared[key], "a signed gap record declares"))
                        continue
                    fresh[r.device][r.seq] = r
                    continue
                if known_hash == r.hash:
                    out.duplicates += 1
                    dup_count[r.device] += 1
                    if seen and now - seen[1] > self.s.replay_window_s:
                        out.anomalies.append(
                            Anomaly(
                                r.device,
                                "replay",
                                r.seq,
                                f"replay:{r.device}",
                                f"seq {r.seq} received again {now - seen[1]:.0f} s after it was stored",
                                {"seq": r.seq, "hash": r.hash, "stored_at": seen[1], "topic": r.msg.topic},
                            )
                        )
                    continue
                out.anomalies.append(self._fork(r, known_hash, "the stored record has"))

            # Follow each chain as far as it goes now.
            rows: list[tuple[Any, ...]] = []
            updates: list[tuple[Any, ...]] = []
            verified_ranges: list[tuple[str, int, int]] = []
            gap_rows: list[tuple[Any, ...]] = []
            range_rows: list[tuple[Any, ...]] = []
            rotations: list[_Rec] = []
            for device in sorted(set(fresh) | set(dup_count)):
                st = state[device]
                head, v, vhash = int(st[4]), int(st[5]), str(st[6])
                new = fresh.get(device, {})
                chain: dict[int, tuple[str, str]] = {s: (r.hash, r.prev) for s, r in new.items()}
                gaps: dict[int, str] = {}
                spans: list[tuple[int, int, str]] = []  # declared ranges: (first, last, hash of last or "")
                for r in new.values():
                    if r.kind == "gap":
                        hashes = self._gap_hashes(r)
                        gaps.update(hashes)
                        gap_rows.extend((device, s, h, k, r.seq) for s, (h, k) in self._gap_items(r).items())
                        for a, b in self._gap_ranges(r):
                            spans.append((a, b, hashes.get(b, "")))
                            range_rows.append((device, a, b, hashes.get(b, ""), r.seq))
                        out.anomalies.append(self._gap_anomaly(r, hashes))
                    elif r.kind == "key_rotation":
                        rotations.append(r)
                parked_from_db: set[int] = set()
                if head > v and new:
                    for s, h, p in self.db.query(
                        "SELECT seq, hash, prev FROM records WHERE device = ? AND seq > ? ORDER BY seq LIMIT 100000",
                        (device, v),
                    ):
                        chain.setdefault(int(s), (h, p))
                        parked_from_db.add(int(s))
                    for s, h in self.db.query(
                        "SELECT seq, hash FROM gap_declared WHERE device = ? AND seq > ?", (device, v)
                    ):
                        gaps.setdefault(int(s), h)
                    spans.extend(
                        (int(a), int(b), str(h))
                        for a, b, h in self.db.query(
                            "SELECT first_seq, last_seq, end_hash FROM gap_ranges WHERE device = ? AND last_seq > ?",
                            (device, v),
                        )
                    )
                start_v = v
                while True:
                    nxt = v + 1
                    if nxt in chain:
                        h, p = chain[nxt]
                        # vhash "" : the previous seq was declared lost by a gap that could not give its hash
                        if vhash and p != vhash and not self._continues_fork(device, v, p, out):
                            out.anomalies.append(
                                Anomaly(
                                    device,
                                    "broken_link",
                                    nxt,
                                    f"broken_link:{device}:{nxt}",
                                    f"seq {nxt}: prev {p[:16]}... is not the hash of seq {v} ({vhash[:16]}...)",
                                    {"seq": nxt, "prev": p, "expected": vhash, "hash": h},
                                )
                            )
                        v, vhash = nxt, h
                    elif nxt in gaps:
                        v, vhash = nxt, gaps[nxt]
                    elif span := next(((a, b, h) for a, b, h in spans if a <= nxt <= b), None):
                        # a declared range: jump to its end, linking on by the end's hash when given
                        v, vhash = span[1], gaps.get(span[1], span[2])
                    else:
                        break
                if parked_from_db and v > start_v:
                    verified_ranges.append((device, start_v, v))
                newest = max(new.values(), key=lambda r: r.seq) if new else None
                new_head = max(head, newest.seq) if newest else head
                for r in new.values():
                    rows.append(
                        (r.device, r.seq, r.hash, r.prev, r.kind, r.ts, r.key_id, r.text, now, 1 if r.seq <= v else 0)
                    )
                    t = _parse_ts(r.ts)
                    if t is not None:
                        out.record_lags_s.append(now - t)
                lag = None
                if newest is not None and newest.seq == new_head:
                    t = _parse_ts(newest.ts)
                    lag = None if t is None else now - t
                    if lag is not None:
                        out.lags_s[device] = lag
                updates.append(
                    (
                        new_head,
                        v,
                        vhash,
                        now if new else None,
                        newest.ts if newest is not None and newest.seq == new_head else None,
                        len(new),
                        dup_count.get(device, 0),
                        device,
                    )
                )
            # No conflict is possible: every (device, seq) was checked above under the device's row lock.
            self.db.copy_rows(
                "records",
                ("device", "seq", "hash", "prev", "kind", "ts", "key_id", "record", "ingested_at", "verified"),
                rows,
            )
            out.stored = len(rows)
            for device, lo, hi in verified_ranges:
                self.db.execute(
                    "UPDATE records SET verified = 1 WHERE device = ? AND seq > ? AND seq <= ? AND verified = 0",
                    (device, lo, hi),
                )
            self._update_devices(updates)
            self.db.insert_many(
                "gap_declared",
                ("device", "seq", "hash", "kind", "gap_seq"),
                gap_rows,
                conflict="ON CONFLICT (device, seq) DO NOTHING",
            )
            self.db.insert_many(
                "gap_ranges",
                ("device", "first_seq", "last_seq", "end_hash", "gap_seq"),
                range_rows,
                conflict="ON CONFLICT (device, first_seq, gap_seq) DO NOTHING",
            )
            for r in rotations:
                if self._rotate(r, now):
                    out.rotated.add(r.device)
            for c in cps:
                self._checkpoint(c, state.get(c.device), now, out)
            if pending_done:
                self.db.executemany(
                    "DELETE FROM pending WHERE device = ? AND seq = ? AND hash = ?", sorted(pending_done)
                )
            self._drop_links_explained_by_forks(out)
            self.record_anomalies(out.anomalies, now)
        if out.rotated:
            self.forget_keys(out.rotated)
        return out

    # ------------------------------------------------------------ helpers inside the transaction
    def _recheck_spans(self, good: list[_Rec], state: dict[str, list[Any]], out: BatchResult) -> list[_Rec]:
        """Records verified with a cached key other than the device's current one, checked on fresh spans.

        A rotation committed since the cache was filled (by this worker's previous batch, or by another
        worker on the shared subscription) ends the old key's span; the locked `devices` row names the
        current key, so only records signed by another key cost a reload.
        """
        stale = {r.device for r in good if r.device in state and r.key_id != state[r.device][8]}
        if not stale:
            return good
        self._ensure_keys(set(), force=stale)
        kept: list[_Rec] = []
        for r in good:
            if r.device in stale and self._verify(r, out) != "ok":
                continue
            kept.append(r)
        return kept

    def _update_devices(self, updates: list[tuple[Any, ...]]) -> None:
        """New chain state per device: one UPDATE over unnested arrays on PostgreSQL, executemany on SQLite."""
        if not updates:
            return
        if self.db.dialect == "postgresql":
            cols = list(zip(*updates, strict=True))
            self.db.execute(
                "UPDATE devices SET head_seq = v.head, verified_through = v.vt, verified_hash = v.vh,"
                " last_seen = COALESCE(v.seen, devices.last_seen), last_ts = COALESCE(v.ts, devices.last_ts),"
                " received = devices.received + v.n, duplicates = devices.duplicates + v.dups"
                " FROM unnest(?::bigint[], ?::bigint[], ?::text[], ?::float8[], ?::text[], ?::bigint[], ?::bigint[],"
                " ?::text[]) AS v(head, vt, vh, seen, ts, n, dups, device) WHERE devices.device = v.device",
                [list(c) for c in cols],
            )
            return
        self.db.executemany(
            "UPDATE devices SET head_seq = ?, verified_through = ?, verified_hash = ?,"
            " last_seen = COALESCE(?, last_seen), last_ts = COALESCE(?, last_ts),"
            " received = received + ?, duplicates = duplicates + ? WHERE device = ?",
            updates,
        )

    def _drop_links_explained_by_forks(self, out: BatchResult) -> None:
        """A broken link at n+1 whose prev is the refused side of a fork at n is that fork, reported once."""
        for a in [a for a in out.anomalies if a.kind == "fork"]:
            refused = a.evidence.get("hash")
            nxt = f"broken_link:{a.device}:{(a.seq or 0) + 1}"
            out.anomalies[:] = [x for x in out.anomalies if not (x.dedupe == nxt and x.evidence.get("prev") == refused)]
            row = self.db.query_one("SELECT evidence FROM anomalies WHERE dedupe = ?", (nxt,))
            if row is not None and json.loads(row[0]).get("prev") == refused:
                self.db.execute("DELETE FROM anomalies WHERE dedupe = ?", (nxt,))

    def _continues_fork(self, device: str, seq: int, prev: str, out: BatchResult) -> bool:
        """True when `prev` is the hash of the refused side of a fork already reported at `seq`.

        Which of two forked records is stored first depends on arrival order; the chain going on
        from the other one is the same fork, not a second, unrelated break.
        """
        dedupe = f"fork:{device}:{seq}:{prev}"
        if any(a.dedupe == dedupe for a in out.anomalies):
            return True
        return self.db.query_one("SELECT 1 FROM anomalies WHERE dedupe = ?", (dedupe,)) is not None

    def _fork(self, r: _Rec, other_hash: str, source: str) -> Anomaly:
        return Anomaly(
            r.device,
            "fork",
            r.seq,
            f"fork:{r.device}:{r.seq}:{r.hash}",
            f"seq {r.seq}: hash {r.hash[:16]}... but {source} {other_hash[:16]}...",
            {
                "seq": r.seq,
                "hash": r.hash,
                "other_hash": other_hash,
                "topic": r.msg.topic,
                "record": r.text[:_EVIDENCE_MAX],
            },
        )

    @staticmethod
    def _gap_items(r: _Rec) -> dict[int, tuple[str, str | None]]:
        body = r.body.get("body") if isinstance(r.body, dict) else None
        got = read_gap(body, r.seq)
        return got[0] if got else {}

    @staticmethod
    def _gap_ranges(r: _Rec) -> list[tuple[int, int]]:
        """The seq ranges a gap declares dropped: the authority, whether or not each seq's hash is given."""
        body = r.body.get("body") if isinstance(r.body, dict) else None
        got = read_gap(body, r.seq)
        return got[1] if got else []

    def _gap_hashes(self, r: _Rec) -> dict[int, str]:
        return {s: h for s, (h, _k) in self._gap_items(r).items()}

    @staticmethod
    def _gap_anomaly(r: _Rec, hashes: dict[int, str]) -> Anomaly:
        body = r.body.get("body") if isinstance(r.body, dict) else {}
        reason = body.get("reason") if isinstance(body, dict) else None
        ranges = [list(x) for x in Ingestor._gap_ranges(r)] or seq_ranges(list(hashes))
        text = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges)
        return Anomaly(
            r.device,
            "signed_gap",
            r.seq,
            f"signed_gap:{r.device}:{r.seq}",
            f"gap record seq {r.seq}: the device dropped seq {text or '(none)'} ({reason})",
            {"gap_seq": r.seq, "reason": reason, "ranges": ranges, "hashes": {str(s): h for s, h in hashes.items()}},
            severity=INFO,
        )

    def _rotate(self, r: _Rec, now: float) -> bool:
        body = r.body.get("body") if isinstance(r.body, dict) else None
        raw = body.get("new_public_key") if isinstance(body, dict) else None
        try:
            new = Ed25519PublicKey.from_public_bytes(base64.b64decode(str(raw), validate=True))
        except ValueError:
            log.warning(
                "key_rotation seq %d of %s carries no valid new_public_key; registry unchanged", r.seq, r.device
            )
            return False
        kid = key_id_for(new)
        self.db.execute(
            "UPDATE device_keys SET to_seq = ? WHERE device = ? AND key_id = ? AND (to_seq IS NULL OR to_seq > ?)",
            (r.seq, r.device, r.key_id, r.seq),
        )
        self.db.execute(
            "INSERT INTO device_keys (device, key_id, pubkey, from_seq, to_seq, source, added_at)"
            " VALUES (?, ?, ?, ?, NULL, ?, ?) ON CONFLICT (device, key_id) DO NOTHING",
            (r.device, kid, public_raw_b64(new), r.seq + 1, f"key_rotation:{r.seq}", now),
        )
        # The registry's current key is the one announced by the newest rotation.
        newest = self.db.query_one(
            "SELECT key_id, pubkey FROM device_keys WHERE device = ? ORDER BY from_seq DESC LIMIT 1", (r.device,)
        )
        if newest is not None:
            self.db.execute(
                "UPDATE devices SET key_id = ?, pubkey = ? WHERE device = ?", (newest[0], newest[1], r.device)
            )
        log.info("device %s rotated its key at seq %d: %s -> %s", r.device, r.seq, r.key_id, kid)
        return True

    def _checkpoint(self, c: _Checkpoint, st: list[Any] | None, now: float, out: BatchResult) -> None:
        cp = c.cp
        seq = cp.get("seq")
        if st is None:
            return  # unknown device: its records say so already
        span = self._keys.get(c.device, {}).get(str(cp.get("key")))
        if span is None:
            # Checkpoints and records travel on different topics: one signed by the device's new key can
            # arrive before the key_rotation record that announces it (seen under load). Look again under
            # the lock; a key still unannounced proves nothing yet, and the device's next checkpoint is
            # judged once the rotation is stored. Only a checkpoint a known key does not verify is refused.
            self._ensure_keys(set(), force={c.device})
            span = self._keys.get(c.device, {}).get(str(cp.get("key")))
            if span is None:
                log.info("checkpoint of %s signed by key %s, not announced yet: not judged", c.device, cp.get("key"))
                return
        problem = None
        if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(cp.get("head_hash"), str):
            problem = "expected an object with an integer seq and a head_hash"
        elif cp.get("device") != c.device:
            problem = f"checkpoint of device {cp.get('device')!r} on {c.device}'s topic"
        else:
            try:
                data = canonical({k: v for k, v in cp.items() if k != "sig"})
                span.public.verify(base64.b64decode(str(cp.get("sig")), validate=True), data)
            except Exception:  # noqa: BLE001 - any failure here means the signature does not verify
                problem = "signature does not verify"
        if problem is not None:
            out.anomalies.append(
                Anomaly(
                    c.device,
                    "bad_checkpoint",
                    seq if isinstance(seq, int) else None,
                    f"bad_checkpoint:{c.device}:{_sha256(c.text.encode())}",
                    f"checkpoint of {c.device}: {problem}",
                    {"checkpoint": c.text[:_EVIDENCE_MAX]},
                )
            )
            return
        if not isinstance(seq, int):
            return
        stored = self.db.query_one("SELECT hash FROM records WHERE device = ? AND seq = ?", (c.device, seq))
        if stored is not None and stored[0] != cp["head_hash"]:
            out.anomalies.append(
                Anomaly(
                    c.device,
                    "fork",
                    seq,
                    f"fork:{c.device}:{seq}:{cp['head_hash']}",
                    f"seq {seq}: the device's checkpoint gives {cp['head_hash'][:16]}..., stored {stored[0][:16]}...",
                    {"seq": seq, "hash": stored[0], "other_hash": cp["head_hash"], "checkpoint": c.text},
                )
            )
        if st[7] is None or seq >= int(st[7]):
            self.db.execute(
                "UPDATE devices SET checkpoint = ?, checkpoint_seq = ?, checkpoint_at = ? WHERE device = ?",
                (c.text, seq, now, c.device),
            )

    def record_anomalies(self, anomalies: list[Anomaly], now: float | None = None, *, bump: bool = True) -> None:
        """Insert anomalies; one already recorded (same dedupe key) only counts again (unless not `bump`)."""
        if not anomalies:
            return
        now = self.clock() if now is None else now
        merged: dict[str, tuple[Anomaly, int]] = {}
        for a in anomalies:
            prev = merged.get(a.dedupe)
            merged[a.dedupe] = (prev[0], prev[1] + 1) if prev else (a, 1)
        rows = [
            (
                a.device,
                a.kind,
                a.seq,
                a.dedupe,
                now,
                a.message,
                json.dumps(a.evidence, sort_keys=True),
                a.severity,
                n,
                now,
            )
            for a, n in merged.values()
        ]
        on_conflict = (
            "DO UPDATE SET count = anomalies.count + excluded.count, last_at = excluded.last_at"
            if bump
            else "DO NOTHING"
        )
        self.db.executemany(
            "INSERT INTO anomalies (device, kind, seq, dedupe, detected_at, message, evidence, severity, count,"
            " last_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe) " + on_conflict,
            rows,
        )

    # ------------------------------------------------------------ pending records and the sweeper
    def take_pending(self, devices: Iterable[str]) -> list[Message]:
        """Records parked for an unknown key, as messages to process again (after a rotation)."""
        out: list[Message] = []
        for d in sorted(devices):
            site = self.site_of(d)
            if site is None:
                continue
            for _seq, kind_text, received_at in self.db.query(
                "SELECT seq, record, received_at FROM pending WHERE device = ? ORDER BY seq", (d,)
            ):
                try:
                    kind = json.loads(kind_text).get("kind", "")
                except (ValueError, AttributeError):
                    kind = ""
                topic = self.records_topic(site, d, kind)
                out.append(Message(topic, kind_text.encode("utf-8"), float(received_at), None, from_pending=True))
        return out

    def site_of(self, device: str) -> str | None:
        """The site a device is registered at, or None for a device not registered."""
        row = self.db.query_one("SELECT site FROM devices WHERE device = ?", (device,))
        return None if row is None else str(row[0])

    def records_topic(self, site: str, device: str, kind: str) -> str:
        """The topic a device's record of `kind` arrives on: records that come another way (parked, imported)
        go through the same checks as if they had."""
        return f"{self.s.topic_prefix}/{site}/{device}/rec/{kind}"

    def releasable(self) -> set[str]:
        """Devices with parked records whose key has been announced since: feed take_pending() with them."""
        rows = self.db.query(
            "SELECT DISTINCT p.device FROM pending p JOIN device_keys k ON k.device = p.device AND k.key_id = p.key_id"
        )
        return {str(r[0]) for r in rows}

    def resends_due(self, limit: int = 100) -> list[ResendDue]:
        """Open holes to ask their devices for again, each claimed for this worker alone.

        A hole is due when it was never asked for, or when resend_every_s have passed since the last ask
        and the device has been heard from since (an offline device gets nothing it would refuse as
        expired), up to resend_max asks. The claim is a conditional UPDATE, so of several workers
        sweeping at once only one sends. The range is read now: late records may have narrowed it.
        """
        now = self.clock()
        again = now - self.s.resend_every_s
        out: list[ResendDue] = []
        with self.db.transaction():
            rows = self.db.query(
                "SELECT a.id, a.device, d.site, d.verified_through, a.resends FROM anomalies a"
                " JOIN devices d ON d.device = a.device"
                " WHERE a.kind = 'hole' AND a.resolved_at IS NULL AND d.status = 'active' AND a.resends < ?"
                " AND (a.resend_at IS NULL OR (a.resend_at <= ? AND d.last_seen > a.resend_at))"
                " ORDER BY a.id LIMIT ?",
                (self.s.resend_max, again, limit),
            )
            for anomaly_id, device, site, verified, resends in rows:
                nxt = self.db.query_one("SELECT MIN(seq) FROM records WHERE device = ? AND seq > ?", (device, verified))
                if nxt is None or nxt[0] is None or int(nxt[0]) <= int(verified) + 1:
                    continue  # filled meanwhile: the sweep resolves it
                claimed = self.db.execute(
                    "UPDATE anomalies SET resend_at = ?, resends = resends + 1"
                    " WHERE id = ? AND resends = ? AND (resend_at IS NULL OR resend_at <= ?)",
                    (now, anomaly_id, resends, again),
                )
                if claimed.rowcount == 1:
                    first = int(verified) + 1
                    last = min(int(nxt[0]) - 1, first + MAX_RESEND_SPAN - 1)
                    out.append(ResendDue(str(device), str(site), first, last, int(resends) + 1))
        return out

    def sweep(self) -> list[Anomaly]:
        """Holes older than hole_after_s, tails short of a checkpoint, keys never announced; resolve healed holes."""
        now = self.clock()
        limit = now - self.s.hole_after_s
        found: list[Anomaly] = []
        with self.db.transaction():
            # Devices whose hole is already reported are skipped: a sweep stays cheap while holes stay open.
            for device, v, head in self.db.query(
                "SELECT device, verified_through, head_seq FROM devices d WHERE head_seq > verified_through"
                " AND NOT EXISTS (SELECT 1 FROM anomalies a"
                " WHERE a.dedupe = 'hole:' || d.device || ':' || CAST(d.verified_through + 1 AS TEXT))"
            ):
                row = self.db.query_one(
                    "SELECT seq, ingested_at FROM records WHERE device = ? AND seq > ? ORDER BY seq LIMIT 1",
                    (device, v),
                )
                if row is None or float(row[1]) > limit:
                    continue
                lo, hi = int(v) + 1, int(row[0]) - 1
                found.append(
                    Anomaly(
                        device,
                        "hole",
                        lo,
                        f"hole:{device}:{lo}",
                        f"seq {lo}-{hi} missing for {now - float(row[1]):.0f} s with no signed gap record"
                        if hi > lo
                        else f"seq {lo} missing for {now - float(row[1]):.0f} s with no signed gap record",
                        {"first_missing": lo, "last_missing": hi, "verified_through": int(v), "head_seq": int(head)},
                    )
                )
            for device, cp_seq, head, cp_text in self.db.query(
                "SELECT device, checkpoint_seq, head_seq, checkpoint FROM devices"
                " WHERE checkpoint_seq > head_seq AND checkpoint_at < ?",
                (limit,),
            ):
                found.append(
                    Anomaly(
                        device,
                        "truncated_tail",
                        int(cp_seq),
                        f"truncated_tail:{device}:{cp_seq}",
                        f"stored chain ends at seq {head} but the device's signed checkpoint is at seq {cp_seq}: "
                        f"records {int(head) + 1}-{cp_seq} are missing",
                        {"head_seq": int(head), "checkpoint_seq": int(cp_seq), "checkpoint": cp_text},
                    )
                )
            # A key that has since been announced only means a worker has yet to take its records back.
            for device, key_id, first, count in self.db.query(
                "SELECT device, key_id, MIN(seq), COUNT(*) FROM pending p WHERE received_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM device_keys k WHERE k.device = p.device AND k.key_id = p.key_id)"
                " GROUP BY device, key_id",
                (limit,),
            ):
                found.append(
                    Anomaly(
                        device,
                        "unknown_key",
                        int(first),
                        f"unknown_key:{device}:{key_id}",
                        f"{count} record(s) from seq {first} signed by {key_id}, which {device} never announced",
                        {"key": key_id, "first_seq": int(first), "count": int(count)},
                    )
                )
            self.record_anomalies(found, now, bump=False)
            # A hole that filled (late records, a gap record) or a tail that arrived is resolved, not deleted.
            self.db.execute(
                "UPDATE anomalies SET resolved_at = ? WHERE resolved_at IS NULL AND kind = 'hole'"
                " AND seq <= (SELECT verified_through FROM devices d WHERE d.device = anomalies.device)",
                (now,),
            )
            self.db.execute(
                "UPDATE anomalies SET resolved_at = ? WHERE resolved_at IS NULL AND kind = 'truncated_tail'"
                " AND seq <= (SELECT head_seq FROM devices d WHERE d.device = anomalies.device)",
                (now,),
            )
        return found
