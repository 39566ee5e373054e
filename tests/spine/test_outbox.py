"""Outbox: group commit keeps the chain across restarts; eviction signs a gap; corruption is moved aside."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from edge_agent.spine.chain import ChainWriter
from edge_agent.spine.clock import Clock
from edge_agent.spine.keys import DeviceKey, generate_key
from edge_agent.spine.outbox import Outbox, reader
from edge_agent.spine.verify import Verifier


def verify_export(ob: Outbox, key: DeviceKey) -> Verifier:
    v = Verifier([key.public], strict_order=True)
    for line in ob.export():
        v.add_line(line)
    v.finish()
    return v


def test_outbox__seq_and_chain_continue_across_reopen(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    db = tmp_path / "o.db"
    for round_ in range(3):
        ob, gap = Outbox.open_checked(db)
        assert gap is None
        ob.append(
            [("event", {"r": round_, "i": i}) for i in range(5)], device="d", key=key, clock=Clock(), max_bytes=1 << 30
        )
        ob.close()
    ob, _ = Outbox.open_checked(db)
    seqs = [json.loads(x)["seq"] for x in ob.export()]
    assert seqs == list(range(1, 16))
    v = verify_export(ob, key)
    assert v.ok, [f.line() for f in v.findings]
    assert ob.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ob.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_chain_writer__group_commits_and_tells_only_after_commit(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    ob, _ = Outbox.open_checked(tmp_path / "o.db")
    seen: list[int] = []

    def on_commit(head: int) -> None:
        # Whoever is told must already find the record durable in a fresh connection.
        other = Outbox(tmp_path / "o.db", readonly=True)
        assert other.head()[0] >= head
        other.close()
        seen.append(head)

    w = ChainWriter(ob, device="d", key=key, clock=Clock(), max_bytes=1 << 30, batch_max=100, on_commit=on_commit)
    w.start()
    for i in range(1000):
        w.emit("telemetry", {"i": i})
    assert w.flush(30)
    w.stop()
    assert seen[-1] == 1000
    assert len(seen) < 1000  # batched: fewer commits than records
    assert verify_export(ob, key).ok


def test_outbox__full_evicts_low_priority_first_and_signs_gap(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    ob, _ = Outbox.open_checked(tmp_path / "o.db")
    clock = Clock()
    ob.append(
        [("trip", {"n": i, "pad": "x" * 200}) for i in range(10)], device="d", key=key, clock=clock, max_bytes=60_000
    )
    for i in range(40):
        ob.append(
            [("telemetry", {"n": i, "pad": "y" * 400}) for _ in range(5)],
            device="d",
            key=key,
            clock=clock,
            max_bytes=60_000,
        )
    kinds = [json.loads(x)["kind"] for x in ob.export()]
    assert kinds.count("trip") == 10  # trips survive while telemetry can go
    assert "gap" in kinds
    assert ob.stats().stored_bytes <= 60_000 + 10_000
    v = verify_export(ob, key)
    assert v.ok, [f.line() for f in v.findings if f.level == "fail"]
    assert any(f.what == "signed_gap" for f in v.findings)
    assert not any(f.what == "hole" for f in v.findings)


def test_outbox__corrupt_file_is_moved_aside_and_chain_continues(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    db = tmp_path / "o.db"
    ob, _ = Outbox.open_checked(db)
    ob.append([("event", {"i": i}) for i in range(50)], device="d", key=key, clock=Clock(), max_bytes=1 << 30)
    ob.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ob.close()
    data = bytearray(db.read_bytes())
    for off in range(4096, len(data), 97):
        data[off] ^= 0x5A
    db.write_bytes(bytes(data))
    ob2, gap = Outbox.open_checked(db)
    assert gap is not None and gap["reason"] == "outbox_corrupt"
    assert gap["last_known_seq"] == 50
    moved = list(tmp_path.glob("o.db.corrupt-*"))
    assert moved, "the corrupt file must be kept"
    rec = ob2.append_gap(gap, device="d", key=key, clock=Clock())
    assert rec["seq"] == 51


def test_outbox__in_a_folder_whose_name_holds_uri_characters_every_connection_opens_it(tmp_path: Path) -> None:
    # SQLite reads `?` as the start of a URI's query, `#` as a fragment and `%41` as "A".
    key = generate_key(tmp_path / "k")
    folder = tmp_path / "state ?#%41"
    folder.mkdir()
    db = folder / "o.db"
    ob, _ = Outbox.open_checked(db)
    ob.append(
        [("event", {"i": i, "pad": "a" * 200}) for i in range(200)],
        device="d",
        key=key,
        clock=Clock(),
        max_bytes=1 << 30,
    )
    ro = reader(db, None)  # the status line's and the station's
    assert [json.loads(x)["seq"] for x in ro.export()] == list(range(1, 201))
    ro.close()
    rw = Outbox(db)  # the publisher's
    rw.mark_delivered(range(1, 51))
    rw.close()
    ob.checkpoint_truncate()
    ob.close()
    with db.open("r+b") as f:  # the file loses its last 40 %: what is still whole in it is read from there
        f.truncate(db.stat().st_size * 6 // 10 // 4096 * 4096)
    ob, gap = Outbox.open_checked(db)
    assert gap is not None and gap["reason"] == "outbox_corrupt" and gap["kept"] > 20, gap
    ob.close()


def test_outbox__prune_keeps_undelivered(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    ob, _ = Outbox.open_checked(tmp_path / "o.db")
    ob.append([("event", {"i": i}) for i in range(10)], device="d", key=key, clock=Clock(), max_bytes=1 << 30)
    ob.mark_delivered(range(1, 6))
    assert ob.prune_delivered(-1) == 5
    st = ob.stats()
    assert (st.stored, st.depth, st.head_seq, st.last_delivered_seq) == (5, 5, 10, 5)
    try:
        ob.conn.execute("SELECT 1").fetchone()
    except sqlite3.Error as exc:  # pragma: no cover
        raise AssertionError(exc) from exc


def test_outbox__max_bytes_is_a_bound_even_for_tiny_records(tmp_path: Path) -> None:
    """Each eviction's gap record used to be bigger than what it freed, and never evicted (issue 9, defect 2)."""
    key = generate_key(tmp_path / "k")
    ob, _ = Outbox.open_checked(tmp_path / "o.db")
    bound = 20_000
    for i in range(300):
        ob.append(
            [("telemetry", {"i": i, "j": j}) for j in range(5)], device="d", key=key, clock=Clock(), max_bytes=bound
        )
        assert ob.stats().stored_bytes <= bound, i
    kinds = [json.loads(x)["kind"] for x in ob.export()]
    assert kinds.count("gap") == 1  # older undelivered gaps are merged into the newest
    assert kinds.count("telemetry") > 30  # the bound holds records (about 350 bytes each), not only gaps
    v = verify_export(ob, key)
    assert v.ok, [f.line() for f in v.findings if f.level == "fail"]
    assert not any(f.what == "hole" for f in v.findings)


def test_chain_writer__bound_lowered_on_a_full_disk_comes_back_with_space(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")
    ob, _ = Outbox.open_checked(tmp_path / "o.db")
    w = ChainWriter(ob, device="d", key=key, clock=Clock(), max_bytes=1 << 30)
    w.max_bytes = 64 * 1024  # as _emergency_room leaves it on a full disk
    w.start()
    try:
        w.emit("event", {"e": 1})
        assert w.flush(10)
        assert w.max_bytes == 1 << 30 or w.max_bytes > 64 * 1024  # this disk has room: raised again
    finally:
        w.stop()
        ob.close()
