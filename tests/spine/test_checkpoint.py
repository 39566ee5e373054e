"""Signed checkpoints: retained on the broker, and `verify --checkpoint` catches a truncated tail."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.cli import main as cli
from edge_agent.spine.checkpoint import make_checkpoint
from edge_agent.spine.keys import DeviceKey, key_id_for, public_pem
from edge_agent.spine.records import encode
from edge_agent.spine.remote.message import signing_bytes
from edge_agent.spine.verify import FAIL, INFO, check_checkpoint
from tests.broker import Broker, Subscriber
from tests.helpers import export_records, verify_records
from tests.spine.test_commands import Rig, start_agent, stop_agent


@pytest.fixture
def rig(tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Any:
    r = start_agent(tmp_path, broker, monkeypatch)
    assert r.agent.writer is not None
    for i in range(5):
        r.agent.writer.emit("event", {"event": "test", "i": i})
    r.agent.writer.flush(5)
    try:
        yield r
    finally:
        stop_agent(r)


def test_publish_checkpoint__is_retained_signed_and_names_the_committed_head(rig: Rig) -> None:
    assert rig.agent.writer is not None
    cp = rig.agent.publish_checkpoint()
    assert cp is not None
    head = export_records(rig.agent.cfg.db_path)[-1]
    assert (cp["device"], cp["seq"], cp["head_hash"], cp["key"]) == ("dev-1", 5, head["hash"], head["key"])
    rig.agent.writer.key.public.verify(base64.b64decode(cp["sig"]), signing_bytes(cp))
    assert json.loads((rig.agent.cfg.state_dir / "checkpoint.json").read_text()) == cp
    # A consumer that subscribes later still gets it: retained.
    with Subscriber(rig.broker, f"{rig.base}/checkpoint", client_id="late-central") as sub:
        (msg,) = sub.wait_for(1)
    assert msg.retain and msg.qos == 1 and json.loads(msg.payload) == cp


def test_publish_checkpoint__on_shutdown_covers_the_last_record(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = start_agent(tmp_path, broker, monkeypatch)
    assert rig.agent.writer is not None
    rig.agent.cfg.checkpoint.interval_s = 300
    rig.agent.writer.emit("event", {"event": "last words"})
    rig.agent.writer.flush(5)
    stop_agent(rig)
    with Subscriber(broker, f"{rig.base}/checkpoint", client_id="late-central") as sub:
        (msg,) = sub.wait_for(1)
    cp = json.loads(msg.payload)
    recs = export_records(rig.agent.cfg.db_path)
    assert cp["seq"] == recs[-1]["seq"] and cp["head_hash"] == recs[-1]["hash"]


def test_check_checkpoint__a_truncated_tail_fails_though_the_chain_alone_looks_intact(rig: Rig) -> None:
    assert rig.agent.writer is not None
    cp = rig.agent.publish_checkpoint()
    assert cp is not None
    recs = export_records(rig.agent.cfg.db_path)
    keys = [rig.agent.writer.key.public]
    full = verify_records(recs, keys)
    assert [(f.level, f.what) for f in check_checkpoint(full, cp, keys)] == [(INFO, "checkpoint")]
    cut = verify_records(recs[:-2], keys)
    assert cut.ok  # without the checkpoint, nothing shows that the last two are missing
    (finding,) = check_checkpoint(cut, cp, keys)
    assert (finding.level, finding.what, finding.seq) == (FAIL, "truncated_tail", 5)
    assert "stream ends at seq 3" in finding.message and "records 4-5 are missing" in finding.message


def test_check_checkpoint__refuses_a_forged_or_altered_checkpoint(rig: Rig) -> None:
    assert rig.agent.writer is not None
    cp = rig.agent.publish_checkpoint()
    assert cp is not None
    recs = export_records(rig.agent.cfg.db_path)
    keys = [rig.agent.writer.key.public]
    v = verify_records(recs, keys)
    stranger = Ed25519PrivateKey.generate()
    forged = make_checkpoint(
        DeviceKey(stranger, key_id_for(stranger.public_key())),
        device="dev-1",
        seq=2,
        head_hash=recs[1]["hash"],
        ts=cp["ts"],
    )
    other_head = make_checkpoint(rig.agent.writer.key, device="dev-1", seq=3, head_hash="ab" * 32, ts=cp["ts"])
    cases = {
        "altered seq": (dict(cp, seq=2), "bad_checkpoint", "signature does not verify"),
        "unannounced key": (forged, "bad_checkpoint", "neither given nor announced"),
        "missing field": ({k: v for k, v in cp.items() if k != "head_hash"}, "bad_checkpoint", "head_hash"),
        "not a checkpoint": ([1, 2], "bad_checkpoint", "integer seq"),
        "other head": (other_head, "fork", "differs from the head hash"),
    }
    for name, (bad, what, text) in cases.items():
        (f,) = check_checkpoint(v, bad, keys)  # type: ignore[arg-type]
        assert (f.level, f.what) == (FAIL, what), name
        assert text in f.message, name


def test_verify_cli__checkpoint_option(rig: Rig, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rig.agent.writer is not None
    cp = rig.agent.publish_checkpoint()
    recs = export_records(rig.agent.cfg.db_path)
    pem, cp_file = tmp_path / "dev.pub.pem", tmp_path / "checkpoint.json"
    pem.write_bytes(public_pem(rig.agent.writer.key.public))
    cp_file.write_text(json.dumps(cp))
    full, cut = tmp_path / "full.jsonl", tmp_path / "cut.jsonl"
    full.write_bytes(b"".join(encode(r) + b"\n" for r in recs))
    cut.write_bytes(b"".join(encode(r) + b"\n" for r in recs[:-1]))
    assert cli.main(["verify", "--pubkey", str(pem), "--checkpoint", str(cp_file), str(full)]) == 0
    assert "INTACT: device dev-1, 5 record(s)" in capsys.readouterr().out
    assert cli.main(["verify", "--pubkey", str(pem), str(cut)]) == 0  # the plain check cannot tell
    capsys.readouterr()
    assert cli.main(["verify", "--pubkey", str(pem), "--checkpoint", str(cp_file), str(cut)]) == 1
    out = capsys.readouterr().out
    assert "FAIL seq 5: truncated_tail: stream ends at seq 4" in out and "NOT INTACT" in out
    cp_file.write_text("{not json")
    assert cli.main(["verify", "--pubkey", str(pem), "--checkpoint", str(cp_file), str(full)]) == 1
    assert "expected a checkpoint JSON object" in capsys.readouterr().err
