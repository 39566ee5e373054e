"""The record envelope: RFC 8785 canonical bytes, SHA-256 hash, Ed25519 signature, and their checks."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any, Protocol

import orjson
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.spine.keys import DeviceKey

ENVELOPE_VERSION = 1
# The first record of a device chains to 64 zeros: a value no SHA-256 output is known to take.
GENESIS_PREV = "0" * 64
ENVELOPE_FIELDS = ("v", "device", "seq", "ts", "clock", "kind", "body", "prev", "key", "hash", "sig")
_ENVELOPE_SET = frozenset(ENVELOPE_FIELDS)

# Eviction priority when the outbox is full: lower goes first. Kinds not listed are 1.
KIND_PRIORITY = {
    "telemetry": 0,
    "health": 0,
    "sensor": 0,
    "event": 1,
    "checkpoint": 1,
    "trip": 2,
    "return_inspection": 2,
    "gap": 9,  # never evicted: it is what tells central what was
    "key_rotation": 9,
}
NEVER_EVICT = 9


_MAX_SAFE_INT = 2**53 - 1  # I-JSON: integers must be exact in an IEEE double


class _NeedsSlowPath(Exception):
    pass


def _jcs_ready(obj: Any) -> Any:
    """A copy on which json.dumps(sort_keys) gives exactly the RFC 8785 bytes, or _NeedsSlowPath.

    Python and ECMAScript print a float the same way (shortest round-trip digits) except for
    exponents and integral values; integral floats become ints (ES prints 1.0 as "1"), and any
    float whose repr has an exponent, any int beyond 2**53 and any key outside the BMP (JCS sorts
    keys by UTF-16 code units) go to the reference implementation.
    """
    if isinstance(obj, str) or obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        if -_MAX_SAFE_INT <= obj <= _MAX_SAFE_INT:
            return obj
        raise _NeedsSlowPath
    if isinstance(obj, float):
        if obj.is_integer() and abs(obj) <= _MAX_SAFE_INT:
            return int(obj)
        r = repr(obj)
        if "e" in r or "n" in r or r.endswith(".0"):  # exponent, inf, nan, big integral
            raise _NeedsSlowPath
        return obj
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str) or any(ord(c) > 0xFFFF for c in k):
                raise _NeedsSlowPath
            out[k] = _jcs_ready(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [_jcs_ready(v) for v in obj]
    raise _NeedsSlowPath


def canonical(obj: Any) -> bytes:
    """RFC 8785 (JCS) bytes; raises ValueError for NaN/Infinity or non-JSON types.

    A fast path through the C json encoder covers the values records carry; everything else goes
    through the `rfc8785` package. tests/spine/test_records.py checks both agree on generated values.
    """
    try:
        ready = _jcs_ready(obj)
        return json.dumps(ready, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
            "utf-8"
        )
    except (_NeedsSlowPath, UnicodeEncodeError):
        pass
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError) as exc:
        raise ValueError(f"record is not JSON-canonicalisable: {exc}") from None


def signing_bytes(record: dict[str, Any]) -> bytes:
    """Canonical bytes of the record without `hash` and `sig`: what is hashed and signed."""
    return canonical({k: v for k, v in record.items() if k not in ("hash", "sig")})


class Signer(Protocol):
    """Anything that signs bytes with Ed25519: a DeviceKey, or central's key in the CLI."""

    def sign(self, data: bytes) -> bytes: ...


def sign_detached(key: Signer, obj: dict[str, Any], *, unsigned: tuple[str, ...] = ("sig",)) -> str:
    """Base64 Ed25519 signature over the canonical bytes of `obj` without its `unsigned` fields.

    The one signing primitive: records, command messages and checkpoints all go through it.
    """
    data = canonical({k: v for k, v in obj.items() if k not in unsigned})
    return base64.b64encode(key.sign(data)).decode("ascii")


def verify_detached(
    public: Ed25519PublicKey, obj: dict[str, Any], sig: str, *, unsigned: tuple[str, ...] = ("sig",)
) -> bool:
    """True when `sig` is a valid signature of `obj` (without its `unsigned` fields) by `public`."""
    try:
        data = canonical({k: v for k, v in obj.items() if k not in unsigned})
        public.verify(base64.b64decode(sig, validate=True), data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def make_record(
    *, device: str, seq: int, ts: str, clock: str, kind: str, body: dict[str, Any], prev: str, key: DeviceKey
) -> dict[str, Any]:
    """Build, hash and sign one record."""
    rec: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "device": device,
        "seq": seq,
        "ts": ts,
        "clock": clock,
        "kind": kind,
        "body": body,
        "prev": prev,
        "key": key.key_id,
    }
    data = signing_bytes(rec)
    rec["hash"] = hashlib.sha256(data).hexdigest()
    rec["sig"] = base64.b64encode(key.sign(data)).decode("ascii")
    return rec


def encode(record: dict[str, Any]) -> bytes:
    """The wire and storage form: compact UTF-8 JSON of the whole record (verifiers re-canonicalise)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def check_record(record: dict[str, Any], public: Ed25519PublicKey | None, *, signing: bytes | None = None) -> list[str]:
    """Problems with one record on its own (shape, hash, signature); empty when it is sound.

    `signing`: the record's signing bytes when the caller already has them (loads_wire), else computed here.
    """
    problems = []
    missing = [f for f in ENVELOPE_FIELDS if f not in record]
    if missing:
        return [f"missing field(s) {', '.join(missing)}"]
    extra = sorted(record.keys() - _ENVELOPE_SET)
    if extra:
        problems.append(f"unexpected field(s) {', '.join(extra)}")
    if not isinstance(record["seq"], int) or isinstance(record["seq"], bool) or record["seq"] < 1:
        return [*problems, f"seq: expected an integer >= 1, got {record['seq']!r}"]
    try:
        data = signing_bytes(record) if signing is None else signing
    except ValueError as exc:
        return [*problems, str(exc)]
    if hashlib.sha256(data).hexdigest() != record["hash"]:
        problems.append("hash does not match the record's content (altered)")
    if public is not None:
        try:
            public.verify(base64.b64decode(record["sig"], validate=True), data)
        except (InvalidSignature, ValueError, TypeError):
            problems.append("bad signature")
    return problems


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            # RFC 8785 needs I-JSON (RFC 7493): a parser keeping the other copy would see another record.
            raise ValueError(f"duplicate key {k[:40]!r} in one object (I-JSON forbids it)")
        out[k] = v
    return out


MAX_JSON_DEPTH = 64  # records and commands nest a handful of levels; anything deeper is hostile
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth_ok(data: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether no array or object nests deeper than `limit`, strings skipped.

    Checked before parsing and independent of the interpreter's recursion limit, which a library
    may raise (py-evm sets it to 12,288): past that, json would parse an absurd nesting or exhaust
    the C stack instead of refusing it.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= limit:  # cannot nest deeper than it has brackets
        return True
    depth = 0
    for m in _JSON_TOKENS.finditer(raw):
        tok = m.group()
        if tok in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return False
        elif tok in (b"]", b"}"):
            depth -= 1
    return True


def loads_strict(data: str | bytes) -> Any:
    """JSON as I-JSON reads it: duplicate keys, bad UTF-8 and absurd nesting are a ValueError with a reason."""
    if not json_depth_ok(data):
        raise ValueError("not JSON this program accepts (nested too deeply)")
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not JSON (not UTF-8 at byte {exc.start})") from None
    except RecursionError:
        raise ValueError("not JSON this program accepts (nested too deeply)") from None


def parse_line(line: str | bytes) -> dict[str, Any]:
    """One JSON line to a record dict; raise ValueError with a short reason."""
    obj = loads_strict(line)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


_UNSIGNED = frozenset(("hash", "sig"))
_NON_BMP_UTF8 = re.compile(rb"[\xf0-\xff]")  # lead bytes of 4-byte UTF-8 (and invalid ones)


def _jcs_numbers(obj: Any) -> Any:
    """A copy orjson prints as RFC 8785 does: integral floats as integers (1.0 as 1), the rest unchanged.

    orjson prints other floats with Python's shortest round-trip digits, as ECMAScript does, while
    1e-4 <= |x| < 1e16; outside that (exponents) and for integers beyond 2**53 the payload takes the
    reference path (_NeedsSlowPath).
    """
    t = type(obj)
    if t is dict:
        return {k: _jcs_numbers(v) for k, v in obj.items()}
    if t is list:
        return [_jcs_numbers(v) for v in obj]
    if t is float:
        if obj.is_integer():
            if -_MAX_SAFE_INT <= obj <= _MAX_SAFE_INT:
                return int(obj)
            raise _NeedsSlowPath
        if -1e-4 < obj < 1e-4:
            raise _NeedsSlowPath
        return obj
    if t is int and not -_MAX_SAFE_INT <= obj <= _MAX_SAFE_INT:
        raise _NeedsSlowPath
    return obj


def loads_wire(payload: bytes, text: str | None = None) -> tuple[Any, bytes | None]:
    """A record as received: (the JSON value, its signing bytes) in one pass when the payload is exactly
    what encode() writes, else (loads_strict's value, None) and the caller canonicalises as before.

    The fast path parses with orjson and re-encodes the value: equal bytes prove the payload is compact
    and has no duplicate key (a re-encoded object has none). The signing bytes are then the sorted
    re-encoding without hash and sig, numbers in RFC 8785 form (_jcs_numbers): the bytes signing_bytes()
    gives, at a fraction of the cost. Whatever else arrives takes the reference path, with its errors
    (`text`: the payload already decoded). tests/spine/test_records.py checks both paths agree.
    """
    # A 4-byte UTF-8 character may be in a key, which RFC 8785 sorts by UTF-16 units, not code points.
    if json_depth_ok(payload) and (payload.isascii() or not _NON_BMP_UTF8.search(payload)):
        try:
            obj = orjson.loads(payload)
            if type(obj) is dict and orjson.dumps(obj) == payload:
                unsigned = {k: v if type(v) is str else _jcs_numbers(v) for k, v in obj.items() if k not in _UNSIGNED}
                return obj, orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)
        except (orjson.JSONDecodeError, orjson.JSONEncodeError, _NeedsSlowPath):
            pass
    return loads_strict(payload.decode("utf-8") if text is None else text), None
