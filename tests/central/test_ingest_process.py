"""Ingest workers as real processes on a real mosquitto and a real PostgreSQL: shared subscription, kill -9, restarts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.broker import Broker
from tests.central.procs import (
    LIVE,
    Worker,
    anomaly_pairs,
    check_chains,
    expected_records,
    simulate,
    stored_count,
)
from tests.helpers import wait_until


def debug(dsn: str) -> object:
    from edge_agent.central.db import open_db

    db = open_db(dsn, migrate=False)
    try:
        return (
            db.query("SELECT device, seq, key_id, received_at FROM pending"),
            db.query("SELECT device, key_id, from_seq, to_seq, source FROM device_keys WHERE device = 'sim-00004'"),
            db.query("SELECT device, kind, message, detected_at FROM anomalies"),
            db.query("SELECT seq, key_id, ingested_at FROM records WHERE device = 'sim-00004' ORDER BY seq"),
        )
    finally:
        db.close()


def _report(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text())


def test_ingest__two_workers_share_200_devices_each_record_once_each_anomaly_once(
    broker: Broker, pg_dsn: str, tmp_path: Path
) -> None:
    # A small in-flight window keeps each worker's backlog short. A worker held up for more than 2 s still
    # leaves a hole in a device's chain that the other worker sees: reported, then resolved when the late
    # records arrive. Only the injected hole stays open.
    workers = [
        Worker(broker, pg_dsn, tmp_path, f"w{i}", "--hole-after-s", "2", "--receive-max", "300", "--batch-max", "300")
        for i in range(2)
    ]
    try:
        for w in workers:
            w.start()
        rep = tmp_path / "fleet.json"
        simulate(
            broker,
            pg_dsn,
            rep,
            "--devices",
            "200",
            "--rate",
            "4",
            "--duration",
            "3",
            "--seed",
            "two",
            "--misbehave",
            "fork",
            "--misbehave",
            "forge",
            "--misbehave",
            "hole",
            "--misbehave",
            "gap",
            "--misbehave",
            "rotate",
            "--at-seq",
            "4",
        )
        report = _report(rep)
        want = expected_records(report)
        assert wait_until(lambda: stored_count(pg_dsn) >= want, 60), f"{stored_count(pg_dsn)} of {want} stored"
        expected = sorted(tuple(x) for x in report["expected_anomalies"])
        if not wait_until(lambda: anomaly_pairs(pg_dsn, resolved=False) == expected, 30):
            for line in debug(pg_dsn):  # type: ignore[attr-defined]
                print(line)
            raise AssertionError(anomaly_pairs(pg_dsn))
        assert {k for _d, k in anomaly_pairs(pg_dsn, resolved=True)} <= {"hole"}, anomaly_pairs(pg_dsn)
        assert stored_count(pg_dsn) == want
        chains = check_chains(pg_dsn, report)
        for device, v in chains.items():
            info = report["devices"][device]
            fails = [f.what for f in v.findings if f.level == "fail"]
            want_fails = {"hole": ["hole"]}.get(info["misbehave"], [])
            if info["misbehave"] == "fork" and v.records[info["at_seq"]]["hash"] == info["fork_hashes"][1]:
                # The other side of the fork reached central first: the chain goes on from the refused one.
                want_fails = ["broken_link"]
            assert fails == want_fails, (device, v.findings)
            assert v.summary()["unique"] == report["devices"][device]["last_seq"] - len(
                report["devices"][device]["withheld"]
            )
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0]
    # Both workers took part: the shared subscription split the stream.
    stored = [int(re.findall(r"ingest stopped: (\d+) record", w.log_text())[-1]) for w in workers]
    assert min(stored) > 0 and sum(stored) == want, stored


def test_ingest__kill_9_a_worker_three_times_nothing_lost_nothing_duplicated(
    broker: Broker, pg_dsn: str, tmp_path: Path
) -> None:
    a = Worker(broker, pg_dsn, tmp_path, "wa").start()
    b = Worker(broker, pg_dsn, tmp_path, "wb").start()
    rep = tmp_path / "kill.json"
    sim = simulate(
        broker, pg_dsn, rep, "--devices", "100", "--rate", "10", "--duration", "8", "--seed", "kill", wait=False
    )
    try:
        for _ in range(3):
            before = stored_count(pg_dsn)
            assert wait_until(lambda: stored_count(pg_dsn) > before + 300, 30)  # noqa: B023 - read at once
            b.kill9()
            b.start()
        out, _ = sim.communicate(timeout=120)
        assert sim.returncode == 0, out
        report = _report(rep)
        want = expected_records(report)
        assert wait_until(lambda: stored_count(pg_dsn) >= want, 60), f"{stored_count(pg_dsn)} of {want}"
        assert stored_count(pg_dsn) == want
        assert all(v.ok for v in check_chains(pg_dsn, report).values())
        assert anomaly_pairs(pg_dsn) == []
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()
        a.stop()
        b.stop()
    assert b.starts == 4


def test_ingest__broker_restart_mid_stream_loses_nothing(broker: Broker, sqlite_dsn: str, tmp_path: Path) -> None:
    w = Worker(broker, sqlite_dsn, tmp_path, "wr", share=None).start()
    rep = tmp_path / "restart.json"
    sim = simulate(
        broker, sqlite_dsn, rep, "--devices", "50", "--rate", "10", "--duration", "6", "--seed", "rst", wait=False
    )
    try:
        assert wait_until(lambda: stored_count(sqlite_dsn) > 500, 30)
        broker.restart()
        out, _ = sim.communicate(timeout=120)
        assert sim.returncode == 0, out
        report = _report(rep)
        want = expected_records(report)
        assert wait_until(lambda: stored_count(sqlite_dsn) >= want, 60), f"{stored_count(sqlite_dsn)} of {want}"
        assert stored_count(sqlite_dsn) == want
        assert all(v.ok for v in check_chains(sqlite_dsn, report).values())
        assert anomaly_pairs(sqlite_dsn) == []
        assert w.alive and w.log_text().count("subscribed to") >= 2
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()
        w.stop()


def test_ingest__hostile_input_is_recorded_and_the_worker_keeps_going(
    broker: Broker, sqlite_dsn: str, tmp_path: Path
) -> None:
    from edge_agent.central import queries
    from edge_agent.central.db import open_db
    from tests.broker import publish

    w = Worker(broker, sqlite_dsn, tmp_path, "wh", "--replay-window-s", "1", share=None).start()
    try:
        rep = tmp_path / "h.json"
        simulate(broker, sqlite_dsn, rep, "--devices", "2", "--records", "3", "--seed", "hostile")
        assert wait_until(lambda: stored_count(sqlite_dsn) == 6, 20)
        db = open_db(sqlite_dsn, migrate=False)
        try:
            old = [
                r[0].encode() for r in db.query("SELECT record FROM records WHERE device = 'sim-00000' ORDER BY seq")
            ]
            stored_at = max(float(r[0]) for r in db.query("SELECT ingested_at FROM records"))
        finally:
            db.close()
        publish(broker, "edge/sim/sim-00000/rec/telemetry", [b"{" + b"x" * (10 * 1024 * 1024) + b"}"], client_id="h1")
        publish(broker, "edge/sim/sim-00000/rec/telemetry", [b"\x00\x01 not json at all"], client_id="h2")
        publish(broker, "edge/sim/sim-00001/rec/telemetry", old[:1], client_id="h3")  # sim-00000's record, other topic
        import time

        assert wait_until(lambda: time.time() > stored_at + 1.2, 5)  # past the replay window
        publish(broker, "edge/sim/sim-00000/rec/telemetry", old, client_id="h4")  # replayed
        want = ["malformed", "oversize", "replay", "topic_mismatch"]
        assert wait_until(lambda: sorted(k for _d, k in anomaly_pairs(sqlite_dsn)) == want, 20), anomaly_pairs(
            sqlite_dsn
        )
        # Still working: new devices' records go in, and an unregistered device's are refused.
        simulate(broker, sqlite_dsn, tmp_path / "h2.json", "--devices", "2", "--records", "2", "--name-prefix", "late")
        simulate(broker, None, tmp_path / "h3.json", "--devices", "1", "--records", "2", "--name-prefix", "ghost")
        assert wait_until(lambda: stored_count(sqlite_dsn) == 6 + 4, 20)
        assert wait_until(lambda: ("ghost-00000", "unknown_device") in anomaly_pairs(sqlite_dsn), 20)
        db = open_db(sqlite_dsn, migrate=False)
        try:
            big = queries.anomalies(db, kind="oversize")[0]
            unknown = queries.anomalies(db, kind="unknown_device")
        finally:
            db.close()
        assert big["evidence"]["size"] == 10 * 1024 * 1024 + 2 and "head" not in big["evidence"]
        assert [a["device"] for a in unknown] == ["ghost-00000"] and unknown[0]["count"] == 2
        assert w.alive
    finally:
        assert w.stop() == 0


def test_ingest__mtls_and_password_brokers_with_the_device_side_options(
    mtls_broker: Broker, password_broker: Broker, sqlite_dsn: str, tmp_path: Path
) -> None:
    from tests.broker import TEST_USERS

    pki = mtls_broker.pki
    tls = ["--ca-file", str(pki.ca_pem), "--cert-file", str(pki.client_pem), "--key-file", str(pki.client_key)]
    pw = tmp_path / "central.pw"
    pw.write_text(TEST_USERS["central"] + "\n")
    pw.chmod(0o600)
    creds = ["--username", "central", "--password-file", str(pw)]
    workers = [
        Worker(mtls_broker, sqlite_dsn, tmp_path, "wt", *tls, share=None).start(),
        Worker(password_broker, sqlite_dsn, tmp_path, "wp", *creds, share=None).start(),
    ]
    try:
        simulate(mtls_broker, sqlite_dsn, tmp_path / "t.json", "--devices", "2", "--records", "3", *tls)
        simulate(
            password_broker,
            sqlite_dsn,
            tmp_path / "p.json",
            "--devices",
            "2",
            "--records",
            "3",
            "--name-prefix",
            "pw",
            *creds,
        )
        assert wait_until(lambda: stored_count(sqlite_dsn) == 12, 20)
    finally:
        assert [w.stop() for w in workers] == [0, 0]
    # A worker without the client certificate is refused by the mTLS broker and says why, then keeps retrying.
    bad = Worker(mtls_broker, sqlite_dsn, tmp_path, "wbad", "--ca-file", str(pki.ca_pem), share=None)
    with bad.log_path.open("ab") as log:
        import subprocess

        bad.proc = subprocess.Popen(bad.args, stdout=log, stderr=subprocess.STDOUT)
        LIVE.append(bad)
    try:
        assert wait_until(lambda: "client certificate missing or rejected" in bad.log_text(), 20), bad.log_text()
        assert bad.alive
    finally:
        bad.stop()


def test_ingest__prometheus_endpoint_counts_records_and_anomalies(
    broker: Broker, sqlite_dsn: str, tmp_path: Path
) -> None:
    import urllib.request

    from tests.broker import free_port

    port = free_port()
    w = Worker(broker, sqlite_dsn, tmp_path, "wm", "--metrics-port", str(port), share=None).start()
    try:
        simulate(broker, sqlite_dsn, tmp_path / "m.json", "--devices", "3", "--records", "4", "--misbehave", "forge")
        assert wait_until(lambda: stored_count(sqlite_dsn) == 12, 20)

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.read().decode()

        assert wait_until(lambda: "central_records_stored_total 12.0" in scrape(), 10), scrape()
        text = scrape()
        assert 'central_anomalies_total{kind="bad_signature"} 1.0' in text
        assert "central_verify_failures_total 1.0" in text
        assert 'central_device_lag_seconds{device="sim-00000"}' in text
    finally:
        w.stop()


def test_ingest__publishes_with_properties_or_qos_0_take_paho_s_own_path_and_are_stored(
    broker: Broker, sqlite_dsn: str, tmp_path: Path
) -> None:
    """The worker's client hands a bare QoS 1 PUBLISH straight to its queue; one with MQTT 5
    properties or at QoS 0 goes through paho's own decoding. Both kinds end up stored and chained."""
    from datetime import UTC, datetime

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from edge_agent.central import queries
    from edge_agent.central.db import open_db
    from edge_agent.central.simulate import build_fleet, register_fleet, step
    from tests.broker import connect_and_wait, new_client

    fleet = build_fleet(1, seed="props")
    db = open_db(sqlite_dsn)
    try:
        register_fleet(db, fleet)
    finally:
        db.close()
    msgs = [(o.topic, o.payload) for _ in range(6) for o in step(fleet[0], "edge", datetime.now(UTC))]
    w = Worker(broker, sqlite_dsn, tmp_path, "wp", share=None).start()
    client = new_client("props-pub")
    try:
        assert not connect_and_wait(client, broker).is_failure
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = ("source", "test")
        props.ContentType = "application/json"
        infos = []
        for i, (topic, payload) in enumerate(msgs):
            if i % 3 == 1:
                infos.append(client.publish(topic, payload, qos=1, properties=props))
            elif i % 3 == 2:
                infos.append(client.publish(topic, payload, qos=0))
            else:
                infos.append(client.publish(topic, payload, qos=1))
        for info in infos:
            info.wait_for_publish(5)
        assert wait_until(lambda: stored_count(sqlite_dsn) == len(msgs), 20)
        db = open_db(sqlite_dsn, migrate=False)
        try:
            st = queries.status(db)[0]
            assert st["verified_through"] == st["head_seq"] == len(msgs)
            assert queries.anomalies(db) == []
        finally:
            db.close()
        assert w.alive
    finally:
        client.disconnect()
        client.loop_stop()
        assert w.stop() == 0


def test_ingest__a_publish_longer_than_one_socket_read_then_silence_still_stops_at_once(
    broker: Broker, sqlite_dsn: str, tmp_path: Path
) -> None:
    # The worker reads its socket 64 KiB at a time. A message longer than that, with nothing after it,
    # once left the network thread spinning on a read that could never complete: no keepalive, no acks,
    # and a SIGTERM that never ended the process.
    from tests.broker import publish

    w = Worker(broker, sqlite_dsn, tmp_path, "wl", share=None).start()
    try:
        publish(broker, "edge/sim/sim-00000/rec/telemetry", [b"{" + b"x" * (200 * 1024) + b"}"], client_id="long")
        assert wait_until(lambda: anomaly_pairs(sqlite_dsn) == [("sim-00000", "malformed")], 20), anomaly_pairs(
            sqlite_dsn
        )
    finally:
        assert w.stop() == 0
    assert "ingest stopped: 0 record(s)" in w.log_text()


def test_ingest__a_stop_during_a_stuck_commit_says_where_it_waits_and_still_stores_the_batch(
    broker: Broker, pg_dsn: str, tmp_path: Path
) -> None:
    # Another session holds the records table (SHARE: reads go on, inserts wait). The worker's commit waits
    # on it when SIGTERM comes: the stop must not drop the batch, and after STOP_SLOW_S it says what it is
    # waiting for, with every thread's stack, so that a stuck stop in the field is found the first time.
    import signal

    import psycopg

    from edge_agent.central.worker import STOP_SLOW_S

    w = Worker(broker, pg_dsn, tmp_path, "ws", share=None).start()
    assert w.proc is not None
    with psycopg.connect(pg_dsn) as holder:
        holder.execute("LOCK TABLE records IN SHARE MODE")
        try:
            simulate(broker, pg_dsn, tmp_path / "s.json", "--devices", "1", "--records", "3", "--seed", "stuck")

            def commit_waits() -> bool:
                with psycopg.connect(pg_dsn, autocommit=True) as c:
                    row = c.execute(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation IS NOT NULL"
                    ).fetchone()
                return bool(row and row[0])

            assert wait_until(commit_waits, 20), w.log_text()[-3000:]
            w.proc.send_signal(signal.SIGTERM)
            said = "ingest: stopping is slow: waiting for the batch being stored (the database)"
            assert wait_until(lambda: said in w.log_text(), STOP_SLOW_S + 10), w.log_text()[-3000:]
            text = w.log_text()
            assert re.search(r'central/worker\.py", line \d+ in _commit_loop$', text, re.MULTILINE), text[-3000:]
            assert re.search(r'central/worker\.py", line \d+ in _stop_threads$', text, re.MULTILINE), text[-3000:]
            assert w.alive and stored_count(pg_dsn) == 0
        finally:
            holder.rollback()
    assert w.proc.wait(20) == 0, w.log_text()[-3000:]
    assert stored_count(pg_dsn) == 3
    assert "ingest stopped: 3 record(s)" in w.log_text()


def test_ingest__a_database_with_no_device_registered_is_named_at_start(
    broker: Broker, sqlite_dsn: str, tmp_path: Path
) -> None:
    """A worker on a database nobody registered a device in (a --db that is not the one meant) says so at
    start, before it stores every record as an unknown device's."""
    w = Worker(broker, sqlite_dsn, tmp_path, "wempty", share=None).start()
    try:
        simulate(broker, None, tmp_path / "e.json", "--devices", "1", "--records", "2")
        assert wait_until(lambda: ("sim-00000", "unknown_device") in anomaly_pairs(sqlite_dsn), 20)
    finally:
        w.stop()
    log = w.log_text()
    assert "no device is registered in " in log and "check --db" in log


def test_ingest__two_workers_with_one_client_id_are_told_apart_in_the_log(
    broker: Broker, sqlite_dsn: str, tmp_path: Path
) -> None:
    """Two workers started with one --client-id knock each other off every second; the log said only
    "connection lost (Unspecified error)"."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Worker(broker, sqlite_dsn, tmp_path / "a", "same-id", share=None).start()
    second = Worker(broker, sqlite_dsn, tmp_path / "b", "same-id", share=None).start()
    try:
        hint = "another client may be using --client-id same-id"
        assert wait_until(lambda: hint in first.log_text() or hint in second.log_text(), 20), first.log_text()
    finally:
        second.stop()
        first.stop()
