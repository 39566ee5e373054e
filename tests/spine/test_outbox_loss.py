"""A lost or damaged outbox never makes a seq twice: the chain continues after a signed gap (issue 9, defects 1 and 6)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_agent.spine.clock import Clock
from edge_agent.spine.keys import DeviceKey, generate_key
from edge_agent.spine.outbox import Outbox
from edge_agent.spine.verify import Verifier


def _append(ob: Outbox, key: DeviceKey, n: int, tag: str) -> list[dict[str, object]]:
    return ob.append(
        [("event", {"t": tag, "i": i}) for i in range(n)], device="d", key=key, clock=Clock(), max_bytes=1 << 30
    )


def _zero(db: Path) -> None:
    db.write_bytes(b"")
    for s in ("-wal", "-shm"):
        Path(str(db) + s).unlink(missing_ok=True)


def _delete(db: Path) -> None:
    for s in ("", "-wal", "-shm"):
        Path(str(db) + s).unlink(missing_ok=True)


@pytest.mark.parametrize("lose", [_zero, _delete], ids=["zeroed", "deleted"])
def test_outbox__lost_file_continues_after_the_highest_seq_with_a_signed_gap(
    tmp_path: Path, lose: object, caplog: pytest.LogCaptureFixture
) -> None:
    key = generate_key(tmp_path / "k")
    db = tmp_path / "o.db"
    ob, _ = Outbox.open_checked(db)
    first = _append(ob, key, 5, "a")
    ob.mark_delivered([1, 2])
    ob.close()
    lose(db)  # type: ignore[operator]
    ob, gap = Outbox.open_checked(db)
    assert gap is not None and gap["reason"] == "outbox_lost"
    assert gap["ranges"] == [[1, 5]] and gap["last_known_seq"] == 5
    assert any(r.levelname == "CRITICAL" and "seq 5 was already made" in r.getMessage() for r in caplog.records)
    assert ob.head() == (5, first[-1]["hash"])
    (g,) = ob.append([("gap", gap)], device="d", key=key, clock=Clock(), max_bytes=1 << 30)
    after = _append(ob, key, 3, "b")
    assert [g["seq"], *(r["seq"] for r in after)] == [6, 7, 8, 9]
    assert g["prev"] == first[-1]["hash"]
    # Central had seq 1-2 (delivered); what it gets now verifies: 3-5 are declared, nothing is forked.
    v = Verifier([key.public])
    for r in [*first[:2], g, *after]:
        v.add(json.loads(json.dumps(r)))
    v.finish()
    assert v.ok, [f.line() for f in v.findings]
    assert any(f.what == "signed_gap" and "3-5" in f.message for f in v.findings)


def test_outbox__lost_wal_tail_never_reuses_a_seq(tmp_path: Path) -> None:
    """The DB file as it was before the last commits (their WAL frames lost): the sidecar knows better."""
    key = generate_key(tmp_path / "k")
    db = tmp_path / "o.db"
    ob, _ = Outbox.open_checked(db)
    _append(ob, key, 4, "a")
    ob.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ob.close()
    old = tmp_path / "old.db"
    shutil.copy(db, old)
    ob, _ = Outbox.open_checked(db)
    lost = _append(ob, key, 3, "b")
    ob.close()
    _delete(db)
    shutil.copy(old, db)
    ob, gap = Outbox.open_checked(db)
    assert gap is not None and gap["reason"] == "outbox_lost" and gap["ranges"] == [[5, 7]]
    (g,) = ob.append([("gap", gap)], device="d", key=key, clock=Clock(), max_bytes=1 << 30)
    assert g["seq"] == 8 and g["prev"] == lost[-1]["hash"]


def test_outbox__corrupt_file_declares_every_undelivered_seq(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    db = tmp_path / "o.db"
    ob, _ = Outbox.open_checked(db)
    _append(ob, key, 18, "a")
    ob.mark_delivered(range(1, 10))
    ob.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ob.close()
    db.write_bytes(b"\0" * db.stat().st_size)  # zeroed in place: not a database any more
    ob, gap = Outbox.open_checked(db)
    assert gap is not None and gap["reason"] == "outbox_corrupt"
    # The meta table is gone with the file; the sidecar still knows the head: at least 10-18 are declared.
    assert gap["last_known_seq"] == 18
    (a, b) = gap["ranges"][0]
    assert a <= 10 and b == 18
    assert ob.head()[0] == 18
