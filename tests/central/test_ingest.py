"""The Ingestor on both databases: records stored once, chains followed, each anomaly with its evidence."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from edge_agent.central import queries
from edge_agent.central.db import Database, open_db
from edge_agent.central.ingest import Ingestor, IngestSettings, Message
from edge_agent.central.registry import revoke_device
from edge_agent.central.simulate import SimDevice, build_fleet, flush_late, register_fleet, step
from edge_agent.spine.records import encode


class FakeTime:
    """The ingestor's clock, moved by the test: hole and replay windows without waiting."""

    def __init__(self) -> None:
        self.t = datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return self.t


def _setup(dsn: str, n: int, **misbehave: int) -> tuple[Database, Ingestor, list[SimDevice], FakeTime]:
    db = open_db(dsn)
    fleet = build_fleet(n, seed="t", misbehave=misbehave, at_seq=3)
    register_fleet(db, fleet)
    clock = FakeTime()
    ing = Ingestor(db, IngestSettings(hole_after_s=60, replay_window_s=600), clock=clock)
    return db, ing, fleet, clock


def _messages(fleet: list[SimDevice], rounds: int, clock: FakeTime) -> list[Message]:
    out = []
    for _ in range(rounds):
        now = datetime.fromtimestamp(clock.t, UTC)
        for d in fleet:
            out.extend(Message(o.topic, o.payload, clock.t) for o in step(d, "edge", now))
    for d in fleet:
        out.extend(Message(o.topic, o.payload, clock.t) for o in flush_late(d, "edge"))
    return out


def _kinds(db: Database) -> list[tuple[str, str]]:
    return sorted((a["device"], a["kind"]) for a in queries.anomalies(db))


def test_process__in_order_chain_is_stored_and_verified(dsn: str) -> None:
    db, ing, fleet, clock = _setup(dsn, 3)
    try:
        msgs = _messages(fleet, 10, clock)
        r = ing.process(msgs[:13])
        r2 = ing.process(msgs[13:])
        assert r.stored + r2.stored == 30
        st = {s["device"]: s for s in queries.status(db)}
        assert all(s["head_seq"] == 10 and s["verified_through"] == 10 for s in st.values())
        assert db.query("SELECT COUNT(*) FROM records WHERE verified = 1") == [(30,)]
        assert _kinds(db) == []
    finally:
        db.close()


def test_process__out_of_order_and_duplicates_are_exactly_once(dsn: str) -> None:
    db, ing, fleet, clock = _setup(dsn, 2)
    try:
        msgs = _messages(fleet, 8, clock)
        rev = list(reversed(msgs))
        ing.process(rev[:5])
        st = {s["device"]: s for s in queries.status(db)}
        assert all(s["verified_through"] == 0 for s in st.values())  # only the tail arrived
        ing.process(rev[3:])  # overlaps: 2 duplicates
        ing.process(msgs[:4])  # redelivered again
        assert db.query("SELECT COUNT(*) FROM records") == [(16,)]
        st = {s["device"]: s for s in queries.status(db)}
        assert [s["verified_through"] for s in st.values()] == [8, 8]
        assert db.query("SELECT COUNT(*) FROM records WHERE verified = 0") == [(0,)]
        assert _kinds(db) == []  # redelivery within the replay window is not an anomaly
    finally:
        db.close()


def test_process__injected_misbehaviour_is_reported_once_with_its_kind(dsn: str) -> None:
    db, ing, fleet, clock = _setup(dsn, 6, fork=1, forge=1, hole=1, gap=1, rotate=1)
    try:
        msgs = _messages(fleet, 8, clock)
        for i in range(0, len(msgs), 7):
            ing.process(msgs[i : i + 7])
        ing.process(msgs[:10])  # redelivery changes nothing
        clock.t += 61
        ing.sweep()
        ing.sweep()
        assert _kinds(db) == [
            ("sim-00000", "fork"),
            ("sim-00001", "bad_signature"),
            ("sim-00002", "hole"),
            ("sim-00003", "signed_gap"),
        ]
        st = {s["device"]: s for s in queries.status(db)}
        assert st["sim-00002"]["verified_through"] == 2  # stuck before the silent hole
        assert st["sim-00003"]["verified_through"] == st["sim-00003"]["head_seq"]  # the gap is declared
        assert st["sim-00004"]["verified_through"] == st["sim-00004"]["head_seq"]  # followed across the rotation
        assert st["sim-00004"]["key_id"] == fleet[4].key.key_id
        gap = queries.anomalies(db, kind="signed_gap")[0]
        assert gap["evidence"]["ranges"] == [[3, 4]] and gap["severity"] == "info"
        assert set(gap["evidence"]["hashes"]) == {"3", "4"}
        fork = queries.anomalies(db, kind="fork")[0]
        assert fork["seq"] == 3 and fork["evidence"]["other_hash"] == fleet[0].hashes[3]
    finally:
        db.close()


def test_process__rotated_key_records_before_the_rotation_wait_then_verify(dsn: str) -> None:
    db, ing, fleet, clock = _setup(dsn, 1, rotate=1)
    try:
        msgs = _messages(fleet, 6, clock)
        rot = next(i for i, m in enumerate(msgs) if "/key_rotation" in m.topic)
        ing.process(msgs[rot + 1 :])  # signed by the new key, not yet announced
        assert db.query("SELECT COUNT(*) FROM pending") == [(len(msgs) - rot - 1,)]
        r = ing.process(msgs[: rot + 1])
        assert r.rotated == {"sim-00000"}
        ing.process(ing.take_pending(r.rotated))
        assert db.query("SELECT COUNT(*) FROM pending") == [(0,)]
        st = queries.status(db)[0]
        assert st["verified_through"] == 6 and _kinds(db) == []
    finally:
        db.close()


def test_process__hostile_messages_are_anomalies_not_crashes(dsn: str) -> None:
    db, ing, fleet, clock = _setup(dsn, 2)
    try:
        msgs = _messages(fleet, 3, clock)
        ing.process(msgs)
        other = msgs[0]  # sim-00000's record ...
        t = clock.t
        hostile = [
            Message("edge/sim/sim-00000/rec/telemetry", b"x" * (300 * 1024), t),
            Message("edge/sim/sim-00000/rec/telemetry", b"\xff\xfe not json", t),
            Message("edge/sim/sim-00000/rec/telemetry", b"[1, 2]", t),
            Message("edge/sim/sim-00000/rec/telemetry", b"[" * 100_000 + b"]" * 100_000, t),  # nested to the hilt
            Message("edge/sim/sim-00000/rec/telemetry", other.payload[:-1] + b', "body": {}}', t),  # a second body
            Message("edge/sim/sim-00001/rec/telemetry", other.payload, t),  # ... under sim-00001's topic
            Message("edge/sim/ghost/rec/telemetry", other.payload.replace(b"sim-00000", b"ghost"), t),
        ]
        r = ing.process(hostile)
        assert r.stored == 0
        clock.t += 601
        ing.process(msgs[:2])  # a replay of old records
        assert sorted(k for _d, k in _kinds(db)) == sorted(
            ["oversize", *["malformed"] * 4, "topic_mismatch", "unknown_device", "replay", "replay"]
        )
        assert db.query("SELECT COUNT(*) FROM records") == [(6,)]
        details = " ".join(a["message"] for a in queries.anomalies(db, kind="malformed"))
        assert "nested too deeply" in details and "duplicate key 'body'" in details
        big = queries.anomalies(db, kind="oversize")[0]
        assert big["evidence"]["size"] == 300 * 1024 and "record" not in big["evidence"]
    finally:
        db.close()


def test_process__revoked_device_records_after_revocation_are_refused(dsn: str) -> None:
    db, ing, fleet, clock = _setup(dsn, 1)
    try:
        msgs = _messages(fleet, 5, clock)
        ing.process(msgs[:3])
        assert revoke_device(db, "sim-00000") == 3
        ing.process(msgs[3:])
        assert db.query("SELECT MAX(seq) FROM records") == [(3,)]
        assert _kinds(db) == [("sim-00000", "revoked_device")]
        assert queries.anomalies(db)[0]["count"] == 2
    finally:
        db.close()


def test_process__broken_link_is_reported(dsn: str) -> None:
    from edge_agent.spine.records import make_record

    db, ing, fleet, clock = _setup(dsn, 1)
    try:
        d = fleet[0]
        msgs = _messages(fleet, 2, clock)
        bad = make_record(
            device=d.device,
            seq=3,
            ts="2026-01-01T00:00:00.000Z",
            clock="ntp",
            kind="telemetry",
            body={},
            prev="f" * 64,
            key=d.key,
        )
        ing.process([*msgs, Message("edge/sim/sim-00000/rec/telemetry", encode(bad), clock.t)])
        a = queries.anomalies(db)
        assert [(x["kind"], x["seq"]) for x in a] == [("broken_link", 3)]
        assert a[0]["evidence"]["expected"] == d.hashes[2]
    finally:
        db.close()


def _unused(_: Any) -> None:
    pass


def test_process__checkpoint_signed_by_a_key_not_yet_announced_is_not_judged(dsn: str) -> None:
    """Checkpoints and records travel on different topics: a checkpoint signed by the device's new key
    may arrive before the key_rotation record. That is no forgery (seen as bad_checkpoint under load)."""
    import json

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge_agent.spine.checkpoint import make_checkpoint
    from edge_agent.spine.keys import DeviceKey, key_id_for

    db, ing, fleet, clock = _setup(dsn, 1)
    try:
        d = fleet[0]
        ing.process(_messages(fleet, 3, clock))
        private = Ed25519PrivateKey.generate()
        new_key = DeviceKey(private, key_id_for(private.public_key()))
        cp = make_checkpoint(new_key, device=d.device, seq=3, head_hash=d.hashes[3], ts="2026-01-01T00:00:00.000Z")
        ing.process([Message("edge/sim/sim-00000/checkpoint", json.dumps(cp).encode(), clock.t)])
        ing.sweep()
        assert _kinds(db) == []
    finally:
        db.close()


def test_process__tail_shorter_than_the_signed_checkpoint_is_reported_then_resolved(dsn: str) -> None:
    import json

    from edge_agent.spine.checkpoint import make_checkpoint

    db, ing, fleet, clock = _setup(dsn, 1)
    try:
        d = fleet[0]
        msgs = _messages(fleet, 6, clock)
        ing.process(msgs[:3])
        cp = make_checkpoint(d.key, device=d.device, seq=6, head_hash=d.hashes[6], ts="2026-01-01T00:00:00.000Z")
        topic = "edge/sim/sim-00000/checkpoint"
        forged = dict(cp, seq=7)
        ing.process(
            [Message(topic, json.dumps(cp).encode(), clock.t), Message(topic, json.dumps(forged).encode(), clock.t)]
        )
        ing.sweep()
        assert _kinds(db) == [("sim-00000", "bad_checkpoint")]  # the tail may still be on its way
        clock.t += 61
        ing.sweep()
        tail = queries.anomalies(db, kind="truncated_tail")
        assert [(a["seq"], a["evidence"]["head_seq"]) for a in tail] == [(6, 3)]
        ing.process(msgs[3:])
        ing.sweep()
        assert queries.anomalies(db, kind="truncated_tail", open_only=True) == []
        assert queries.status(db)[0]["checkpoint_seq"] == 6
    finally:
        db.close()


def test_process__a_key_never_announced_stays_parked_and_becomes_unknown_key(dsn: str) -> None:
    from edge_agent.central.simulate import device_key
    from edge_agent.spine.records import make_record

    db, ing, fleet, clock = _setup(dsn, 1, rotate=1)
    try:
        d = fleet[0]
        msgs = _messages(fleet, 5, clock)
        stranger = device_key("someone else", d.device)
        odd = make_record(
            device=d.device,
            seq=9,
            ts="2026-01-01T00:00:00.000Z",
            clock="ntp",
            kind="telemetry",
            body={},
            prev="e" * 64,
            key=stranger,
        )
        ing.process([Message("edge/sim/sim-00000/rec/telemetry", encode(odd), clock.t)])
        r = ing.process(msgs)
        assert r.rotated == {"sim-00000"}
        ing.process(ing.take_pending(r.rotated))  # taken back, still unknown: stays parked
        assert db.query("SELECT seq FROM pending") == [(9,)]
        ing.sweep()
        assert _kinds(db) == []
        clock.t += 61
        ing.sweep()
        assert _kinds(db) == [("sim-00000", "unknown_key")]
        assert queries.anomalies(db)[0]["evidence"]["key"] == stranger.key_id
    finally:
        db.close()


def test_views__trips_and_return_inspections_read_as_columns(dsn: str) -> None:
    from edge_agent.spine.records import make_record

    db, ing, fleet, clock = _setup(dsn, 1)
    try:
        d = fleet[0]
        fields = {
            "order_no": "RT-2026-0001",
            "sku": "SKU-9",
            "quantity": 2,
            "reason": "少件",
            "customer_id": "C-77",
            "return_date": "2026-03-27",
        }
        bodies = [
            (
                "trip",
                {
                    "timestamp": "2026-03-27T08:15:00.000Z",
                    "transport_id": "京A12345",
                    "route": "北京-天津",
                    "distance_km": 118.4,
                    "fuel_used_l": 31.2,
                    "co2_kg": 99.76,
                    "co2_gas": "CO2e",
                    "load_avg_kg": 1800,
                    "load_source": "scale",
                    "emission": {"method": "fuel", "factors": [{"source": "GLEC v3"}]},
                },
            ),
            ("return_inspection", {"v": 1, "fields": fields, "human_reviewed": False}),
            (
                "return_inspection",
                {"v": 1, "fields": dict(fields, quantity=1), "human_reviewed": True, "decision": "corrected"},
            ),
        ]
        prev, msgs = "0" * 64, []
        for seq, (kind, body) in enumerate(bodies, 1):
            rec = make_record(
                device=d.device,
                seq=seq,
                ts="2026-03-27T09:00:00.000Z",
                clock="gps",
                kind=kind,
                body=body,
                prev=prev,
                key=d.key,
            )
            prev = rec["hash"]
            msgs.append(Message(f"edge/sim/{d.device}/rec/{kind}", encode(rec), clock.t))
        ing.process(msgs)
        assert db.query(
            "SELECT transport_id, route, distance_km, co2_kg, co2_gas, load_avg_kg, load_source, factor_source,"
            " verified FROM trips"
        ) == [("京A12345", "北京-天津", 118.4, 99.76, "CO2e", 1800.0, "scale", "GLEC v3", 1)]
        rows = db.query(
            "SELECT order_no, sku, quantity, reason, customer_id, return_date, verdict, human_reviewed"
            " FROM return_inspections ORDER BY seq"
        )
        assert [r[:7] for r in rows] == [
            ("RT-2026-0001", "SKU-9", 2, "少件", "C-77", "2026-03-27", "accepted"),
            ("RT-2026-0001", "SKU-9", 1, "少件", "C-77", "2026-03-27", "corrected"),
        ]
        assert [bool(r[7]) for r in rows] == [False, True]
    finally:
        db.close()


def test_process__gaps_declaring_ranges_without_every_hash_are_followed(dsn: str) -> None:
    # The device's outbox declares what it dropped in `ranges`; `hashes` gives only some of them
    # (each range's end and the newest, to bound the gap's size), and none when the file was lost.
    from edge_agent.spine.gaps import gap_body, loss_gap

    db, ing, fleet, clock = _setup(dsn, 1)
    d = fleet[0]
    ts = datetime.fromtimestamp(clock.t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    base = f"edge/{d.site}/{d.device}/rec"
    sent: list[Message] = []

    def send(rec: dict[str, Any]) -> None:
        sent.append(Message(f"{base}/{rec['kind']}", encode(rec), clock.t))

    try:
        for i in range(2):
            send(d.make("telemetry", {"i": i}, ts))
        evicted = [(r["seq"], r["hash"], "telemetry") for r in (d.make("telemetry", {"i": i}, ts) for i in range(40))]
        full = gap_body("outbox_full", evicted, max_bytes=2000)
        assert len(full["hashes"]) < len(evicted) and full["ranges"] == [[3, 42]]
        send(d.make("gap", full, ts))  # seq 43
        send(d.make("telemetry", {"i": 99}, ts))  # seq 44
        for i in range(5):  # seq 45-49: lost with the outbox file
            d.make("telemetry", {"i": i}, ts)
        lost = loss_gap("outbox_lost", "file zeroed", (d.seq, d.prev), 44)
        assert lost["hashes"] == [] and lost["ranges"] == [[45, 49]]
        send(d.make("gap", lost, ts))  # seq 50
        send(d.make("telemetry", {"i": 100}, ts))  # seq 51
        ing.process(sent[:3])
        ing.process(sent[3:])  # the lost range arrives in a later batch than the first gap
        clock.t += 61
        ing.sweep()
        st = queries.status(db)[0]
        assert st["head_seq"] == 51 and st["verified_through"] == 51
        assert _kinds(db) == [(d.device, "signed_gap"), (d.device, "signed_gap")]
        ranges = sorted(a["evidence"]["ranges"] for a in queries.anomalies(db, kind="signed_gap"))
        assert ranges == [[[3, 42]], [[45, 49]]]
    finally:
        db.close()


def test_commit__a_key_cached_before_another_worker_stored_its_rotation_is_retired(dsn: str) -> None:
    """Two workers on one shared subscription: B cached the first key, A stored the rotation that ends it;
    a record after the rotation signed with the old key reaches B, which must not trust its cache."""
    import json

    from edge_agent.central.simulate import device_key
    from edge_agent.spine.records import make_record

    db, ing_a, fleet, clock = _setup(dsn, 1, rotate=1)
    db_b = open_db(dsn)
    try:
        ing_b = Ingestor(db_b, IngestSettings(hole_after_s=60, replay_window_s=600), clock=clock)
        msgs = _messages(fleet, 6, clock)
        rot = next(i for i, m in enumerate(msgs) if "/key_rotation" in m.topic)
        ing_b.process(msgs[:1])  # B caches the device's keys: the first one, open-ended
        assert ing_a.process(msgs[1 : rot + 1]).rotated == {"sim-00000"}
        rotation = json.loads(msgs[rot].payload)
        old = device_key("t", "sim-00000", 0)
        assert old.key_id == rotation["key"]
        late = make_record(
            device="sim-00000",
            seq=rotation["seq"] + 1,
            ts=rotation["ts"],
            clock="ntp",
            kind="telemetry",
            body={"speed_kmh": 1.0},
            prev=rotation["hash"],
            key=old,
        )
        r = ing_b.process([Message("edge/sim/sim-00000/rec/telemetry", encode(late), clock.t)])
        assert r.stored == 0
        assert [(a.kind, a.seq) for a in r.anomalies] == [("retired_key", rotation["seq"] + 1)]
        assert db.query("SELECT COUNT(*) FROM records WHERE seq > ?", (rotation["seq"],)) == [(0,)]
    finally:
        db_b.close()
        db.close()


def test_resends_due__an_open_hole_is_asked_for_once_per_period_by_one_worker_while_its_device_is_heard_from(
    dsn: str,
) -> None:
    """Two workers sweep the same database: each open hole is claimed by one of them; it is asked for again
    only after resend_every_s and once the device has sent something since, and at most resend_max times."""
    db, ing_a, fleet, clock = _setup(dsn, 2, hole=1)
    settings = IngestSettings(hole_after_s=60, replay_window_s=600, resend_every_s=600, resend_max=2)
    ing_a = Ingestor(db, settings, clock=clock)
    db_b = open_db(dsn)
    try:
        ing_b = Ingestor(db_b, settings, clock=clock)
        ing_a.process(_messages(fleet, 6, clock))
        assert ing_a.resends_due() == []  # missing, but not for hole_after_s yet: not a hole
        clock.t += 61
        (hole,) = ing_a.sweep()
        first, last = hole.evidence["first_missing"], hole.evidence["last_missing"]
        due = ing_a.resends_due()
        assert [(d.device, d.site, d.first_seq, d.last_seq, d.attempt) for d in due] == [
            (hole.device, "sim", first, last, 1)
        ]
        assert ing_b.resends_due() == []  # claimed by the first worker
        clock.t += 601
        assert ing_b.resends_due() == []  # the device has been silent since: it would get nothing
        ing_a.process(_messages(fleet, 1, clock))
        assert [(d.first_seq, d.last_seq, d.attempt) for d in ing_b.resends_due()] == [(first, last, 2)]
        clock.t += 601
        ing_a.process(_messages(fleet, 1, clock))
        assert ing_a.resends_due() == []  # resend_max asks made: left to a person
        (row,) = db.query("SELECT resends, resolved_at FROM anomalies WHERE kind = 'hole'")
        assert row == (2, None)
    finally:
        db_b.close()
        db.close()
