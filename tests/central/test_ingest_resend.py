"""Central gets back what a broker lost: a real device's hole, a signed resend, the hole filled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge_agent.central.db import open_db
from edge_agent.cli.main import render_config
from edge_agent.settings import load_config
from edge_agent.spine.keys import generate_key
from edge_agent.spine.outbox import Outbox
from edge_agent.spine.sync import STALE_S, resume_cursor
from tests.broker import Broker, Subscriber
from tests.central.procs import Worker, cli_out
from tests.helpers import wait_until

DEVICE, SITE = "shelf-3", "wh-9"


def _outbox_state(outbox: Path) -> str:
    try:
        with Outbox(outbox, readonly=True) as ob:
            return f"outbox: head seq {ob.head()[0]}, first undelivered {ob.first_undelivered_seq()}"
    except Exception as exc:  # noqa: BLE001 - for the failure message only
        return f"outbox: not readable ({exc})"


def _delivered_through(outbox: Path) -> int:
    """The highest seq the broker has acknowledged with every seq below it (-1 while the outbox is not there):
    where the device's publisher would resume."""
    try:
        with Outbox(outbox, readonly=True) as ob:
            return resume_cursor(ob, set())
    except Exception:  # noqa: BLE001 - the agent may still be creating it
        return -1


def _verified_through(dsn: str) -> int:
    db = open_db(dsn, migrate=False)
    try:
        row = db.query_one("SELECT verified_through FROM devices WHERE device = ?", (DEVICE,))
        return int(row[0]) if row else 0
    finally:
        db.close()


def _holes(dsn: str) -> list[tuple[object, ...]]:
    db = open_db(dsn, migrate=False)
    try:
        return db.query("SELECT seq, resends, resend_at, resolved_at FROM anomalies WHERE kind = 'hole'")
    finally:
        db.close()


def test_ingest__a_device_hole_is_asked_for_with_a_signed_resend_and_filled(
    dsn: str, broker: Broker, tmp_path: Path
) -> None:
    cli_out("central", "keygen", "--out", str(tmp_path / "central"))
    text = render_config("sensors", DEVICE, SITE, broker.url, tmp_path / "state")
    text = text.replace("trusted_keys = []", f'trusted_keys = ["{tmp_path / "central" / "central.pub.pem"}"]', 1)
    text = text.replace("interval_s = 60", "interval_s = 0.2", 1)  # health: records keep coming
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    loaded = load_config(cfg)
    generate_key(loaded.key_path)
    outbox = loaded.state_dir / "outbox.db"
    log_path = tmp_path / "agent.log"
    # Something else takes the first records (the broker acknowledges them as delivered), and central is
    # not there yet: what a broker that dies without saving its queues leaves central with.
    elsewhere = Subscriber(broker, "edge/+/+/rec/+", client_id="not-central", session_expiry_s=0).start()
    with log_path.open("wb") as log:
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT
        )
    worker: Worker | None = None
    try:
        # The device counts these records delivered; central never sees them.
        # Longer than sync.STALE_S: a record whose acknowledgement never came is published again after it.
        assert wait_until(lambda: _delivered_through(outbox) >= 10, STALE_S + 30), (
            f"{_outbox_state(outbox)}\n{log_path.read_text()[-3000:]}\n{broker.log_text()[-2000:]}"
        )
        lost = _delivered_through(outbox)
        elsewhere.stop()
        pub = tmp_path / "device.pub.pem"
        pub.write_text(cli_out("keys", "export-public", "--config", str(cfg)))
        cli_out("central", "devices", "add", "--db", dsn, "--device", DEVICE, "--site", SITE, "--pubkey", str(pub))
        worker = Worker(
            broker,
            dsn,
            tmp_path,
            "wr",
            "--hole-after-s",
            "1",
            "--resend-key",
            str(tmp_path / "central" / "central.key"),
            share=None,
        ).start()
        # Central sees the hole, asks the device for it, and the chain closes over it and goes on; the
        # next sweep marks the hole resolved.
        assert wait_until(
            lambda: _verified_through(dsn) > lost + 5 and any(h[3] is not None for h in _holes(dsn)), 60
        ), worker.log_text()[-3000:] + log_path.read_text()[-3000:]
        holes = _holes(dsn)
        assert len(holes) == 1 and holes[0][:2] == (1, 1) and holes[0][2] is not None, holes
        db = open_db(dsn, migrate=False)
        try:
            vt = _verified_through(dsn)
            assert db.query("SELECT COUNT(*) FROM records WHERE device = ? AND seq <= ?", (DEVICE, vt)) == [(vt,)]
            done = [
                json.loads(r)["body"]
                for (r,) in db.query("SELECT record FROM records WHERE device = ? AND kind = 'event'", (DEVICE,))
            ]
            resends = [b for b in done if b.get("event") == "command_done" and b.get("command") == "resend"]
            assert len(resends) == 1 and resends[0]["result"]["requeued"] >= lost, done
            assert resends[0]["result"]["missing"] == []
        finally:
            db.close()
        assert f"hole on {DEVICE}: asked it to resend seq 1-" in worker.log_text()
    finally:
        elsewhere.stop()
        agent.terminate()
        agent.wait(20)
        if worker is not None:
            worker.stop()
