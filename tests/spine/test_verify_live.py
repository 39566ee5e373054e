"""`verify --mqtt` joining a running device: records only, a live start, the retained checkpoint checked."""

from __future__ import annotations

from pathlib import Path

from edge_agent.spine.checkpoint import publish_checkpoint
from tests.broker import Broker
from tests.helpers import wait_until
from tests.spine.test_sync import fill, running_sync, signing_device, verify_live


def _joined(broker: Broker) -> bool:
    return "Received SUBSCRIBE from edge-verify-" in broker.log_text()


def test_verify_mqtt__whole_device_filter_on_a_running_device_checks_records_only(
    broker: Broker, tmp_path: Path
) -> None:
    """`edge/SITE/DEVICE/#` also brings the retained status and checkpoint; the device ran before verify joined."""
    cfg, key, pub = signing_device(tmp_path, broker.url)
    ob = fill(cfg, key, 200)
    with running_sync(cfg) as sync:
        assert wait_until(lambda: ob.stats().depth == 0), sync.last_error
        publish_checkpoint(cfg, key, sync, "2026-03-27T09:00:00.000Z")  # retained, at seq 200
        proc = verify_live(broker, pub, "edge/site-a/dev-1/#", "--idle", "5")
        assert wait_until(lambda: _joined(broker), 15), broker.log_text()[-500:]
        fill(cfg, key, 50)  # seq 201-250, published while verify listens
        sync.notify()
        assert wait_until(lambda: ob.stats().depth == 0), sync.last_error
        publish_checkpoint(cfg, key, sync, "2026-03-27T09:05:00.000Z")  # at seq 250, among the records seen
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    assert "malformed" not in out and "hole" not in out, out
    assert "INFO seq 201: start: live stream: the first record seen is seq 201; seq 1-200 were published" in out
    assert "skipped 3 message(s) that are not records (not on .../rec/<kind>): 2 checkpoint, 1 status" in out
    assert "INFO seq 200: checkpoint: the device's checkpoint of 2026-03-27T09:00:00.000Z is before the first" in out
    assert "INFO seq 250: checkpoint: stream reaches the device's checkpoint of 2026-03-27T09:05:00.000Z" in out
    assert "INTACT: device dev-1, 50 record(s) (seq 201..250), 50 received, 0 failure(s)" in out


def test_verify_mqtt__joining_mid_chain_starts_at_the_first_seq_seen(broker: Broker, tmp_path: Path) -> None:
    """A live subscriber never sees the past: without --from-seq a later start is said, not failed."""
    cfg, key, pub = signing_device(tmp_path, broker.url)
    ob = fill(cfg, key, 20)
    with running_sync(cfg) as sync:
        assert wait_until(lambda: ob.stats().depth == 0), sync.last_error
        proc = verify_live(broker, pub, "edge/site-a/dev-1/rec/#", "--idle", "5", "--count", "5")
        assert wait_until(lambda: _joined(broker), 15), broker.log_text()[-500:]
        fill(cfg, key, 5)  # seq 21-25
        sync.notify()
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    assert "INFO seq 21: start: live stream: the first record seen is seq 21; seq 1-20 were published" in out
    assert "skipped" not in out
    assert "INTACT: device dev-1, 5 record(s) (seq 21..25)" in out


def test_verify_mqtt__default_topic_with_two_devices_checks_one_and_counts_the_other(
    broker: Broker, tmp_path: Path
) -> None:
    """The default filter edge/+/+/rec/# brings every device's records: they are not one broken stream."""
    cfg1, key1, pub1 = signing_device(tmp_path / "a", broker.url, "dev-1")
    cfg2, key2, pub2 = signing_device(tmp_path / "b", broker.url, "dev-2")
    first = verify_live(broker, pub1, None, "--idle", "5")
    chosen = verify_live(broker, pub2, None, "--device", "dev-2", "--count", "7")
    assert wait_until(lambda: broker.log_text().count("Received SUBSCRIBE from edge-verify-") == 2, 15)
    assert "edge/+/dev-2/rec/#" in broker.log_text()  # --device narrows the default filter
    ob1 = fill(cfg1, key1, 12)
    with running_sync(cfg1) as sync:
        assert wait_until(lambda: ob1.stats().depth == 0), sync.last_error
    ob2 = fill(cfg2, key2, 7)
    with running_sync(cfg2) as sync:
        assert wait_until(lambda: ob2.stats().depth == 0), sync.last_error
        out2, _ = chosen.communicate(timeout=90)
    out1, _ = first.communicate(timeout=90)
    assert first.returncode == 0, out1
    assert "skipped 7 record(s) of other devices: dev-2 7 (one device is checked at a time: --device ID)" in out1
    assert "INTACT: device dev-1, 12 record(s) (seq 1..12), 12 received, 0 failure(s)" in out1
    assert chosen.returncode == 0, out2
    assert "skipped" not in out2 and "INTACT: device dev-2, 7 record(s) (seq 1..7)" in out2
