"""`edge-agent central devices|status|anomalies|export`: what a person types, what they read."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.central.db import open_db
from edge_agent.central.ingest import Ingestor, Message
from edge_agent.central.simulate import build_fleet, step
from edge_agent.cli.main import main
from edge_agent.spine.keys import generate_key, public_pem


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        rc = main(["central", *args])
    except SystemExit as exc:  # usage errors exit 2, as argparse's own do
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def _ingest(dsn: str, fleet_size: int = 2, rounds: int = 20, **misbehave: int) -> list:  # type: ignore[type-arg]
    fleet = build_fleet(fleet_size, seed="cli", misbehave=misbehave)
    db = open_db(dsn)
    try:
        from edge_agent.central.registry import add_devices, parse_public_key

        add_devices(db, [(d.device, d.site, parse_public_key(d.keys[0], "test")) for d in fleet])
        ing = Ingestor(db)
        msgs = []
        for _ in range(rounds):
            now = datetime.now(UTC)
            for d in fleet:
                msgs += [Message(o.topic, o.payload, now.timestamp()) for o in step(d, "edge", now)]
        ing.process(msgs)
    finally:
        db.close()
    return fleet


def test_devices__add_list_revoke(tmp_path: Path, sqlite_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    key = generate_key(tmp_path / "device.key")
    pem = tmp_path / "device.pub.pem"
    pem.write_bytes(public_pem(key.public))
    rc, out, _ = _run(
        capsys, "devices", "add", "--db", sqlite_dsn, "--device", "truck-7", "--site", "bj", "--pubkey", str(pem)
    )
    assert rc == 0 and key.key_id in out
    rc, _, err = _run(
        capsys, "devices", "add", "--db", sqlite_dsn, "--device", "truck-7", "--site", "bj", "--pubkey", str(pem)
    )
    assert rc == 1 and "already registered" in err and "--replace" in err
    rc, out, _ = _run(capsys, "devices", "list", "--db", sqlite_dsn, "--json")
    assert [(d["device"], d["status"], d["key_id"]) for d in json.loads(out)] == [("truck-7", "active", key.key_id)]
    rc, out, _ = _run(capsys, "devices", "revoke", "--db", sqlite_dsn, "--device", "truck-7")
    assert rc == 0 and "after seq 0" in out
    rc, out, _ = _run(capsys, "devices", "list", "--db", sqlite_dsn)
    assert "revoked" in out
    rc, _, err = _run(capsys, "devices", "revoke", "--db", sqlite_dsn, "--device", "nope")
    assert rc == 1 and "not registered" in err


def test_devices__add_refuses_a_key_another_device_has(
    tmp_path: Path, sqlite_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two benches set up from one cloned SD card hold one key: either could sign as the other.
    key = generate_key(tmp_path / "device.key")
    pem = tmp_path / "device.pub.pem"
    pem.write_bytes(public_pem(key.public))
    add = ("devices", "add", "--db", sqlite_dsn, "--site", "bj", "--pubkey", str(pem))
    assert _run(capsys, *add, "--device", "bench-1")[0] == 0
    rc, _, err = _run(capsys, *add, "--device", "bench-2")
    assert rc == 1 and "already device 'bench-1'" in err and "keys generate --force" in err
    rc, _, err = _run(capsys, *add, "--device", "bench-2", "--replace")
    assert rc == 1 and "already device 'bench-1'" in err
    rc, out, _ = _run(capsys, "devices", "list", "--db", sqlite_dsn, "--json")
    assert [d["device"] for d in json.loads(out)] == ["bench-1"]
    # bench-1 registering its own key again (--replace) is not a clash
    rc, out, _ = _run(capsys, *add, "--device", "bench-1", "--replace")
    assert rc == 0 and key.key_id in out


def test_devices__add_refuses_a_bad_key_file_and_a_topic_unsafe_id(
    tmp_path: Path, sqlite_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    rc, _, err = _run(
        capsys, "devices", "add", "--db", sqlite_dsn, "--device", "d", "--site", "s", "--pubkey", str(bad)
    )
    assert rc == 1 and "expected a PEM public key or 32 raw bytes in base64" in err
    key = generate_key(tmp_path / "k")
    (tmp_path / "k.pem").write_bytes(public_pem(key.public))
    rc, _, err = _run(
        capsys,
        "devices",
        "add",
        "--db",
        sqlite_dsn,
        "--device",
        "a/b",
        "--site",
        "s",
        "--pubkey",
        str(tmp_path / "k.pem"),
    )
    assert rc == 1 and "topic level" in err


def test_status__json_keys_per_device(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    _ingest(dsn, forge=1)
    rc, out, _ = _run(capsys, "status", "--db", dsn, "--json")
    rows = json.loads(out)
    assert rc == 0 and len(rows) == 2
    for key in ("device", "head_seq", "verified_through", "lag_s", "last_seen", "anomalies", "by_kind"):
        assert all(key in r for r in rows), key
    first = rows[0]
    assert first["head_seq"] == 20 and first["verified_through"] == 20 and first["anomalies"] == 1
    assert first["by_kind"] == {"telemetry": 19, "trip": 1}
    assert first["lag_s"] is not None and 0 <= first["lag_s"] < 60
    rc, out, _ = _run(capsys, "anomalies", "--db", dsn)
    assert "bad_signature" in out and "sim-00000" in out
    rc, out, _ = _run(capsys, "anomalies", "--db", dsn, "--json", "--kind", "bad_signature")
    assert json.loads(out)[0]["evidence"]["seq"] == 3


def test_export__jsonl_is_the_records_as_received_and_csv_has_columns(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _ingest(dsn, rounds=25)
    rc, out, err = _run(capsys, "export", "--db", dsn, "--device", "sim-00001", "--kind", "trip")
    lines = out.splitlines()
    assert rc == 0 and "exported 1 record(s)" in err
    assert [json.loads(x)["seq"] for x in lines] == [20]
    rc, out, err = _run(capsys, "export", "--db", dsn, "--since", "1h", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 50 and set(rows[0]) == {"device", "seq", "kind", "ts", "ingested_at", "verified", "record"}
    assert [int(r["seq"]) for r in rows[:3]] == [1, 2, 3]
    rc, out, _ = _run(capsys, "export", "--db", dsn, "--since", "2999-01-01")
    assert out == ""
    rc, _, err = _run(capsys, "export", "--db", dsn, "--since", "yesterday")
    assert rc == 2 and "expected an ISO 8601 time" in err


def test_cli__a_mistyped_filter_says_so_and_leaves_a_good_export_alone(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`export --kind trips` and `--device truck-42` exported 0 records with exit 0 (over a good --out file),
    `anomalies --kind forks` said "no anomalies" and `status --device nosuch` printed an empty table."""
    _ingest(dsn, rounds=5)
    out = tmp_path / "good.jsonl"
    rc, _, err = _run(capsys, "export", "--db", dsn, "--out", str(out))
    assert rc == 0 and "exported 10 record(s)" in err
    good = out.read_bytes()
    rc, _, err = _run(capsys, "export", "--db", dsn, "--kind", "trips", "--out", str(out))
    assert rc == 1 and "--kind trips: no record of that kind is stored (stored: telemetry); nothing written" in err
    rc, _, err = _run(capsys, "export", "--db", dsn, "--device", "sim-0", "--out", str(out))
    assert rc == 1 and "--device sim-0: no such device is registered in " in err
    assert out.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir() if "good" in p.name) == [out.name]
    rc, _, err = _run(capsys, "export", "--db", dsn, "--device", "sim-00000", "--kind", "telemetry", "--out", str(out))
    assert rc == 0 and "exported 5 record(s)" in err and out.read_bytes() != good
    rc, out_text, err = _run(capsys, "anomalies", "--db", dsn, "--kind", "forks")
    assert rc == 2 and "--kind forks: expected one of " in err and "fork," in err and out_text == ""
    rc, out_text, err = _run(capsys, "status", "--db", dsn, "--device", "nosuch")
    assert rc == 1 and "--device nosuch: no such device is registered in " in err and out_text == ""


def test_import__a_technicians_outbox_export_fills_the_hole_central_saw(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A device's outbox was moved aside with records central never got; `edge-agent outbox export --file`
    gets them out, `central import` puts them through the ingest's checks: the hole is filled, what central
    had is counted once, and a forged line or one that is no record is refused, not stored."""
    from edge_agent.central.registry import add_devices
    from edge_agent.spine.clock import Clock
    from edge_agent.spine.outbox import Outbox

    key = generate_key(tmp_path / "device.key")
    ob = Outbox.open_checked(tmp_path / "outbox.db")[0]
    made = ob.append(
        [("event", {"i": i}) for i in range(60)], device="bench-3", key=key, clock=Clock(), max_bytes=1 << 24
    )
    ob.close()
    db = open_db(dsn)
    try:
        add_devices(db, [("bench-3", "wh1", key.public)])
        ing = Ingestor(db)
        live = [r for r in made if not 21 <= int(r["seq"]) <= 50]  # central got these; 21-50 were lost
        ing.process([Message(f"edge/wh1/bench-3/rec/{r['kind']}", json.dumps(r).encode(), 0.0) for r in live])
    finally:
        db.close()
    rc, out, _ = _run(capsys, "status", "--db", dsn, "--json")
    assert json.loads(out)[0]["verified_through"] == 20
    assert main(["outbox", "export", "--file", str(tmp_path / "outbox.db")]) == 0
    exported = capsys.readouterr()[0].encode()
    (tmp_path / "bench-3.jsonl").write_bytes(exported)
    rc, _, err = _run(capsys, "import", "--db", dsn, str(tmp_path / "bench-3.jsonl"))
    assert rc == 0, err
    assert "60 line(s): 30 record(s) stored, 30 already stored, 0 refused" in err
    rc, out, _ = _run(capsys, "status", "--db", dsn, "--json")
    [row] = json.loads(out)
    assert (row["head_seq"], row["verified_through"], row["anomalies"]) == (60, 60, 0)
    rc, out, _ = _run(capsys, "export", "--db", dsn, "--device", "bench-3")
    assert [json.loads(x) for x in out.splitlines()] == [json.loads(json.dumps(r)) for r in made]

    # Imported again, with a forged copy of seq 7, a line that is no record and a device not registered.
    forged = json.loads(exported.splitlines()[6])
    forged["body"]["i"] = 999
    other = dict(forged, device="unknown-1")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(exported + b"not json\n" + json.dumps(forged).encode() + b"\n" + json.dumps(other).encode())
    rc, _, err = _run(capsys, "import", "--db", dsn, str(bad))
    assert rc == 1
    assert f"{bad}:61: not a record (expected a JSON object with device and kind)" in err
    assert f"{bad}:63: device 'unknown-1' is not registered (central devices add)" in err
    assert "63 line(s): 0 record(s) stored, 60 already stored, 2 refused; anomalies recorded: bad_signature 1" in err
    rc, _, err = _run(capsys, "import", "--db", dsn, str(tmp_path / "missing.jsonl"))
    assert rc == 1 and "missing.jsonl: cannot read" in err


def test_import__a_file_it_cannot_read_stops_it_before_anything_is_stored(
    sqlite_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`import good.jsonl typo.jsonl` stored good.jsonl's full batches, dropped its last one and printed only
    'typo.jsonl: cannot read', with no count: the operator could not tell what was imported."""
    from edge_agent.central.registry import add_devices
    from edge_agent.spine.clock import Clock
    from edge_agent.spine.outbox import Outbox

    key = generate_key(tmp_path / "device.key")
    ob = Outbox.open_checked(tmp_path / "outbox.db")[0]
    ob.append([("event", {"i": i}) for i in range(10)], device="bench-3", key=key, clock=Clock(), max_bytes=1 << 24)
    ob.close()
    with open_db(sqlite_dsn) as db:
        add_devices(db, [("bench-3", "wh1", key.public)])
    assert main(["outbox", "export", "--file", str(tmp_path / "outbox.db")]) == 0
    (tmp_path / "good.jsonl").write_text(capsys.readouterr()[0])
    typo = tmp_path / "bench-4.jsnl"
    rc, out, err = _run(
        capsys, "import", "--db", sqlite_dsn, "--batch-max", "4", str(tmp_path / "good.jsonl"), str(typo)
    )
    assert rc == 1 and err == f"edge-agent: {typo}: cannot read: No such file or directory; nothing imported\n"
    rc, out, _ = _run(capsys, "status", "--db", sqlite_dsn, "--json")
    assert json.loads(out)[0]["head_seq"] == 0


def test_cli__a_wrong_dsn_says_what_a_dsn_looks_like(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, "status", "--db", "mysql://x@y/z")
    assert rc == 1 and "sqlite:///path/to/central.db or postgresql://" in err
    rc, _, err = _run(capsys, "status", "--db", "sqlite:////nonexistent/dir/c.db")
    assert rc == 1 and "does not exist" in err


def test_cli__reading_commands_do_not_make_a_database_of_a_mistyped_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`central status --db sqlite:///typo.db` showed an empty central (and left a new database behind)."""
    typo = tmp_path / "centrl.db"
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert main(["central", "anchor", "key", "new", "--out", str(tmp_path / "member.key")]) == 0
    capsys.readouterr()
    chain = ("--rpc", "http://127.0.0.1:1", "--contract", "0x" + "11" * 20, "--key", str(tmp_path / "member.key"))
    for path in (typo, empty):
        for args in (
            ("status",),
            ("anomalies",),
            ("export",),
            ("devices", "list"),
            ("import", str(empty)),  # a file it can read: the database is what is wrong
            ("ingest", "--mqtt", "mqtt://127.0.0.1:1"),  # it took records in as unknown devices' and acked them
            ("prove", "--device", "bench-1", "--seq", "1"),  # 'no such record in the central database'
            ("anchor", *chain),
            ("anchor", "endorse", *chain),
        ):
            rc, out, err = _run(capsys, *args, "--db", f"sqlite:///{path}")
            assert rc == 1 and f"no central database at {path}" in err and out == "", (args, err)
    assert not typo.exists() and empty.read_bytes() == b""


def test_cli__a_damaged_sqlite_database_is_one_line_naming_it(
    tmp_path: Path, sqlite_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A central.db damaged on disk was a sqlite3.DatabaseError traceback from every command."""
    import sqlite3

    _ingest(sqlite_dsn)
    path = tmp_path / "central.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        roots = [r for (r,) in conn.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = 'records'") if r]
    conn.close()
    whole = tmp_path / "whole.db"
    whole.write_bytes(path.read_bytes()[:page] + b"\xff" * (path.stat().st_size - page))
    with path.open("r+b") as f:  # only the records table's pages: the schema and the registry read fine
        for root in roots:
            f.seek((root - 1) * page)
            f.write(b"\xff" * page)
    (tmp_path / "r.jsonl").write_text("")
    everything = (("status",), ("anomalies",), ("export",), ("devices", "list"), ("import", str(tmp_path / "r.jsonl")))
    for dsn, commands in ((sqlite_dsn, (("status",), ("export",))), (f"sqlite:///{whole}", everything)):
        for args in commands:
            rc, out, err = _run(capsys, *args, "--db", dsn)
            assert rc == 1 and out == "", (args, err)
            assert err.startswith(f"edge-agent: --db {dsn}: ") and len(err.splitlines()) == 1, err
            assert "database disk image is malformed; the file is damaged: restore it from a backup" in err, err


def test_cli__a_database_of_another_program_is_refused_and_left_alone(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--db naming a device's outbox.db (or another application's PostgreSQL database) wrote central's tables
    into it and showed an empty central."""
    from edge_agent.central.db import parse_dsn
    from edge_agent.spine.outbox import Outbox

    if dsn.startswith("sqlite"):
        Outbox.open_checked(Path(parse_dsn(dsn)[1]))[0].close()
        list_tables = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
    else:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE meta (k TEXT); CREATE TABLE records (x INTEGER)")
        list_tables = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
    key = generate_key(tmp_path / "device.key")
    (tmp_path / "device.pub.pem").write_bytes(public_pem(key.public))
    (tmp_path / "r.jsonl").write_text("")
    for args in (
        ("status",),
        ("devices", "add", "--device", "bench-1", "--site", "wh1", "--pubkey", str(tmp_path / "device.pub.pem")),
        ("import", str(tmp_path / "r.jsonl")),
    ):
        rc, out, err = _run(capsys, *args, "--db", dsn)
        assert rc == 1 and out == "", (args, out, err)
        assert "not a central database (it holds other tables: meta, records; no schema_migrations); check" in err
    with open_db(dsn, migrate=False) as db:
        assert [r[0] for r in db.query(list_tables)] == ["meta", "records"]


def test_cli__numbers_out_of_range_and_a_broker_that_is_down_are_one_line(
    sqlite_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--metrics-port 99999 was an OverflowError traceback, --devices -3 blamed --misbehave, and simulate
    against a broker that is down was a ConnectionRefusedError traceback."""
    rc, _, err = _run(capsys, "ingest", "--mqtt", "mqtt://127.0.0.1:1", "--db", sqlite_dsn, "--metrics-port", "99999")
    assert rc == 2 and "argument --metrics-port: expected an integer 1-65535, got '99999'" in err
    for args, option, span, got in (
        (("ingest", "--mqtt", "mqtt://127.0.0.1:1", "--batch-max", "0"), "--batch-max", ">= 1", "0"),
        (("ingest", "--mqtt", "mqtt://127.0.0.1:1", "--receive-max", "70000"), "--receive-max", "1-65535", "70000"),
        (("import", "x.jsonl", "--batch-max", "-5"), "--batch-max", ">= 1", "-5"),  # ran one line per batch
        (("anomalies", "--limit", "-1"), "--limit", ">= 1", "-1"),  # no limit on SQLite, an SQL error on PostgreSQL
    ):
        rc, _, err = _run(capsys, *args, "--db", sqlite_dsn)
        assert rc == 2 and f"argument {option}: expected an integer {span}, got '{got}'" in err, (args, err)
    rc, _, err = _run(capsys, "simulate", "--devices", "-3", "--broker", "mqtt://127.0.0.1:1")
    assert rc == 2 and "argument --devices: expected an integer 1-1000000, got '-3'" in err
    rc, _, err = _run(capsys, "simulate", "--devices", "2", "--broker", "mqtt://127.0.0.1:1", "--duration", "1")
    assert rc == 1 and "broker 127.0.0.1:1 refused the TCP connection" in err and "Traceback" not in err


def test_cli__a_wrong_broker_url_says_what_a_url_looks_like(
    sqlite_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = _run(capsys, "ingest", "--mqtt", "http://broker:1883", "--db", sqlite_dsn)
    assert rc == 2 and "'http://broker:1883': expected mqtt://host:port or mqtts://host:port" in err


def test_cli__bad_resend_options_say_what_is_expected(
    sqlite_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ("ingest", "--mqtt", "mqtt://127.0.0.1:1", "--db", sqlite_dsn)
    rc, _, err = _run(capsys, *base, "--resend-key", str(tmp_path / "missing.key"))
    assert rc == 1 and "--resend-key: " in err and "missing.key: cannot read the central key" in err
    (tmp_path / "not.key").write_text("not a key\n")
    rc, _, err = _run(capsys, *base, "--resend-key", str(tmp_path / "not.key"))
    assert rc == 1 and "not a PEM private key" in err
    rc, _, err = _run(capsys, *base, "--resend-every-s", "0")
    assert rc == 1 and "--resend-every-s: expected seconds in (0, 604800], got 0.0" in err
    rc, _, err = _run(capsys, *base, "--resend-max", "0")
    assert rc == 1 and "--resend-max: expected at least 1, got 0" in err
