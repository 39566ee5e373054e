"""MQTT sync against a real mosquitto: delivery on PUBACK, outages, TLS, mTLS, passwords, clear errors."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.errors import SyncError
from edge_agent.settings import AgentConfig, parse_config
from edge_agent.spine.chain import ChainWriter
from edge_agent.spine.clock import Clock
from edge_agent.spine.keys import DeviceKey, generate_key
from edge_agent.spine.outbox import Outbox
from edge_agent.spine.sync import MqttSync
from tests.broker import TEST_USERS, Broker, Subscriber
from tests.helpers import wait_until


def make_cfg(tmp_path: Path, url: str, *, device: str = "dev-1", **mqtt: object) -> AgentConfig:
    return parse_config(
        {
            "profile": "sensors",
            "device": {"id": device, "site": "site-a"},
            "state_dir": str(tmp_path / "state"),
            "mqtt": {"url": url, "backoff_min_s": 0.2, "backoff_max_s": 1.0, **mqtt},
        }
    )


def fill(cfg: AgentConfig, key: DeviceKey, n: int) -> Outbox:
    ob, _ = Outbox.open_checked(cfg.db_path)
    ob.append(
        [("telemetry", {"i": i}) for i in range(n)], device=cfg.device.id, key=key, clock=Clock(), max_bytes=1 << 30
    )
    return ob


@contextlib.contextmanager
def running_sync(cfg: AgentConfig) -> Iterator[MqttSync]:
    """A started MqttSync on cfg's outbox, stopped (flush, offline, disconnect) on exit."""
    sync = MqttSync(cfg, cfg.db_path)
    sync.start()
    try:
        yield sync
    finally:
        sync.stop()


def seqs_of(sub: Subscriber) -> list[int]:
    return [json.loads(m.payload)["seq"] for m in sub.messages() if "/rec/" in m.topic]


def test_sync__delivers_in_order_and_marks_on_puback(broker: Broker, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, broker.url)
    key = generate_key(cfg.key_path)
    ob = fill(cfg, key, 300)
    with Subscriber(broker, "edge/site-a/dev-1/#", client_id="central") as sub:
        with running_sync(cfg):
            assert wait_until(lambda: ob.stats().depth == 0)
            # count records only: the retained `online` status is a message on the same subscription
            assert wait_until(lambda: len(seqs_of(sub)) >= 300, 10)
            assert seqs_of(sub)[:300] == list(range(1, 301))
            assert ob.stats().last_delivered_seq == 300
            status = [m.payload for m in sub.messages("edge/site-a/dev-1/status")]
            assert status and status[-1] == b"online"
        assert wait_until(lambda: any(m.payload == b"offline" for m in sub.messages("edge/site-a/dev-1/status")), 5)


def test_sync__broker_outage_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, broker.url)
    key = generate_key(cfg.key_path)
    ob = fill(cfg, key, 50)
    sub = Subscriber(broker, "edge/site-a/dev-1/rec/#", client_id="central").start()
    with running_sync(cfg) as sync:
        assert wait_until(lambda: ob.stats().depth == 0)
        sub.stop()
        broker.stop()
        assert wait_until(lambda: not sync.connected.is_set(), 5)
        ob.append(
            [("telemetry", {"during_outage": i}) for i in range(200)],
            device="dev-1",
            key=key,
            clock=Clock(),
            max_bytes=1 << 30,
        )
        t0 = time.monotonic()
        sync.notify()
        # The publisher has gone round its loop a few times since (it beats on each turn) and sent nothing.
        assert wait_until(lambda: sync.heartbeat > t0 + 0.5, 10)
        assert ob.stats().depth == 200
        broker.restart()
        sub.start()
        assert wait_until(lambda: ob.stats().depth == 0, 20), sync.last_error
        assert wait_until(lambda: set(range(1, 251)) <= set(seqs_of(sub)), 10)
        after = [s for s in seqs_of(sub) if s > 50]
        assert after == sorted(after)
        sub.stop()


def test_sync__only_the_network_loop_writes_to_the_socket(broker: Broker, tmp_path: Path) -> None:
    """publish() from the publisher thread only queues its packet: paho would otherwise write it from the
    calling thread, racing the network thread for its queue (seq 56 reached the broker before 55 once,
    in a full run under load, after a broker outage). Here the test thread plays the network thread."""
    cfg = make_cfg(tmp_path, broker.url)
    sync = MqttSync(cfg, cfg.db_path)  # not started: no thread of its own
    client = sync.client
    client.connect(broker.host, broker.port, 30)
    assert wait_until(lambda: client.loop(0.05) == 0 and sync.connected.is_set(), 5)
    info = client.publish("edge/site-a/dev-1/rec/telemetry", b"{}", qos=1)
    assert client.want_write()  # queued, not written by publish() itself
    assert wait_until(lambda: client.loop(0.05) == 0 and info.is_published(), 5)
    assert not client.want_write()
    client.disconnect()
    client.loop_write()


def test_sync__tls_and_mtls(tls_broker: Broker, tmp_path: Path) -> None:
    pki = tls_broker.pki
    cfg = make_cfg(tmp_path, tls_broker.url, ca_file=str(pki.ca_pem))
    key = generate_key(cfg.key_path)
    ob = fill(cfg, key, 20)
    with running_sync(cfg) as sync:
        assert wait_until(lambda: ob.stats().depth == 0), sync.last_error


def test_sync__mtls_needs_client_certificate(mtls_broker: Broker, tmp_path: Path) -> None:
    pki = mtls_broker.pki
    cfg = make_cfg(
        tmp_path, mtls_broker.url, ca_file=str(pki.ca_pem), cert_file=str(pki.client_pem), key_file=str(pki.client_key)
    )
    key = generate_key(cfg.key_path)
    ob = fill(cfg, key, 20)
    with running_sync(cfg) as sync:
        assert wait_until(lambda: ob.stats().depth == 0), sync.last_error
    bad = make_cfg(
        tmp_path / "b",
        mtls_broker.url,
        ca_file=str(pki.ca_pem),
        cert_file=str(pki.wrong_client_pem),
        key_file=str(pki.wrong_client_key),
    )
    generate_key(bad.key_path)
    fill(bad, key, 1)
    with running_sync(bad) as sync:
        assert wait_until(lambda: sync.last_error is not None, 10)
        assert not sync.connected.is_set()


def test_sync__wrong_ca_is_a_clear_error(tls_broker: Broker, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, tls_broker.url, ca_file=str(tls_broker.pki.wrong_ca_pem))
    generate_key(cfg.key_path)
    Outbox.open_checked(cfg.db_path)
    with running_sync(cfg) as sync:
        assert wait_until(lambda: sync.last_error is not None, 10)
        assert "certificate not trusted" in (sync.last_error or "")
        assert "mqtt.ca_file" in (sync.last_error or "")
        assert not sync.connected.is_set()


def test_sync__wrong_password_is_a_clear_error(password_broker: Broker, tmp_path: Path) -> None:
    user = next(iter(TEST_USERS))
    cfg = make_cfg(tmp_path, password_broker.url, username=user, password="wrong")  # noqa: S106 - a test credential
    key = generate_key(cfg.key_path)
    ob = fill(cfg, key, 5)
    with running_sync(cfg) as sync:
        assert wait_until(lambda: sync.last_error is not None, 10)
        assert "refused the connection" in (sync.last_error or "")
        assert ob.stats().depth == 5
    pw = tmp_path / "pw"
    pw.write_text(TEST_USERS[user] + "\n")
    good = make_cfg(tmp_path / "g", password_broker.url, username=user, password_file=str(pw))
    generate_key(good.key_path)
    ob2 = fill(good, key, 5)
    with running_sync(good) as sync:
        assert wait_until(lambda: ob2.stats().depth == 0), sync.last_error


def test_sync__missing_ca_file_is_refused_at_setup(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "mqtts://127.0.0.1:8883", ca_file=str(tmp_path / "nope.pem"))
    with pytest.raises(SyncError, match=r"mqtt.ca_file: .*nope.pem not found"):
        MqttSync(cfg, cfg.db_path)


def test_sync__missing_password_file_is_refused_at_setup(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "mqtt://127.0.0.1:1883", username="u", password_file=str(tmp_path / "nope.password"))
    with pytest.raises(SyncError, match=r"mqtt.password_file: .*nope.password: cannot read \(No such file"):
        MqttSync(cfg, cfg.db_path)


def test_sync__records_the_broker_refuses_are_named_in_last_error_and_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL without .../rec/#: mosquitto answers each record with PUBACK 'Not authorized'. The agent said
    nothing (status: broker connected, last error -) while its outbox grew."""
    acl = "topic readwrite edge/site-a/dev-1/status\ntopic read edge/site-a/dev-1/cmd/#\n"
    with Broker(tmp_path / "acl-broker", acl=acl) as broker:
        cfg = make_cfg(tmp_path, broker.url)
        ob = fill(cfg, generate_key(cfg.key_path), 3)
        with running_sync(cfg) as sync:
            assert wait_until(lambda: sync.last_error is not None, 10)
            assert re.search(r"refused record seq [123]: Not authorized", sync.last_error or ""), sync.last_error
            assert "edge/site-a/dev-1/rec/#" in sync.last_error
            assert sync.connected.is_set() and ob.stats().depth == 3
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "refused record seq" in errors[0], errors


def test_sync__a_record_over_the_brokers_packet_limit_is_named_and_the_connection_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """mosquitto closes a connection on a PUBLISH over its max_packet_size: the agent reconnected and sent the
    same record again every second, forever, with status saying nothing (last error -)."""
    with Broker(tmp_path / "small-broker", max_packet_size=700) as broker:
        cfg = make_cfg(tmp_path, broker.url)
        ob, _ = Outbox.open_checked(cfg.db_path)
        items = [("event", {"i": 1}), ("event", {"blob": "x" * 2000}), ("event", {"i": 3})]
        ob.append(items, device="dev-1", key=generate_key(cfg.key_path), clock=Clock(), max_bytes=1 << 30)
        with running_sync(cfg) as sync:
            assert wait_until(lambda: sync.last_error is not None and ob.stats().last_delivered_seq == 1, 10)
            assert sync.last_error is not None
            assert "record seq 2 is a " in sync.last_error and "maximum packet size of 700 bytes" in sync.last_error
            assert sync.connected.is_set() and ob.stats().depth == 2
    assert "connection lost" not in caplog.text
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [f"MQTT: {sync.last_error}"]


def test_sync__two_clients_with_one_client_id_are_named_not_an_unspecified_error(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A device cloned from another's SD card (same device.id, same client id): mosquitto closed one connection
    after the other, every second, and the agent said 'connection lost (Unspecified error)', status nothing."""
    first = make_cfg(tmp_path / "a", broker.url)
    clone = make_cfg(tmp_path / "b", broker.url)
    with running_sync(first) as a:
        assert a.connected.wait(10), a.last_error
        with running_sync(clone):
            assert wait_until(lambda: a.last_error is not None and "another client uses client id" in a.last_error)
            assert a.last_error is not None and "edge-agent-site-a-dev-1" in a.last_error
    warnings = [r.getMessage() for r in caplog.records if "another client uses client id" in r.getMessage()]
    assert warnings and all(
        r.levelname in ("WARNING", "DEBUG") for r in caplog.records if "client id" in r.getMessage()
    )


def test_sync__mqtt_311_setting_delivers(broker: Broker, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, broker.url, protocol="3.1.1")
    key = generate_key(cfg.key_path)
    ob = fill(cfg, key, 30)
    with running_sync(cfg) as sync:
        assert wait_until(lambda: ob.stats().depth == 0), sync.last_error


def signing_device(tmp_path: Path, url: str, device: str = "dev-1") -> tuple[AgentConfig, DeviceKey, Path]:
    """A device's config, its key and its public key's PEM file (for verify --pubkey)."""
    from edge_agent.spine.keys import public_pem

    cfg = make_cfg(tmp_path, url, device=device)
    key = generate_key(cfg.key_path)
    pub = tmp_path / "pub.pem"
    pub.write_bytes(public_pem(key.public))
    return cfg, key, pub


def verify_live(broker: Broker, pub: Path, topic: str | None, *extra: str) -> subprocess.Popen[str]:
    """`edge-agent verify --mqtt` on `topic` (None: its default), running until --count, --idle or a 60 s timeout."""
    cmd = [sys.executable, "-m", "edge_agent.cli", "verify", "--pubkey", str(pub), "--mqtt", broker.url]
    cmd += ([] if topic is None else ["--topic", topic]) + ["--timeout", "60", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_verify_mqtt__shared_subscription_checks_live_stream(broker: Broker, tmp_path: Path) -> None:
    cfg, key, pub = signing_device(tmp_path, broker.url)
    ob = fill(cfg, key, 400)
    proc = verify_live(broker, pub, "$share/central/edge/site-a/dev-1/rec/#", "--count", "400")
    assert wait_until(lambda: "as edge-verify-" in broker.log_text(), 15), broker.log_text()[-500:]
    assert wait_until(lambda: "Received SUBSCRIBE from edge-verify-" in broker.log_text(), 15)
    with running_sync(cfg):
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "INTACT: device dev-1, 400 record(s)" in out
    assert ob.stats().depth == 0


def test_resume_cursor__a_record_the_agent_commits_meanwhile_is_not_jumped_over(tmp_path: Path) -> None:
    """Where the publisher (re)starts, while the agent's own thread commits records. Seen in a soak: the
    publisher asked for the first undelivered record before seq 1 was committed and for the head after,
    started after seq 1 and never sent it on that connection."""
    from edge_agent.spine.sync import resume_cursor

    key = generate_key(tmp_path / "k")
    writer, _ = Outbox.open_checked(tmp_path / "o.db")

    def commit_one() -> None:
        writer.append([("event", {"i": 1})], device="d", key=key, clock=Clock(), max_bytes=1 << 30)

    class Interleaved(Outbox):
        """The publisher's own connection to the same file; the writer commits between its two reads."""

        def head(self) -> tuple[int, str]:
            got = super().head()
            commit_one()
            return got

        def first_undelivered_seq(self) -> int | None:
            got = super().first_undelivered_seq()
            commit_one()
            return got

    reader = Interleaved(tmp_path / "o.db")
    try:
        cursor = resume_cursor(reader, set())
        assert cursor == 0  # seq 1 (committed between the reads) and seq 2 (after them) are both still ahead
        assert [seq for seq, _kind, _data in reader.undelivered(cursor, 10)] == [1, 2]
        writer.mark_delivered([1, 2])
        assert resume_cursor(reader, set()) == 2  # seq 3 came between the reads: still ahead
        # What paho still has in flight it re-sends itself: the publisher goes on after it.
        assert resume_cursor(writer, {3, 4}) == 4
    finally:
        reader.close()
        writer.close()


def test_sync__publishes_from_the_fresh_outbox_once_a_damaged_one_is_moved_aside(
    broker: Broker, tmp_path: Path
) -> None:
    cfg = make_cfg(tmp_path, broker.url)
    key = generate_key(cfg.key_path)
    ob = fill(cfg, key, 20)
    writer = ChainWriter(ob, device="dev-1", key=key, clock=Clock(), max_bytes=1 << 30)
    with Subscriber(broker, "edge/site-a/dev-1/rec/#", client_id="central") as sub, running_sync(cfg) as sync:
        assert wait_until(lambda: seqs_of(sub) == list(range(1, 21)), 10)
        ob.conn.execute("UPDATE meta SET value = '5' WHERE key = 'head_seq'")  # the head went back: damage
        writer.start()
        try:
            writer.emit("telemetry", {"after": True})
            assert writer.flush(10), writer.last_error
            assert writer.outbox is not ob
            # The publisher left the moved file for the fresh one: the gap (21) and the new record (22).
            assert wait_until(lambda: {21, 22} <= set(seqs_of(sub)), 10), sync.last_error
            assert wait_until(lambda: writer.outbox.stats().depth == 0, 10)
        finally:
            writer.stop()
            writer.outbox.close()
    seqs = seqs_of(sub)
    # Before them, only records sent again: any whose acknowledgement was not yet written to the moved file
    # were still undelivered there, so they were saved into the fresh one and sent once more (same hash).
    assert seqs[:20] == list(range(1, 21)) and seqs[-2:] == [21, 22] and all(s <= 20 for s in seqs[20:-2])
    (gap,) = [json.loads(m.payload) for m in sub.messages() if json.loads(m.payload).get("seq") == 21]
    assert gap["kind"] == "gap" and gap["body"]["reason"] == "outbox_corrupt" and gap["body"]["ranges"] == []
