"""A lost or damaged outbox never makes a seq twice: the chain continues after a signed gap (issue 9, defects 1 and 6)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from edge_agent.settings import AgentConfig
from edge_agent.spine.chain import ChainWriter
from edge_agent.spine.clock import Clock
from edge_agent.spine.gaps import loss_gap
from edge_agent.spine.keys import DeviceKey, generate_key
from edge_agent.spine.outbox import Outbox, is_damage, reader
from edge_agent.spine.verify import Verifier
from tests.helpers import wait_until


def _append(ob: Outbox, key: DeviceKey, n: int, tag: str) -> list[dict[str, object]]:
    return ob.append(
        [("event", {"t": tag, "i": i}) for i in range(n)], device="d", key=key, clock=Clock(), max_bytes=1 << 30
    )


def _new_outbox(tmp_path: Path) -> tuple[DeviceKey, Path, Outbox]:
    """A device key and a new outbox, opened as the agent opens it."""
    key = generate_key(tmp_path / "k")
    db = tmp_path / "o.db"
    return key, db, Outbox.open_checked(db)[0]


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
    key, db, ob = _new_outbox(tmp_path)
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
    key, db, ob = _new_outbox(tmp_path)
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
    key, db, ob = _new_outbox(tmp_path)
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


def test_outbox__records_still_whole_in_a_damaged_file_are_sent_and_only_the_rest_declared(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, db, ob = _new_outbox(tmp_path)
    made = _append(ob, key, 60, "a" * 200)
    # seq 61 holds a float whose canonical form (5) is not Python's (5.0): it must be kept all the same.
    made += ob.append([("event", {"w": 5.0})], device="d", key=key, clock=Clock(), max_bytes=1 << 30)
    made += _append(ob, key, 139, "a" * 200)
    ob.mark_delivered(range(1, 51))
    # One stored record altered in place (seq 70, i 8 -> 9): it still parses, but no longer hashes to its hash.
    ob.conn.execute("UPDATE records SET data = replace(data, '\"i\":8}', '\"i\":9}') WHERE seq = 70")
    # And one whose cell now holds an integer, not a blob (bytes() of it would be a terabyte of zeros).
    ob.conn.execute("UPDATE records SET data = 1000000000000 WHERE seq = 75")
    # And one whose other cells were damaged: its row is made anew from its record.
    ob.conn.execute("UPDATE records SET size = 'x', priority = 'y' WHERE seq = 80")
    ob.checkpoint_truncate()
    ob.close()
    with db.open("r+b") as f:  # the file loses its last 40 %
        f.truncate(db.stat().st_size * 6 // 10 // 4096 * 4096)
    ob, gap = Outbox.open_checked(db)
    assert gap is not None and gap["reason"] == "outbox_corrupt"
    kept = [s for s, _, _ in ob.undelivered(0, 1000)]
    declared = {s for a, b in gap["ranges"] for s in range(a, b + 1)}
    assert 20 < len(kept) == gap["kept"] < 150, gap
    assert 70 in declared and 70 not in kept  # the altered one is not sent
    assert 61 in kept and 69 in kept and 71 in kept and 75 in declared
    assert 80 in kept and ob.stats().stored_bytes == sum(len(d) for d in ob.export())
    assert not declared & set(kept) and declared | set(kept) == set(range(51, 201))
    assert gap["count"] == len(declared)
    assert any(f"{len(kept)} undelivered record(s) read whole" in r.getMessage() for r in caplog.records)
    (g,) = ob.append([("gap", gap)], device="d", key=key, clock=Clock(), max_bytes=1 << 30)
    assert g["seq"] == 201 and g["prev"] == made[-1]["hash"]
    # Central had 1-50; with what the device sends now, every seq is there or declared, and all verify.
    v = Verifier([key.public])
    for r in made[:50]:
        v.add(json.loads(json.dumps(r)))
    for data in ob.export(51):
        v.add(json.loads(data))
    v.finish()
    assert v.ok, [f.line() for f in v.findings]
    assert not [f for f in v.findings if f.what == "hole"]
    ob.close()


def test_outbox__a_damaged_file_whose_meta_lost_a_row_is_still_moved_aside_and_salvaged(tmp_path: Path) -> None:
    key, db, ob = _new_outbox(tmp_path)
    _append(ob, key, 200, "a" * 200)
    ob.conn.execute("DELETE FROM meta WHERE key = 'last_delivered_seq'")  # as a damaged page may leave it
    ob.checkpoint_truncate()
    ob.close()
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size * 6 // 10 // 4096 * 4096)
    ob, gap = Outbox.open_checked(db)
    assert gap is not None and gap["reason"] == "outbox_corrupt" and gap["last_known_seq"] == 200
    kept = [s for s, _, _ in ob.undelivered(0, 1000)]
    assert len(kept) == gap["kept"] > 20 and gap["count"] == 200 - len(kept)
    ob.close()


def test_loss_gap__declares_the_range_but_the_records_kept() -> None:
    body = loss_gap("outbox_corrupt", "x", (20, "h"), 5, [6, 7, 10, 20, 25])
    assert body["ranges"] == [[8, 9], [11, 19]] and body["count"] == 11
    assert loss_gap("outbox_corrupt", "x", (20, "h"), 5)["ranges"] == [[6, 20]]


# ---------------------------------------------------------------- damage found while running


def _stale_index_page(db: Path, index: str, old: bytes) -> None:
    """Put back one index's page as it was in `old`: what a WAL cut after a checkpoint leaves. The b-trees
    stay well formed (quick_check passes) but the index lacks the newer rows, so deleting one of them, or
    taking it out of that index, fails with "database disk image is malformed"."""
    conn = sqlite3.connect(db)
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    (root,) = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = ?", (index,)).fetchone()
    conn.close()
    data = bytearray(db.read_bytes())
    data[(root - 1) * size : root * size] = old[(root - 1) * size : root * size]
    db.write_bytes(bytes(data))


def _damaged_index(tmp_path: Path) -> tuple[Path, DeviceKey]:
    key, db, ob = _new_outbox(tmp_path)
    _append(ob, key, 10, "a")
    ob.checkpoint_truncate()
    old = db.read_bytes()
    _append(ob, key, 10, "b")
    ob.checkpoint_truncate()
    ob.close()
    _stale_index_page(db, "records_undelivered", old)
    return db, key


def _writer(ob: Outbox, key: DeviceKey, max_bytes: int = 1 << 30) -> ChainWriter:
    w = ChainWriter(ob, device="d", key=key, clock=Clock(), max_bytes=max_bytes)
    w.start()
    return w


def test_chain_writer__a_damaged_index_is_rebuilt_and_no_record_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db, key = _damaged_index(tmp_path)
    ob, gap = Outbox.open_checked(db)
    assert gap is None and ob.quick_check() == "ok"  # the start's check cannot see it
    # A bound so tight that this batch evicts undelivered records, which the damaged index lacks.
    w = _writer(ob, key, max_bytes=ob.stats().stored_bytes // 3)
    try:
        for i in range(5):
            w.emit("event", {"t": "c", "i": i})
        assert w.flush(10), w.last_error
    finally:
        w.stop()
    assert w.outbox is ob and not list(tmp_path.glob("o.db.corrupt-*"))
    assert any("rebuilt it from the records" in r.getMessage() for r in caplog.records)
    assert ob.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert w.head_seq >= 25  # 20, the 5 new ones and the outbox_full gap declaring what was evicted
    v = Verifier([key.public])
    for data in ob.export():
        v.add(json.loads(data))
    v.finish()
    assert v.ok, [f.line() for f in v.findings]
    ob.close()


def test_outbox__after_an_unclean_stop_a_damaged_index_is_found_and_rebuilt_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db, _ = _damaged_index(tmp_path)
    # An unclean stop: the WAL holds a commit no checkpoint has copied into the file.
    live = sqlite3.connect(db)
    live.execute("PRAGMA wal_autocheckpoint=0")
    live.execute("INSERT INTO meta(key, value) VALUES ('note', 'a commit left in the WAL')")
    live.commit()
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    for name in ("o.db", "o.db-wal", "o.db.head"):
        shutil.copy(tmp_path / name, stopped / name)
    live.close()
    ob, gap = Outbox.open_checked(stopped / "o.db")
    assert gap is None and not list(stopped.glob("*.corrupt-*"))
    assert any("an index disagreed with the records" in r.getMessage() for r in caplog.records)
    assert [s for s, _, _ in ob.undelivered(0, 100)] == list(range(1, 21))  # 11-20 were missing from it
    ob.close()


def test_chain_writer__damage_another_connection_found_is_mended_by_the_writer(tmp_path: Path) -> None:
    db, key = _damaged_index(tmp_path)
    ob, _ = Outbox.open_checked(db)
    publisher = Outbox(db)  # as the MQTT publisher's own connection
    with pytest.raises(sqlite3.DatabaseError) as caught:
        publisher.mark_delivered([15])
    assert is_damage(caught.value)
    w = _writer(ob, key)
    try:
        w.report_damage(caught.value)

        def delivered() -> bool:
            try:
                publisher.mark_delivered([15])
            except sqlite3.DatabaseError:
                return False
            return True

        assert wait_until(delivered, 10), w.last_error
        assert publisher.first_undelivered_seq() == 1
        assert [s for s, _, _ in publisher.undelivered(14, 2)] == [16, 17]
    finally:
        w.stop()
        publisher.close()
        ob.close()


def test_chain_writer__a_damaged_outbox_is_moved_aside_and_the_chain_goes_on_after_a_signed_gap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, db, ob = _new_outbox(tmp_path)
    made = _append(ob, key, 10, "a")
    ob.mark_delivered(range(1, 4))
    # The file's head went back while its rows did not (meta and records from two different moments).
    ob.conn.execute("UPDATE meta SET value = '5' WHERE key = 'head_seq'")
    follower = Outbox(db, readonly=True)  # the station's or status line's reader
    w = _writer(ob, key)
    try:
        w.emit("event", {"t": "b"})
        assert w.flush(10), w.last_error
        assert w.outbox is not ob
        assert w.head_seq == 12  # never seq 6 again: the gap is 11, the record 12
    finally:
        w.stop()
    assert any(r.levelname == "CRITICAL" and "is damaged" in r.getMessage() for r in caplog.records)
    (moved,) = tmp_path.glob("o.db.corrupt-*Z")
    assert Outbox(moved, readonly=True).head()[0] == 5
    assert follower.replaced()
    fresh = reader(db, follower)
    assert fresh is not follower and not fresh.replaced()
    exported = [json.loads(d) for d in fresh.export()]
    # The undelivered 4-10 were read whole from the moved file and are sent from the fresh one: none is lost.
    assert [e["seq"] for e in exported] == list(range(4, 13))
    assert [e["hash"] for e in exported[:7]] == [m["hash"] for m in made[3:]]
    g, r = exported[-2:]
    assert g["kind"] == "gap" and g["body"]["reason"] == "outbox_corrupt"
    assert g["body"]["ranges"] == [] and g["body"]["kept"] == 7 and g["prev"] == made[-1]["hash"]
    assert "head is behind its records" in g["body"]["detail"]
    assert r["seq"] == 12 and r["body"] == {"t": "b"}
    fresh.close()
    w.outbox.close()


def test_outbox__a_long_recovery_beats_the_callers_heartbeat(tmp_path: Path) -> None:
    """REINDEX, the integrity check and a move-aside's salvage take seconds on a Pi with a large outbox; the
    chain writer's heartbeat must not go stale meanwhile (the watchdog would kill the agent mid-recovery)."""
    db, key = _damaged_index(tmp_path)  # seq 11-20 are missing from an index
    ob = Outbox(db)
    for _ in range(20):
        _append(ob, key, 1000, "c" * 100)
    with pytest.raises(sqlite3.DatabaseError) as caught:
        ob.conn.execute("UPDATE records SET delivered_at = 1.0 WHERE seq = 15")
    assert is_damage(caught.value)
    beats: list[float] = []
    same, gap = ob.recover(caught.value, beat=lambda: beats.append(time.monotonic()))
    assert same is ob and gap is None and ob.quick_check() == "ok"
    assert len(beats) >= 3, "REINDEX and the check of 20,020 records beat the heartbeat"
    # Damage no index mends: moved aside, and the salvage of every record beats too.
    beats.clear()
    fresh, gap = ob.recover(sqlite3.IntegrityError("a seq stored above the head"), beat=lambda: beats.append(1.0))
    assert gap is not None and gap["kept"] == 20020 and len(beats) >= 3
    fresh.close()


def test_outbox_export_file__every_record_still_whole_in_a_moved_aside_outbox(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """What the agent's salvage (bounded in time, undelivered records only) leaves in the moved file, a
    technician gets out: every record still whole, delivered or not, each the one that was made."""
    from edge_agent.cli.main import main
    from edge_agent.spine.records import check_record

    key, db, ob = _new_outbox(tmp_path)
    made = _append(ob, key, 200, "a" * 200)
    ob.mark_delivered(range(1, 51))
    ob.conn.execute("UPDATE records SET data = replace(data, '\"i\":8}', '\"i\":9}') WHERE seq = 9")  # no longer whole
    ob.checkpoint_truncate()
    ob.close()
    with db.open("r+b") as f:  # the file loses its last 40 %
        f.truncate(db.stat().st_size * 6 // 10 // 4096 * 4096)
    fresh, gap = Outbox.open_checked(db)
    fresh.close()
    assert gap is not None
    moved = tmp_path / str(gap["moved_to"])
    assert main(["outbox", "export", "--file", str(moved)]) == 0
    out, err = capsysbinary.readouterr()
    got = [json.loads(line) for line in out.splitlines()]
    seqs = [r["seq"] for r in got]
    assert seqs == sorted(seqs) and 9 not in seqs and {1, 8, 10, 50, 51} <= set(seqs)
    assert len(got) > gap.get("kept", 0), "delivered records too, not only what the salvage queued again"
    assert all(r == json.loads(json.dumps(made[r["seq"] - 1])) and check_record(r, key.public) == [] for r in got)
    summary = err.decode()
    assert f"{len(got)} whole record(s) from {moved}, seq 1-{seqs[-1]}; {seqs[-1] - len(got)} seq(s)" in summary
    assert main(["outbox", "export", "--file", str(moved), "--since", "40"]) == 0
    assert [json.loads(line)["seq"] for line in capsysbinary.readouterr()[0].splitlines()][:2] == [40, 41]
    assert main(["outbox", "export", "--file", str(tmp_path / "nothing")]) == 1
    assert "no such file" in capsysbinary.readouterr()[1].decode()


def test_outbox_export__a_file_that_is_no_outbox_and_a_damaged_outbox_say_so(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], device: tuple[AgentConfig, DeviceKey]
) -> None:
    """`--file` on a photo or another SQLite file used to print "0 whole record(s)" and exit 0, as if every
    record were lost; export of a damaged live outbox stopped with a traceback."""
    from edge_agent.cli.main import main

    photo = tmp_path / "slip.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + bytes(5000))
    other = tmp_path / "review.db"
    sqlite3.connect(other).execute("CREATE TABLE items (id INTEGER PRIMARY KEY)").connection.close()
    expect = {
        photo: "cannot be read as an outbox (not an SQLite database",
        other: "cannot be read as an outbox (no records table: not an edge-agent outbox)",
        tmp_path: "not a file",
    }
    for path, message in expect.items():
        assert main(["outbox", "export", "--file", str(path)]) == 1
        out, err = capsysbinary.readouterr()
        assert out == b"" and message in err.decode(), err
    cfg, _key = device
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.db_path.write_bytes(b"\x5a" * 65536)  # the live outbox, damaged
    config = tmp_path / "config.toml"
    config.write_text(f'profile = "sensors"\nstate_dir = "{cfg.state_dir}"\n[device]\nid = "dev-1"\nsite = "site-a"\n')
    assert main(["outbox", "export", "-c", str(config)]) == 1
    err = capsysbinary.readouterr()[1].decode()
    assert "outbox.db: damaged (" in err and "Start the agent" in err and "Traceback" not in err
