"""`verify` fails closed on hostile input: duplicate keys, deep nesting, a lost start, bad gaps (issue 9, 5 and 10)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from edge_agent.spine.clock import Clock
from edge_agent.spine.keys import generate_key, public_pem
from edge_agent.spine.outbox import Outbox
from edge_agent.spine.records import make_record
from tests.broker import Broker, publish

DEEP = b"[" * 100_000 + b"]" * 100_000


def _stream(tmp_path: Path, n: int = 10) -> tuple[list[bytes], Path, object]:
    key = generate_key(tmp_path / "k")
    ob, _ = Outbox.open_checked(tmp_path / "o.db")
    ob.append([("telemetry", {"i": i}) for i in range(n)], device="d", key=key, clock=Clock(), max_bytes=1 << 30)
    pub = tmp_path / "device.pub.pem"
    pub.write_bytes(public_pem(key.public))
    lines = list(ob.export())
    ob.close()
    return lines, pub, key


def _verify(lines: list[bytes], pub: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "verify", "--pubkey", str(pub), *extra, "-"],
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        timeout=120,
        check=False,
    )  # type: ignore[call-overload, no-any-return]


def test_verify__deep_nesting_is_a_failure_and_reading_goes_on(tmp_path: Path) -> None:
    lines, pub, _ = _stream(tmp_path)
    r = _verify([*lines[:5], DEEP, *lines[5:]], pub)
    out = r.stdout.decode()
    assert r.returncode == 1, out
    assert "Traceback" not in r.stderr.decode()
    assert "line 6: not JSON this program accepts (nested too deeply)" in out
    assert "10 record(s) (seq 1..10)" in out  # the lines after it were read


def test_verify__duplicate_keys_are_refused(tmp_path: Path) -> None:
    lines, pub, _ = _stream(tmp_path)
    rec = lines[2].decode()
    dup = rec[:-1] + ',"body":{"i":999}}'
    r = _verify([*lines[:2], dup.encode(), *lines[3:]], pub)
    assert r.returncode == 1
    assert "duplicate key 'body'" in r.stdout.decode()


def test_verify__a_stream_missing_its_start_fails_unless_told_where_it_starts(tmp_path: Path) -> None:
    lines, pub, _ = _stream(tmp_path, 60)
    r = _verify(lines[50:], pub)
    assert r.returncode == 1
    assert "stream starts at seq 51: seq 1-50 are not in this input" in r.stdout.decode()
    assert _verify(lines[50:], pub, "--from-seq", "51").returncode == 0
    r = _verify(lines[50:], pub, "--from-seq", "40")
    assert r.returncode == 1 and "seq 40-50 missing" in r.stdout.decode()


def test_verify__gap_with_non_list_hashes_is_a_finding_not_a_traceback(tmp_path: Path) -> None:
    lines, pub, key = _stream(tmp_path, 3)
    last = json.loads(lines[-1])
    gap = make_record(
        device="d",
        seq=4,
        ts=last["ts"],
        clock="ntp",
        kind="gap",
        body={"reason": "x", "hashes": 7, "ranges": {}},
        prev=last["hash"],
        key=key,  # type: ignore[arg-type]
    )
    r = _verify([*lines, json.dumps(gap).encode()], pub)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr.decode()
    assert "gap record: `hashes` and `ranges` must be lists" in r.stdout.decode()


def test_verify_mqtt__deep_nesting_does_not_end_the_reading(broker: Broker, tmp_path: Path) -> None:
    lines, pub, _ = _stream(tmp_path, 6)
    result: dict[str, subprocess.CompletedProcess[str]] = {}
    cmd = [
        sys.executable,
        "-m",
        "edge_agent.cli",
        "verify",
        "--pubkey",
        str(pub),
        "--mqtt",
        broker.url,
        "--topic",
        "edge/s/d/rec/#",
        "--count",
        "7",
        "--idle",
        "3",
        "--timeout",
        "30",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t = threading.Thread(target=lambda: result.setdefault("r", proc.communicate(timeout=60)))  # type: ignore[arg-type]
    t.start()
    # Publish until the verifier has subscribed: retained messages reach it whenever it subscribes.
    for i, line in enumerate([*lines[:3], DEEP, *lines[3:]]):
        publish(broker, f"edge/s/d/rec/m{i}", [line], client_id=f"pub-{i}", retain=True)
    t.join(90)
    out, err = result["r"]  # type: ignore[misc]
    assert proc.returncode == 1, out + err
    assert "nested too deeply" in out
    assert "6 record(s)" in out
