"""Record envelope: canonical bytes agree with the rfc8785 package, hashes and signatures catch tampering."""

from __future__ import annotations

import base64
import copy
import hashlib
import math
import os
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import KeyError_
from edge_agent.spine.keys import generate_key, key_id_for, load_key
from edge_agent.spine.records import GENESIS_PREV, canonical, check_record, make_record, signing_bytes

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_canonical__fast_path_equals_rfc8785(value: object) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(ValueError, match="canonicalisable"):
            canonical(value)
        return
    assert canonical(value) == expected


@pytest.mark.parametrize(
    "value",
    [1e21, 1e-7, 0.1 + 0.2, 5e-324, -0.0, 123456789012345680.0, 9007199254740992.0, 1e15 + 0.5, {"😀": 1, "z": 2}],
)
def test_canonical__edge_numbers_and_astral_keys(value: object) -> None:
    assert canonical(value) == rfc8785.dumps(value)


def test_canonical__nan_is_refused() -> None:
    with pytest.raises(ValueError, match="canonicalisable"):
        canonical({"x": math.nan})


def test_record__hash_and_signature_verify(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    rec = make_record(
        device="d",
        seq=1,
        ts="2026-01-01T00:00:00.000Z",
        clock="ntp",
        kind="event",
        body={"a": 1},
        prev=GENESIS_PREV,
        key=key,
    )
    assert rec["hash"] == hashlib.sha256(signing_bytes(rec)).hexdigest()
    assert rec["key"] == key_id_for(key.public)
    assert check_record(rec, key.public) == []
    altered = copy.deepcopy(rec)
    altered["body"]["a"] = 2
    assert "hash does not match the record's content (altered)" in check_record(altered, key.public)
    other = generate_key(tmp_path / "k2")
    assert check_record(rec, other.public) == ["bad signature"]
    resigned = copy.deepcopy(altered)
    resigned["hash"] = hashlib.sha256(signing_bytes(resigned)).hexdigest()
    assert check_record(resigned, key.public) == ["bad signature"]


def test_keys__mode_0600_and_refuse_overwrite(tmp_path: Path) -> None:
    p = tmp_path / "keys" / "device.key"
    key = generate_key(p)
    assert p.stat().st_mode & 0o777 == 0o600
    with pytest.raises(Exception, match="already exists; refusing to overwrite"):
        generate_key(p)
    assert load_key(p).key_id == key.key_id
    p.chmod(0o644)
    with pytest.raises(Exception, match="expected 0600"):
        load_key(p)


def test_keys__a_key_that_cannot_be_read_is_a_clear_error(tmp_path: Path) -> None:
    """A key path that is a folder, a FIFO or under a file used to escape load_key as a traceback (doctor
    and run stopped there); each is a KeyError_ naming the path and what is wrong."""
    folder = tmp_path / "device.key"
    folder.mkdir(mode=0o755)  # named as a folder, not as a mode to chmod
    with pytest.raises(KeyError_, match=r"device.key: expected the device key file, got a folder or device"):
        load_key(folder)
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyError_, match="got a folder or device"):
        load_key(fifo)  # refused from its metadata: opening a FIFO would wait for a writer
    (tmp_path / "afile").write_text("")
    with pytest.raises(KeyError_, match=r"afile/device.key: cannot reach the device key \(Not a directory\)"):
        load_key(tmp_path / "afile" / "device.key")
    # A missing key on a device that has its config: `init` would refuse to write over the config.
    with pytest.raises(KeyError_, match=r"device key not found \(make one with `edge-agent keys generate`"):
        load_key(tmp_path / "missing.key")


def test_readme_worked_example_verifies() -> None:
    """The README's worked example is real: its public key verifies its record."""
    import json
    import re

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    rec = json.loads(re.search(r"<!-- example-record -->\s*```json\n(.*?)```", text, re.S).group(1))
    pub = re.search(r"<!-- example-pubkey -->\s*```\n(.*?)\n```", text, re.S).group(1).strip()
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(pub))
    assert check_record(rec, public) == []
    shown = re.search(r"<!-- example-canonical -->\s*```\n(.*?)\n```", text, re.S).group(1)
    assert shown.encode() == signing_bytes(rec)


def test_loads_strict__deep_nesting_is_refused_whatever_the_recursion_limit() -> None:
    # py-evm raises the interpreter's recursion limit at import; the refusal must not depend on it
    import sys

    from edge_agent.spine.records import MAX_JSON_DEPTH, loads_strict

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        for deep in (
            b"[" * 50_000 + b"]" * 50_000,
            b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1),
        ):
            with pytest.raises(ValueError, match="nested too deeply"):
                loads_strict(deep)
    finally:
        sys.setrecursionlimit(old)
    at_limit = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert loads_strict(at_limit) is not None
    # brackets inside strings are text, not nesting
    assert loads_strict(b'{"note": "' + b"[{" * 200 + b'"}') == {"note": "[{" * 200}


def _wire_record(body: object) -> dict[str, object]:
    return {
        "v": 1,
        "device": "d",
        "seq": 7,
        "ts": "2026-01-01T00:00:00.000Z",
        "clock": "ntp",
        "kind": "event",
        "body": body,
        "prev": GENESIS_PREV,
        "key": "ed25519:0011223344556677",
        "hash": "ab" * 32,
        "sig": "c2ln",
    }


@settings(max_examples=600, deadline=None)
@given(json_values)
def test_loads_wire__agrees_with_the_reference_path(body: object) -> None:
    """Whichever path a payload takes, loads_wire gives the value json reads and the bytes signing_bytes gives."""
    import json

    from edge_agent.spine.records import encode, loads_wire

    rec = _wire_record(body)
    payload = encode(rec)
    obj, signing = loads_wire(payload)
    assert obj == json.loads(payload)
    try:
        expected = signing_bytes(json.loads(payload))
    except ValueError:
        assert signing is None  # not canonicalisable: check_record reports it as before
        return
    assert signing is None or signing == expected


@pytest.mark.parametrize(
    "body",
    [
        {"speed_kmh": 1.0, "lat": 39.900999999999996, "neg": -0.0, "list": [2.0, 0.5, -3.0]},
        {"note": "plain text", "n": 12, "nested": {"z": 1, "a": [True, None, "x"]}},
        {"ctrl": 'a\u0001b\n\t"\\', "bmp": "\u2028\ufeff\ue000 ü 中"},
    ],
)
def test_loads_wire__device_payloads_take_the_one_pass_path(body: object) -> None:
    from edge_agent.spine.records import encode, loads_wire

    rec = _wire_record(body)
    obj, signing = loads_wire(encode(rec))
    assert obj == rec
    assert signing == signing_bytes(rec)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b'{"v":1,"v":2}', "duplicate key"),
        (b'{"a":{"b":1,"b":1}}', "duplicate key"),
        (b'{"a":' * 65 + b"1" + b"}" * 65, "nested too deeply"),
        (b'{"a":NaN}', None),
    ],
)
def test_loads_wire__hostile_payloads_get_the_reference_verdict(payload: bytes, why: str | None) -> None:
    from edge_agent.spine.records import loads_strict, loads_wire

    if why is None:  # json reads NaN; canonicalising it then fails, as on the reference path
        obj, signing = loads_wire(payload)
        assert signing is None
        assert math.isnan(obj["a"])
        assert loads_strict(payload.decode()).keys() == obj.keys()
        return
    with pytest.raises(ValueError, match=why):
        loads_wire(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"b":1e-05,"a":1}',  # Python writes an exponent RFC 8785 does not
        b'{"b":12345678901234567,"a":1}',  # beyond 2**53
        b'{"b":1.0e2,"a":1}',  # not how encode() writes it
        b'{"b":0.00001,"a":1}',  # how orjson writes 1e-05: RFC 8785 form left to the reference
        b'{"b":1e+16,"a":1}',  # an integral float beyond 2**53
        b'{"b": 1,"a":1}',  # not compact
        '{"😀":1,"\ue000":2}'.encode(),  # sorted by UTF-16 units in RFC 8785
    ],
)
def test_loads_wire__other_encodings_take_the_reference_path(payload: bytes) -> None:
    import json

    from edge_agent.spine.records import loads_wire

    obj, signing = loads_wire(payload)
    assert obj == json.loads(payload)
    assert signing is None
