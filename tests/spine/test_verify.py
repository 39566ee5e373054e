"""`edge-agent verify` catches a flipped byte, a dropped record, a reordering, a duplicate, a stranger's key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.spine.clock import Clock
from edge_agent.spine.keys import generate_key, public_pem
from edge_agent.spine.outbox import Outbox


@pytest.fixture
def stream(tmp_path: Path) -> tuple[list[bytes], Path]:
    key = generate_key(tmp_path / "k")
    ob, _ = Outbox.open_checked(tmp_path / "o.db")
    ob.append(
        [("telemetry", {"i": i, "lat": 39.9 + i / 1000}) for i in range(20)],
        device="d",
        key=key,
        clock=Clock(),
        max_bytes=1 << 30,
    )
    pub = tmp_path / "device.pub.pem"
    pub.write_bytes(public_pem(key.public))
    return list(ob.export()), pub


def run_verify(lines: list[bytes], pub: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "verify", "--pubkey", str(pub), "-"],
        input=b"\n".join(lines).decode() + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_verify__intact_stream_exits_0(stream: tuple[list[bytes], Path]) -> None:
    lines, pub = stream
    r = run_verify(lines, pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "INTACT: device d, 20 record(s)" in r.stdout


def test_verify__flipped_body_byte(stream: tuple[list[bytes], Path]) -> None:
    lines, pub = stream
    rec = json.loads(lines[7])
    rec["body"]["lat"] = rec["body"]["lat"] + 1e-9
    lines[7] = json.dumps(rec).encode()
    r = run_verify(lines, pub)
    assert r.returncode == 1
    assert "seq 8: altered" in r.stdout


def test_verify__raw_byte_flip_anywhere(stream: tuple[list[bytes], Path]) -> None:
    lines, pub = stream
    raw = bytearray(lines[3])
    i = raw.index(b'"i":') + 4
    raw[i] = ord("7") if raw[i] != ord("7") else ord("8")
    lines[3] = bytes(raw)
    r = run_verify(lines, pub)
    assert r.returncode == 1
    assert "seq 4: altered" in r.stdout


def test_verify__dropped_record_is_a_silent_hole(stream: tuple[list[bytes], Path]) -> None:
    lines, pub = stream
    del lines[10]
    r = run_verify(lines, pub)
    assert r.returncode == 1
    assert "hole: seq 11 missing with no gap record" in r.stdout


def test_verify__reordered_records(stream: tuple[list[bytes], Path]) -> None:
    lines, pub = stream
    lines[4], lines[5] = lines[5], lines[4]
    r = run_verify(lines, pub)
    assert r.returncode == 1
    assert "out_of_order" in r.stdout


def test_verify__duplicate_in_export(stream: tuple[list[bytes], Path]) -> None:
    lines, pub = stream
    lines.insert(6, lines[5])
    r = run_verify(lines, pub)
    assert r.returncode == 1
    assert "duplicate" in r.stdout


def test_verify__wrong_key_and_garbage(stream: tuple[list[bytes], Path], tmp_path: Path) -> None:
    lines, _ = stream
    other = tmp_path / "other.pem"
    other.write_bytes(public_pem(generate_key(tmp_path / "k2").public))
    r = run_verify(lines, other)
    assert r.returncode == 1
    assert "unknown_key" in r.stdout
    r = run_verify([b"not json", *lines], stream[1])
    assert r.returncode == 1
    assert "line 1: not JSON" in r.stdout


def test_verify_cli__an_input_with_no_records_is_not_called_intact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed "INTACT: device None, 0 record(s)" and exited 1: a verdict and an exit code that disagree."""
    from edge_agent.cli.main import main

    key = generate_key(tmp_path / "k")
    pem = tmp_path / "k.pem"
    pem.write_bytes(public_pem(key.public))
    empty = tmp_path / "records.jsonl"
    empty.write_bytes(b"\n")
    assert main(["verify", "--pubkey", str(pem), str(empty)]) == 1
    out, err = capsys.readouterr()
    assert "INTACT" not in out and f"{empty}: no records to verify" in err


def test_verify_cli__an_export_of_two_devices_is_checked_one_device_at_a_time(
    stream: tuple[list[bytes], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`central export` without --device writes every device's records into one file."""
    from edge_agent.cli.main import main

    lines, pub = stream
    key = generate_key(tmp_path / "k2")
    ob, _ = Outbox.open_checked(tmp_path / "o2.db")
    ob.append([("event", {"i": i}) for i in range(5)], device="e", key=key, clock=Clock(), max_bytes=1 << 30)
    both = tmp_path / "both.jsonl"
    both.write_bytes(b"\n".join(lines + list(ob.export())) + b"\n")
    assert main(["verify", "--pubkey", str(pub), str(both)]) == 1
    out, _ = capsys.readouterr()
    assert "record of device 'e' in a stream of 'd' (verify one device at a time: --device ID)" in out
    assert main(["verify", "--pubkey", str(pub), "--device", "d", str(both)]) == 0
    out, _ = capsys.readouterr()
    assert "skipped 5 record(s) of other devices: e 5" in out
    assert "INTACT: device d, 20 record(s) (seq 1..20), 20 received, 0 failure(s)" in out
    assert main(["verify", "--pubkey", str(pub), "--device", "f", str(both)]) == 1
    _, err = capsys.readouterr()
    assert f"{both}: no records of device 'f' to verify (check --device)" in err
