"""Key rotation: a signed command swaps the device key; `verify` follows announced keys and rejects others."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.cli import main as cli
from edge_agent.spine.keys import DeviceKey, key_id_for, load_key, public_pem, public_raw_b64
from edge_agent.spine.records import encode, make_record, parse_line
from edge_agent.spine.verify import FAIL, Verifier
from tests.broker import Broker, Subscriber
from tests.helpers import export_records, verify_records
from tests.spine.test_commands import start_agent, stop_agent


@pytest.fixture
def rotated(tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Any:
    rig = start_agent(tmp_path, broker, monkeypatch)
    assert rig.agent.writer is not None
    old = rig.agent.writer.key
    try:
        with Subscriber(broker, f"{rig.base}/rec/#", client_id="central-rot") as sub:
            rig.agent.writer.emit("event", {"event": "before"})
            rig.send(rig.signed("rotate_key"))
            (out,) = rig.wait_outcomes(1)
            rig.agent.writer.emit("event", {"event": "after"})
            rig.agent.writer.flush(5)
            live = [parse_line(m.payload) for m in sub.wait_for(4, timeout_s=10)]
            yield rig, old, out, live
    finally:
        stop_agent(rig)


def test_key_rotation__command_swaps_the_key_and_announces_it_signed_by_the_old(rotated: Any) -> None:
    rig, old, out, _ = rotated
    new = load_key(rig.agent.cfg.key_path)
    assert out["event"] == "command_done"
    assert out["result"]["old_key_id"] == old.key_id != new.key_id == out["result"]["new_key_id"]
    assert stat.S_IMODE(rig.agent.cfg.key_path.stat().st_mode) == 0o600
    assert not rig.agent.cfg.key_path.with_name("device.key.new").exists()
    assert rig.agent.writer.key.key_id == new.key_id
    recs = export_records(rig.agent.cfg.db_path)
    (rot,) = [r for r in recs if r["kind"] == "key_rotation"]
    assert rot["key"] == old.key_id
    assert rot["body"]["new_key_id"] == new.key_id
    assert rot["body"]["new_public_key"] == public_raw_b64(new.public)
    assert [r["key"] for r in recs if r["seq"] < rot["seq"]] == [old.key_id] * (rot["seq"] - 1)
    after = [r for r in recs if r["seq"] > rot["seq"]]
    assert after and {r["key"] for r in after} == {new.key_id}
    assert [r["body"].get("event") for r in after] == ["command_done", "after"]


def test_key_rotation__verify_follows_the_rotation_with_only_the_old_public_key(
    rotated: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rig, old, _, live = rotated
    recs = export_records(rig.agent.cfg.db_path)
    v = verify_records(recs, [old.public])
    assert v.ok, [f.line() for f in v.findings]
    # The live MQTT stream, in arrival order, verifies the same way.
    lv = Verifier([old.public], strict_order=False)
    for r in live:
        lv.add(r)
    lv.finish()
    assert lv.ok and lv.summary()["unique"] == len(live) == len(recs)
    # And so does the CLI on an export.
    pem, stream = tmp_path / "old.pub.pem", tmp_path / "records.jsonl"
    pem.write_bytes(public_pem(old.public))
    stream.write_bytes(b"\n".join(encode(r) for r in recs) + b"\n")
    assert cli.main(["verify", "--pubkey", str(pem), str(stream)]) == 0
    assert "INTACT: device dev-1" in capsys.readouterr().out


def test_key_rotation__records_signed_by_an_unannounced_key_are_rejected(rotated: Any) -> None:
    rig, old, _, _ = rotated
    recs = export_records(rig.agent.cfg.db_path)
    stranger = Ed25519PrivateKey.generate()
    skey = DeviceKey(stranger, key_id_for(stranger.public_key()))
    last = recs[-1]
    forged = make_record(
        device="dev-1",
        seq=last["seq"] + 1,
        ts=last["ts"],
        clock="ntp",
        kind="event",
        body={"event": "forged"},
        prev=last["hash"],
        key=skey,
    )
    v = verify_records([*recs, forged], [old.public])
    assert [(f.what, f.seq) for f in v.findings if f.level == FAIL] == [("unknown_key", forged["seq"])]


def test_key_rotation__a_rotation_not_signed_by_a_known_key_announces_nothing(rotated: Any) -> None:
    rig, old, _, _ = rotated
    recs = export_records(rig.agent.cfg.db_path)
    stranger = Ed25519PrivateKey.generate()
    skey = DeviceKey(stranger, key_id_for(stranger.public_key()))
    last = recs[-1]
    fake_rot = make_record(
        device="dev-1",
        seq=last["seq"] + 1,
        ts=last["ts"],
        clock="ntp",
        kind="key_rotation",
        body={
            "old_key_id": skey.key_id,
            "new_key_id": skey.key_id,
            "new_public_key": base64.b64encode(stranger.public_key().public_bytes_raw()).decode(),
        },
        prev=last["hash"],
        key=skey,
    )
    follow = make_record(
        device="dev-1",
        seq=fake_rot["seq"] + 1,
        ts=last["ts"],
        clock="ntp",
        kind="event",
        body={"event": "forged"},
        prev=fake_rot["hash"],
        key=skey,
    )
    v = verify_records([*recs, fake_rot, follow], [old.public])
    fails = {(f.what, f.seq) for f in v.findings if f.level == FAIL}
    assert fails == {("unknown_key", fake_rot["seq"]), ("unknown_key", follow["seq"])}


def test_verify__records_signed_by_the_old_key_after_a_rotation_fail(tmp_path: Path) -> None:
    """After a key_rotation, the old key is retired: a record it signs later is refused (issue 9, defect 10)."""
    from edge_agent.spine.clock import Clock
    from edge_agent.spine.keys import generate_key, public_raw_b64
    from edge_agent.spine.outbox import Outbox
    from edge_agent.spine.verify import Verifier

    old = generate_key(tmp_path / "old.key")
    new = generate_key(tmp_path / "new.key")
    ob, _ = Outbox.open_checked(tmp_path / "o.db")
    body = {"old_key_id": old.key_id, "new_key_id": new.key_id, "new_public_key": public_raw_b64(new.public)}
    # The writer's way: the batch switches key right after the rotation record.
    ob.append(
        [("event", {"i": 1}), ("key_rotation", body), ("event", {"i": 2})],
        device="d",
        key=old,
        clock=Clock(),
        max_bytes=1 << 30,
        rotate_to=new,
    )
    good = [json.loads(x) for x in ob.export()]
    assert [r["key"] for r in good] == [old.key_id, old.key_id, new.key_id]
    # A stolen old key keeps signing after the rotation.
    ob.append([("event", {"i": 3})], device="d", key=old, clock=Clock(), max_bytes=1 << 30)
    recs = [json.loads(x) for x in ob.export()]
    v = Verifier([old.public])
    for r in recs:
        v.add(r)
    findings = v.finish()
    assert [(f.what, f.seq) for f in findings if f.level == "fail"] == [("retired_key", 4)]
    ob.close()


def test_finish_rotation__a_crash_between_commit_and_swap_is_finished_at_start(tmp_path: Path) -> None:
    from edge_agent.spine.checkpoint import finish_rotation
    from edge_agent.spine.clock import Clock
    from edge_agent.spine.keys import generate_key
    from edge_agent.spine.outbox import Outbox

    key_path = tmp_path / "keys" / "device.key"
    old = generate_key(key_path)
    new = generate_key(key_path.with_name("device.key.new"))
    ob, _ = Outbox.open_checked(tmp_path / "o.db")
    body = {"old_key_id": old.key_id, "new_key_id": new.key_id, "new_public_key": public_raw_b64(new.public)}
    ob.append([("key_rotation", body)], device="d", key=old, clock=Clock(), max_bytes=1 << 30, rotate_to=new)
    finish_rotation(key_path, ob)  # the agent died before os.replace
    assert load_key(key_path).key_id == new.key_id
    assert not key_path.with_name("device.key.new").exists()
    # A new key that was never announced is dropped, the device key stays.
    stray = generate_key(key_path.with_name("device.key.new"))
    finish_rotation(key_path, ob)
    assert load_key(key_path).key_id == new.key_id != stray.key_id
    assert not key_path.with_name("device.key.new").exists()
    ob.close()
