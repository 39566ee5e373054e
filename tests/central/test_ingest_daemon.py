"""A real edge-agent (truck profile on pty twins) publishing into a central ingest worker on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.central import queries
from edge_agent.central.db import open_db
from edge_agent.cli.main import main as cli_main
from edge_agent.demo.runner import Twins
from edge_agent.settings import set_value
from edge_agent.spine.keys import load_public_keys
from edge_agent.spine.verify import Verifier
from tests.broker import Broker
from tests.central.procs import Worker, cli_out
from tests.helpers import wait_until

DEVICE, SITE = "truck-7", "bj"
SPEEDUP = 60.0  # 10 simulated minutes of driving take 10 s


@pytest.fixture
def truck(tmp_path: Path, broker: Broker) -> Iterator[Path]:
    """A provisioned truck config whose GPS and OBD-II are pty twins: parked, a 6 km drive, parked."""
    from edge_agent.drivers.elm327.twin import Elm327Twin
    from edge_agent.drivers.nmea.twin import Leg, NmeaTwin

    cfg_dir = tmp_path / "etc"
    assert (
        cli_main(
            [
                "init",
                "--profile",
                "truck",
                "--device-id",
                DEVICE,
                "--site",
                SITE,
                "--broker",
                broker.url,
                "--dir",
                str(cfg_dir),
                "--state-dir",
                str(tmp_path / "state"),
            ]
        )
        == 0
    )
    cfg = cfg_dir / "config.toml"
    twins = Twins()
    try:
        obd = twins.add(Elm327Twin(link=tmp_path / "obd", time_scale=SPEEDUP))
        gps = twins.add(
            NmeaTwin(
                link=tmp_path / "gps",
                legs=[Leg(30, 0.0, 90.0), Leg(300, 72.0, 90.0), Leg(100000, 0.0, 90.0)],
                start_lat=39.9042,
                start_lon=116.4074,
                start_t=datetime.now(UTC),
                speedup=SPEEDUP,
                start_after=obd.answering,  # the drive starts once the agent reads the OBD-II adapter
            )
        )
        set_value(cfg, "telematics.transport_id", '"京A12345"')
        set_value(cfg, "telematics.gps.port", f'"{gps.path}"')
        set_value(cfg, "checkpoint.interval_s", "2")
        set_value(cfg, "health.interval_s", "2")  # records keep coming while parked, after the rotation too
        with cfg.open("a", encoding="utf-8") as f:
            f.write(
                f'\n[telematics.fuel]\nkind = "elm327"\nport = "{obd.path}"\n\n'
                "[telematics.trips]\nmin_trip_s = 60.0\nmin_parking_s = 120.0\n\n"
                # time runs SPEEDUP times faster: one poll a second is a minute of the truck's time
                "[telematics.cleaning]\nfuel_rate_max_gap_s = 600.0\n"
            )
        yield cfg
    finally:
        twins.stop()


def test_ingest__real_truck_daemon_trips_verify_and_a_signed_key_rotation_is_followed(
    truck: Path, broker: Broker, pg_dsn: str, tmp_path: Path
) -> None:
    cfg = truck
    pub = tmp_path / "device.pub.pem"
    pub.write_text(cli_out("keys", "export-public", "--config", str(cfg)))
    cli_out("central", "devices", "add", "--db", pg_dsn, "--device", DEVICE, "--site", SITE, "--pubkey", str(pub))
    cli_out("central", "keygen", "--out", str(tmp_path / "central"))
    set_value(cfg, "commands.trusted_keys", json.dumps([str(tmp_path / "central" / "central.pub.pem")]))
    worker = Worker(broker, pg_dsn, tmp_path, "wd", "--hole-after-s", "5", share=None).start()
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT
    )
    db = open_db(pg_dsn, migrate=False)
    try:
        assert wait_until(lambda: db.query("SELECT route, distance_km, co2_kg FROM trips"), 60), (
            tmp_path / "agent.log"
        ).read_text()[-3000:]
        route, distance_km, co2_kg = db.query("SELECT route, distance_km, co2_kg FROM trips")[0]
        assert 4.0 < distance_km < 8.0  # 5 min at 72 km/h = 6 km
        assert route.startswith("从") and co2_kg is not None
        old_key = db.query_one("SELECT key_id FROM devices WHERE device = ?", (DEVICE,))[0]

        cli_out(
            "central",
            "sign-command",
            "--key",
            str(tmp_path / "central" / "central.key"),
            "--device",
            DEVICE,
            "--name",
            "rotate_key",
            "--publish",
            broker.url,
            "--site",
            SITE,
        )
        assert wait_until(lambda: db.query("SELECT seq FROM records WHERE kind = 'key_rotation'"), 30)
        (rot_seq,) = db.query("SELECT seq FROM records WHERE kind = 'key_rotation'")[0]
        # Records signed with the new key arrive, verify and extend the chain.
        assert wait_until(
            lambda: (
                (db.query_one("SELECT verified_through FROM devices WHERE device = ?", (DEVICE,)) or (0,))[0]
                > rot_seq + 2
            ),
            30,
        )
        new_key = db.query_one("SELECT key_id FROM devices WHERE device = ?", (DEVICE,))[0]
        assert new_key != old_key
        assert db.query("SELECT COUNT(*) FROM records WHERE seq > ? AND key_id = ?", (rot_seq, old_key)) == [(0,)]
        agent.terminate()
        agent.wait(20)
        outbox_head = json.loads(cli_out("status", "--config", str(cfg), "--json")).get("outbox", {}).get("head_seq")
        # Everything the agent committed reaches central and verifies, with no anomaly.
        assert wait_until(
            lambda: (
                outbox_head is None
                or (db.query_one("SELECT verified_through FROM devices WHERE device = ?", (DEVICE,)) or (0,))[0]
                >= outbox_head
            ),
            30,
        )
        st = queries.status(db, DEVICE)[0]
        assert st["head_seq"] == st["verified_through"] and st["anomalies"] == 0, (st, queries.anomalies(db))
        assert queries.anomalies(db) == []
        keys = load_public_keys(pub)
        v = Verifier(keys, strict_order=True)
        for (text,) in db.query("SELECT record FROM records WHERE device = ? ORDER BY seq", (DEVICE,)):
            v.add(json.loads(text))
        v.finish()
        assert v.ok, [f.line() for f in v.findings]
        assert st["checkpoint_seq"] is not None
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        db.close()
        worker.stop()
