"""Signed remote commands: message checks, replay guard, and each command against a real broker and agent."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import serial
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent import app as daemon
from edge_agent.errors import ConfigError
from edge_agent.service import ServiceContext
from edge_agent.settings import load_config, patch_text
from edge_agent.spine.chain import ChainWriter
from edge_agent.spine.config import RESTART_ONLY_KEYS
from edge_agent.spine.keys import generate_key, key_id_for, load_key, public_pem
from edge_agent.spine.outbox import Outbox
from edge_agent.spine.records import parse_line
from edge_agent.spine.remote.message import MAX_TTL_S, CommandRefused, sign_command, verify_command
from edge_agent.spine.remote.nonces import NonceStore
from edge_agent.spine.sync import MqttSync, topic_base
from tests.broker import Broker, Subscriber, publish
from tests.helpers import wait_until

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CENTRAL = Ed25519PrivateKey.generate()
TRUSTED = {key_id_for(CENTRAL.public_key()): CENTRAL.public_key()}


def _payload(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg).encode()


def _check(payload: bytes, *, topic_name: str | None = "status", device: str = "dev-1", now: datetime = NOW) -> Any:
    return verify_command(payload, topic_name=topic_name, device=device, trusted=TRUSTED, now=now, max_bytes=4096)


# ---------------------------------------------------------------- pure checks


def test_verify_command__accepts_a_signed_command() -> None:
    msg = sign_command(CENTRAL, device="dev-1", name="resend", args={"first_seq": 3, "last_seq": 9}, ttl_s=60, now=NOW)
    got = _check(_payload(msg), topic_name="resend", now=NOW + timedelta(seconds=59))
    assert (got.name, got.args, got.device) == ("resend", {"first_seq": 3, "last_seq": 9}, "dev-1")
    assert got.key == key_id_for(CENTRAL.public_key())
    assert got.expires_at - got.issued_at == timedelta(seconds=60)


def _resign(msg: dict[str, Any], key: Ed25519PrivateKey = CENTRAL) -> dict[str, Any]:
    from edge_agent.spine.remote.message import signing_bytes

    msg = dict(msg)
    msg["key"] = key_id_for(key.public_key())
    msg["sig"] = base64.b64encode(key.sign(signing_bytes(msg))).decode()
    return msg


def _bad_cases() -> list[tuple[str, bytes, str, str]]:
    good = sign_command(CENTRAL, device="dev-1", name="status", args={}, ttl_s=60, now=NOW)
    other = Ed25519PrivateKey.generate()
    unsigned = {k: v for k, v in good.items() if k != "sig"}
    tampered = dict(good, args={"x": 1})
    return [
        ("unsigned", _payload(unsigned), "unsigned", "must be signed"),
        ("tampered", _payload(tampered), "bad_signature", "does not verify"),
        ("not base64", _payload(dict(good, sig="%%%")), "bad_signature", "does not verify"),
        ("untrusted", _payload(_resign(good, other)), "untrusted_key", "not in commands.trusted_keys"),
        ("other device", _payload(_resign(dict(good, device="dev-2"))), "wrong_device", "addressed to device 'dev-2'"),
        ("topic", _payload(_resign(dict(good, name="resend"))), "wrong_topic", "differs from the topic"),
        ("not json", b"{nope", "malformed", "not JSON"),
        ("array", b"[1, 2]", "malformed", "expected a JSON object, got list"),
        (
            "no nonce",
            _payload(_resign({k: v for k, v in good.items() if k != "nonce"})),
            "malformed",
            "command: nonce: required key is missing",
        ),
        ("short nonce", _payload(_resign(dict(good, nonce="abc"))), "malformed", "nonce: expected 16-128 random"),
        (
            "naive time",
            _payload(_resign(dict(good, expires_at="2025-03-01T12:01:00"))),
            "malformed",
            "expires_at: expected an ISO 8601 time with a zone",
        ),
        (
            "too long",
            _payload(_resign(dict(good, expires_at="2025-04-01T12:00:00Z"))),
            "malformed",
            f"more than {MAX_TTL_S} s",
        ),
        (
            "backwards",
            _payload(_resign(dict(good, expires_at="2025-03-01T11:00:00Z"))),
            "malformed",
            "expires_at is not after issued_at",
        ),
        ("oversized", b" " * 5000, "oversized", "5000 bytes, more than commands.max_bytes"),
    ]


@pytest.mark.parametrize(("case", "payload", "reason", "message"), _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_verify_command__refuses(case: str, payload: bytes, reason: str, message: str) -> None:
    with pytest.raises(CommandRefused, match=message) as info:
        _check(payload)
    assert info.value.reason == reason, case


def test_verify_command__refuses_after_expiry() -> None:
    msg = sign_command(CENTRAL, device="dev-1", name="status", args={}, ttl_s=60, now=NOW)
    _check(_payload(msg), now=NOW + timedelta(seconds=59.9))
    with pytest.raises(CommandRefused, match=r"expired at 2025-03-01T12:01:00\.000Z") as info:
        _check(_payload(msg), now=NOW + timedelta(seconds=60))
    assert info.value.reason == "expired"


def test_verify_command__refuses_when_no_key_is_trusted() -> None:
    msg = sign_command(CENTRAL, device="dev-1", name="status", args={}, ttl_s=60, now=NOW)
    with pytest.raises(CommandRefused, match="trusted_keys is empty"):
        verify_command(_payload(msg), topic_name="status", device="dev-1", trusted={}, now=NOW, max_bytes=4096)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_verify_command__no_byte_string_crashes(data: bytes) -> None:
    with pytest.raises(CommandRefused):
        _check(data)


@settings(max_examples=150, deadline=None)
@given(
    field=st.sampled_from(["v", "device", "name", "nonce", "issued_at", "expires_at", "args", "key"]),
    value=st.one_of(
        st.integers(), st.text(max_size=20), st.none(), st.dictionaries(st.text(max_size=5), st.integers())
    ),
)
def test_verify_command__any_changed_field_breaks_the_signature(field: str, value: Any) -> None:
    msg = sign_command(CENTRAL, device="dev-1", name="status", args={}, ttl_s=60, now=NOW)
    if msg[field] == value:
        return
    with pytest.raises(CommandRefused) as info:
        _check(_payload(dict(msg, **{field: value})))
    assert info.value.reason in ("bad_signature", "untrusted_key", "malformed")


def test_sign_command__refuses_a_ttl_beyond_the_limit() -> None:
    with pytest.raises(ValueError, match="ttl_s: expected seconds in"):
        sign_command(CENTRAL, device="dev-1", name="status", args={}, ttl_s=MAX_TTL_S + 1)


def test_nonce_store__refuses_a_replay_across_reopen_and_prunes_old(tmp_path: Path) -> None:
    db = tmp_path / "commands.db"
    store = NonceStore(db)
    exp = datetime.now(UTC) + timedelta(minutes=5)
    assert store.claim("k1", "n" * 16, exp, "status")
    assert not store.claim("k1", "n" * 16, exp, "status")
    assert store.claim("k2", "n" * 16, exp, "status")  # nonces are per central key
    store.claim("k1", "old" * 6, datetime.now(UTC) - timedelta(days=3), "status")
    store.close()
    store = NonceStore(db)
    assert not store.claim("k1", "n" * 16, exp, "status")
    assert store.prune(datetime.now(UTC)) == 1
    assert store.count() == 2
    store.close()


def test_nonce_store__a_damaged_file_is_moved_aside_and_commands_issued_before_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "commands.db"
    store = NonceStore(db, now=NOW)
    assert store.floor == NOW and store.claim("k1", "n" * 16, NOW + timedelta(minutes=5), "status", now=NOW)
    store.close()
    db.write_bytes(b"not a database " * 400)  # its nonces are gone
    mended = NOW + timedelta(minutes=1)
    store = NonceStore(db, now=mended)
    assert store.floor == mended and store.count() == 0
    assert store.claim("k1", "m" * 16, mended + timedelta(minutes=5), "status", now=mended)
    store.close()
    [moved] = [p for p in tmp_path.glob("commands.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert moved.read_bytes().startswith(b"not a database")
    [msg] = [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"]
    assert moved.name in msg and "Commands issued before 2025-03-01T12:01:00.000Z are refused" in msg
    store = NonceStore(db, now=NOW + timedelta(days=1))  # the floor stays across restarts
    assert store.floor == mended and not store.claim("k1", "m" * 16, mended + timedelta(minutes=5), "status")
    store.close()


CONFIG_TEXT = """\
# edge-agent test config
profile = "sensors"
state_dir = "state"

[device]
id = "dev-1"
site = "site-a"

[mqtt]
url = "@URL@"
backoff_min_s = 0.2
backoff_max_s = 1.0

[health]
# keep this comment
interval_s = 0

[checkpoint]
interval_s = 0

[commands]
trusted_keys = ["central.pub.pem"]
"""


def _patched(text: str, changes: dict[str, Any]) -> tuple[str, Any]:
    return patch_text(text, changes, Path("c.toml"), locked=RESTART_ONLY_KEYS)


def test_patch_text__keeps_comments_and_validates() -> None:
    text = CONFIG_TEXT.replace("@URL@", "mqtt://127.0.0.1:1883")
    new, cfg = _patched(text, {"health.interval_s": 30, "outbox.max_mb": 64})
    assert "# keep this comment" in new
    assert cfg.health.interval_s == 30 and cfg.outbox.max_mb == 64
    new, cfg = _patched(new, {"health.interval_s": None})
    assert cfg.health.interval_s == 60  # removed: back to the default
    with pytest.raises(ConfigError, match=r"c.toml: health.interval_s: expected a number of seconds >= 0, got -1"):
        _patched(text, {"health.interval_s": -1})
    with pytest.raises(ConfigError, match=r"device\.id: changes only on the device"):
        _patched(text, {"device.id": "other"})


# ---------------------------------------------------------------- a running agent on a real broker


class PortService:
    """The lightest real pipeline: opens the GPS serial port the config names (if any), emits nothing.

    It stands in for the profile's pipeline so that a config the pipeline cannot start with
    (a port that is not there) makes the reload fail for real.
    """

    name = "port-pipeline"

    def __init__(self) -> None:
        self.ser: Any = None
        self.port: str | None = None

    def start(self, ctx: ServiceContext) -> None:
        gps = ctx.config.telematics.gps
        if gps is not None:
            self.ser = serial.serial_for_url(gps.port, timeout=0.1)  # raises SerialException (an OSError)
            self.port = gps.port

    def stop(self) -> None:
        if self.ser is not None:
            self.ser.close()
            self.ser = None

    def heartbeat(self) -> float:
        return time.monotonic()

    def status(self) -> dict[str, Any]:
        return {"port": self.port}


@dataclass
class Rig:
    agent: daemon.Agent
    cfg_path: Path
    broker: Broker
    central: Ed25519PrivateKey = field(default_factory=lambda: CENTRAL)

    @property
    def base(self) -> str:
        return topic_base(self.agent.cfg)

    def send(self, msg: dict[str, Any] | bytes, name: str | None = None) -> None:
        name = name or (msg["name"] if isinstance(msg, dict) else "status")
        data = msg if isinstance(msg, bytes) else _payload(msg)
        publish(self.broker, f"{self.base}/cmd/{name}", [data], client_id=f"central-{time.monotonic_ns()}")

    def signed(self, name: str, args: dict[str, Any] | None = None, ttl_s: float = 60) -> dict[str, Any]:
        return sign_command(self.central, device=self.agent.cfg.device.id, name=name, args=args or {}, ttl_s=ttl_s)

    def wait_outcomes(self, n: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        if not wait_until(lambda: len(self.agent.commands.outcomes) >= n, timeout_s):
            raise TimeoutError(f"expected {n} command outcome(s), got {self.agent.commands.outcomes}")
        assert self.agent.writer is not None
        self.agent.writer.flush(5)
        return list(self.agent.commands.outcomes)

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        ob = Outbox(self.agent.cfg.db_path, readonly=True)
        try:
            recs = [parse_line(d) for d in ob.export()]
        finally:
            ob.close()
        return [r for r in recs if kind is None or r["kind"] == kind]

    def wait_connected(self) -> None:
        assert self.agent.sync is not None
        assert self.agent.sync.connected.wait(10), self.agent.sync.last_error
        # Commands sent before the SUBACK of a first connection have no session to wait in.
        assert self.agent.sync.subscribed.wait(10), "no SUBACK for the command subscription"


def start_agent(tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch, profile: str = "sensors") -> Rig:
    """The agent's spine as `Agent.run` builds it, in-process, with PortService as its pipeline."""
    monkeypatch.setattr(daemon, "make_service", lambda _cfg: PortService())
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(CONFIG_TEXT.replace("@URL@", broker.url).replace('"sensors"', f'"{profile}"'))
    (tmp_path / "central.pub.pem").write_bytes(public_pem(CENTRAL.public_key()))
    cfg = load_config(cfg_path)
    key = load_key(cfg.key_path) if cfg.key_path.exists() else generate_key(cfg.key_path)  # a restart keeps it
    agent = daemon.Agent(cfg, config_path=cfg_path)
    agent.outbox, _ = Outbox.open_checked(cfg.db_path)
    agent.sync = MqttSync(cfg, cfg.db_path, on_command=agent._on_command)
    agent.writer = ChainWriter(
        agent.outbox,
        device=cfg.device.id,
        key=key,
        clock=agent.clock,
        max_bytes=10 * 1024 * 1024,
        on_commit=agent.sync.notify,
    )
    agent.writer.start()
    agent._setup_commands(key)
    agent.sync.start()
    agent.service = daemon.make_service(cfg)
    agent.ctx = ServiceContext(
        config=cfg, emit=agent.writer.emit, clock=agent.clock, state_dir=cfg.state_dir, stop=agent.stop_event
    )
    agent.service.start(agent.ctx)
    rig = Rig(agent, cfg_path, broker)
    rig.wait_connected()
    return rig


def stop_agent(rig: Rig) -> None:
    rig.agent._shutdown()
    rig.agent.commands.stop()


@pytest.fixture
def rig(tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    r = start_agent(tmp_path, broker, monkeypatch)
    try:
        yield r
    finally:
        stop_agent(r)


def _depth(rig: Rig) -> int:
    with Outbox(rig.agent.cfg.db_path, readonly=True) as ob:
        return ob.stats().depth


def _events(rig: Rig, event: str) -> list[dict[str, Any]]:
    return [r["body"] for r in rig.records("event") if r["body"].get("event") == event]


def test_commands__status_runs_once_and_a_replay_is_refused_across_restart(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = start_agent(tmp_path, broker, monkeypatch)
    msg = rig.signed("status")
    try:
        rig.send(msg)
        (done,) = rig.wait_outcomes(1)
        assert done["event"] == "command_done" and done["command"] == "status" and done["nonce"] == msg["nonce"]
        assert done["result"]["health_emitted"] is True
        assert len(rig.records("health")) == 1
        rig.send(msg)
        replay = rig.wait_outcomes(2)[1]
        assert (replay["event"], replay["reason"]) == ("command_refused", "replayed")
    finally:
        stop_agent(rig)
    # A new agent process on the same state dir: the nonce is remembered.
    rig2 = Rig(rig.agent, rig.cfg_path, broker)
    monkeypatch.setattr(daemon, "make_service", lambda _cfg: PortService())
    cfg = load_config(rig.cfg_path)
    agent = daemon.Agent(cfg, config_path=rig.cfg_path)
    agent.outbox, _ = Outbox.open_checked(cfg.db_path)
    key = load_key(cfg.key_path)
    agent.writer = ChainWriter(agent.outbox, device="dev-1", key=key, clock=agent.clock, max_bytes=1 << 24)
    agent.writer.start()
    agent._setup_commands(key)
    agent.ctx = ServiceContext(
        config=cfg, emit=agent.writer.emit, clock=agent.clock, state_dir=cfg.state_dir, stop=agent.stop_event
    )
    rig2.agent = agent
    try:
        agent.commands.enqueue(f"{rig.base}/cmd/status", _payload(msg))
        (again,) = rig2.wait_outcomes(1)
        assert (again["event"], again["reason"]) == ("command_refused", "replayed")
        assert len(rig2.records("health")) == 1  # not run a second time
    finally:
        agent._shutdown()
        agent.commands.stop()


@pytest.mark.parametrize("loss", ["damaged", "deleted", "emptied"])
def test_commands__after_the_replay_guard_was_lost_a_command_issued_before_is_refused(
    tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch, loss: str
) -> None:
    """The nonces of commands.db are lost with the file, whether it was damaged, deleted or emptied: a
    command captured before could be replayed, so every command issued before the guard was started afresh
    is refused; one signed after it runs."""
    rig = start_agent(tmp_path, broker, monkeypatch)
    msg = rig.signed("status", ttl_s=3600)
    try:
        rig.send(msg)
        (done,) = rig.wait_outcomes(1)
        assert done["event"] == "command_done"
    finally:
        stop_agent(rig)
    state = load_config(rig.cfg_path).state_dir
    for suffix in ("-wal", "-shm"):
        (state / f"commands.db{suffix}").unlink(missing_ok=True)
    if loss == "deleted":
        (state / "commands.db").unlink()
    else:
        (state / "commands.db").write_bytes(b"\x00" * 8192 if loss == "damaged" else b"")
    rig2 = start_agent(tmp_path, broker, monkeypatch)
    try:
        rig2.send(msg)  # the replay, within its lifetime
        (refused,) = rig2.wait_outcomes(1)
        assert (refused["event"], refused["reason"]) == ("command_refused", "replayed")
        assert "before the replay guard commands.db was started at" in refused["detail"]
        assert len(rig2.records("health")) == 1, "not run a second time"
        fresh = rig2.signed("status")
        rig2.send(fresh)
        again = rig2.wait_outcomes(2)[1]
        assert again["event"] == "command_done" and again["nonce"] == fresh["nonce"]
        assert bool(list(state.glob("commands.db.corrupt-*"))) == (loss == "damaged")
    finally:
        stop_agent(rig2)


def test_commands__refused_messages_change_nothing_and_are_recorded(rig: Rig) -> None:
    other = Ed25519PrivateKey.generate()
    before_cfg = rig.cfg_path.read_bytes()
    before_key = rig.agent.cfg.key_path.read_bytes()
    patch = rig.signed("patch_config", {"set": {"health.interval_s": 5}})
    forged = sign_command(other, device="dev-1", name="rotate_key", args={}, ttl_s=60)
    expired = sign_command(
        CENTRAL, device="dev-1", name="rotate_key", args={}, ttl_s=60, now=datetime.now(UTC) - timedelta(minutes=5)
    )
    elsewhere = sign_command(CENTRAL, device="dev-2", name="rotate_key", args={}, ttl_s=60)
    rig.send({k: v for k, v in patch.items() if k != "sig"}, "patch_config")
    rig.send(dict(patch, args={"set": {"health.interval_s": 1}}), "patch_config")
    rig.send(forged)
    rig.send(expired)
    rig.send(elsewhere)
    rig.send(b"\xff\xfe garbage", "rotate_key")
    rig.send(b"{" + b" " * 2_000_000 + b"}", "status")
    rig.send(rig.signed("reboot"), "reboot")
    outcomes = rig.wait_outcomes(8)
    reasons = [o["reason"] for o in outcomes]
    assert reasons == [
        "unsigned",
        "bad_signature",
        "untrusted_key",
        "expired",
        "wrong_device",
        "malformed",
        "oversized",
        "unknown_command",
    ]
    assert rig.cfg_path.read_bytes() == before_cfg
    assert rig.agent.cfg.key_path.read_bytes() == before_key
    recorded = _events(rig, "command_refused")
    assert [e["reason"] for e in recorded] == reasons
    assert "2000002 bytes" in recorded[6]["detail"]
    assert rig.records("key_rotation") == []


def test_commands__resend_republishes_a_delivered_range_and_reports_pruned(rig: Rig) -> None:
    assert rig.agent.writer is not None
    with Subscriber(rig.broker, f"{rig.base}/rec/#", client_id="central-rec") as sub:
        for i in range(5):
            rig.agent.writer.emit("event", {"event": "test", "i": i})
        rig.agent.writer.flush(5)
        first = sub.wait_for(5)
        seqs = sorted(parse_line(m.payload)["seq"] for m in first)
        assert seqs == [1, 2, 3, 4, 5]
        assert wait_until(lambda: _depth(rig) == 0, 5)
        rig.send(rig.signed("resend", {"first_seq": 2, "last_seq": 4}))
        (done,) = rig.wait_outcomes(1)
        assert done["event"] == "command_done"
        assert done["result"] == {
            "first_seq": 2,
            "last_seq": 4,
            "requeued": 3,
            "already_queued": 0,
            "missing": [],
            "head_seq": 5,
        }
        got = sub.wait_for(5 + 3 + 1, timeout_s=10)  # the three again, and the outcome event
        again = [parse_line(m.payload) for m in got[5:]]
        assert sorted(r["seq"] for r in again if r["kind"] == "event" and r["body"].get("event") == "test") == [2, 3, 4]
        # Everything delivered so far is pruned: a resend reports it missing, signed.
        assert wait_until(lambda: _depth(rig) == 0, 5)
        ob = Outbox(rig.agent.cfg.db_path)
        pruned = ob.prune_delivered(0)
        ob.close()
        assert pruned >= 6
        rig.send(rig.signed("resend", {"first_seq": 1, "last_seq": 99}))
        done = rig.wait_outcomes(2)[1]
        assert done["result"]["missing"] == [[1, done["result"]["head_seq"]]]
        assert done["result"]["requeued"] == 0
        assert _events(rig, "command_done")[-1]["result"]["missing"] == done["result"]["missing"]


def test_commands__resend_with_reversed_range_is_refused(rig: Rig) -> None:
    rig.send(rig.signed("resend", {"first_seq": 9, "last_seq": 2}))
    (out,) = rig.wait_outcomes(1)
    assert (
        out["reason"] == "bad_args"
        and "resend: last_seq: expected a seq from first_seq to first_seq + 999,999, got 2" in out["detail"]
    )
    rig.send(rig.signed("resend", {"first_seq": "a", "last_seq": 2}))
    out = rig.wait_outcomes(2)[1]
    assert out["reason"] == "bad_args" and "resend: first_seq: expected a seq >= 1" in out["detail"]


def test_commands__patch_config_applies_and_reloads_the_pipeline(rig: Rig) -> None:
    master, slave = os.openpty()
    try:
        port = os.ttyname(slave)
        rig.send(rig.signed("patch_config", {"set": {"telematics.gps": {"kind": "nmea", "port": port}}}))
        (out,) = rig.wait_outcomes(1)
        assert out["event"] == "command_done", out
        assert out["result"] == {"applied": ["telematics.gps"], "rolled_back": False}
        assert load_config(rig.cfg_path).telematics.gps is not None
        assert "# keep this comment" in rig.cfg_path.read_text()
        assert rig.agent.cfg.telematics.gps is not None and rig.agent.cfg.telematics.gps.port == port
        assert rig.agent.service is not None and rig.agent.service.status() == {"port": port}
    finally:
        os.close(master)
        os.close(slave)


def test_commands__patch_config_rolls_back_when_the_pipeline_cannot_start(rig: Rig, tmp_path: Path) -> None:
    before = rig.cfg_path.read_bytes()
    missing = str(tmp_path / "no-such-tty")
    rig.send(rig.signed("patch_config", {"set": {"telematics.gps": {"kind": "nmea", "port": missing}}}))
    (out,) = rig.wait_outcomes(1)
    assert out["event"] == "command_failed"
    assert "previous config restored" in out["error"] and "no-such-tty" in out["error"]
    assert rig.cfg_path.read_bytes() == before
    assert rig.agent.cfg.telematics.gps is None
    assert rig.agent.service is not None and rig.agent.service.status() == {"port": None}
    # An invalid value never reaches the file.
    rig.send(rig.signed("patch_config", {"set": {"mqtt.keepalive_s": 1}}))
    out = rig.wait_outcomes(2)[1]
    assert out["reason"] == "bad_args" and "mqtt.keepalive_s: expected an integer 5-3600, got 1" in out["detail"]
    assert rig.cfg_path.read_bytes() == before
    assert [e["body"]["event"] for e in rig.records("event")][-2:] == ["command_failed", "command_refused"]


def test_commands__patch_config_may_not_cut_the_device_off(rig: Rig, tmp_path: Path) -> None:
    """Keys that do not load, an empty key list or a broker that does not answer: refused, file untouched."""
    before = rig.cfg_path.read_bytes()
    fifo = tmp_path / "keys.fifo"
    os.mkfifo(fifo)
    closed_port = rig.broker.port + 1 if rig.broker.port < 65535 else rig.broker.port - 1
    cases = [
        ({"commands.trusted_keys": []}, "a remote patch may not empty it"),
        ({"commands.trusted_keys": [str(tmp_path / "missing.pem")]}, "cannot read public key file"),
        ({"commands.trusted_keys": ["/dev/zero"]}, "expected a PEM public key file"),
        ({"commands.trusted_keys": [str(fifo)]}, "expected a PEM public key file"),
        ({"mqtt.url": f"mqtt://127.0.0.1:{closed_port}"}, "new MQTT settings do not connect"),
    ]
    for n, (change, message) in enumerate(cases, 1):
        rig.send(rig.signed("patch_config", {"set": change}))
        out = rig.wait_outcomes(n)[-1]
        assert out["reason"] == "bad_args" and message in out["detail"], (change, out)
        assert rig.cfg_path.read_bytes() == before
    # Still reachable: a status command is obeyed.
    rig.send(rig.signed("status", {}))
    assert rig.wait_outcomes(len(cases) + 1)[-1]["event"] == "command_done"


def test_commands__replace_manifest_is_refused_off_the_bench(rig: Rig) -> None:
    data = base64.b64encode(b"order_no,sku,quantity\nA1,S1,1\n").decode()
    rig.send(rig.signed("replace_manifest", {"data_b64": data}))
    (out,) = rig.wait_outcomes(1)
    assert out["reason"] == "unsupported" and "not a bench (sensors profile)" in out["detail"]
    assert not (rig.agent.cfg.state_dir / "manifest.csv").exists()


def test_commands__replace_manifest_on_a_bench(tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("edge_agent.pipelines.bench.manifest")
    rig = start_agent(tmp_path, broker, monkeypatch, profile="bench")
    try:
        csv = b"order_no,sku,quantity\nA1,S1,1\nA2,S2,3\n"
        rig.send(rig.signed("replace_manifest", {"data_b64": base64.b64encode(csv).decode()}))
        rig.send(rig.signed("replace_manifest", {"data_b64": base64.b64encode(b"order_no,sku\nA1\n").decode()}))
        ok, bad = rig.wait_outcomes(2)
        assert ok["event"] == "command_done" and ok["result"]["orders"] == 2
        assert (rig.agent.cfg.state_dir / "manifest.csv").read_bytes() == csv
        assert bad["reason"] == "bad_args"
        assert (rig.agent.cfg.state_dir / "manifest.csv").read_bytes() == csv  # the old one stays
    finally:
        stop_agent(rig)


def test_commands__queue_is_bounded_and_enqueue_never_blocks(rig: Rig) -> None:
    from edge_agent.spine.remote.processor import QUEUE_MAX, CommandProcessor

    assert rig.agent.writer is not None
    idle = CommandProcessor(rig.agent, start=False)  # nobody drains its queue
    t0 = time.monotonic()
    for _ in range(QUEUE_MAX + 10):
        idle.enqueue(f"{rig.base}/cmd/status", b"{}")
    assert time.monotonic() - t0 < 0.5
    assert idle.dropped == 10


# ---------------------------------------------------------------- time an attacker controls (issue 9, defect 4)


def test_clock__gps_never_overrides_a_synced_clock() -> None:
    from edge_agent.spine.clock import Clock

    synced = Clock(synced=lambda: True)
    synced.observe_gps(datetime.now(UTC) + timedelta(hours=2))  # a spoofed receiver
    t, state = synced.now()
    assert state == "ntp" and abs((t - datetime.now(UTC)).total_seconds()) < 60
    assert abs((synced.security_now() - datetime.now(UTC)).total_seconds()) < 60
    # Without NTP, GPS is the best time there is.
    unsynced = Clock(synced=lambda: False)
    unsynced.observe_gps(datetime.now(UTC) + timedelta(hours=2))
    t, state = unsynced.now()
    assert state == "gps" and (t - datetime.now(UTC)).total_seconds() > 3600


def test_verify_command__refuses_a_command_issued_in_the_future() -> None:
    from edge_agent.spine.remote.message import MAX_FUTURE_SKEW_S

    ahead = sign_command(
        CENTRAL, device="dev-1", name="status", args={}, ttl_s=3600, now=NOW + timedelta(seconds=MAX_FUTURE_SKEW_S + 60)
    )
    with pytest.raises(CommandRefused, match="after device time") as info:
        _check(_payload(ahead))
    assert info.value.reason == "from_future"
    near = sign_command(CENTRAL, device="dev-1", name="status", args={}, ttl_s=3600, now=NOW + timedelta(seconds=30))
    assert _check(_payload(near)).name == "status"  # small skew between clocks is fine


def test_nonce_store__prunes_on_the_expiry_clock_only(tmp_path: Path) -> None:
    store = NonceStore(tmp_path / "commands.db")
    device_now = datetime(2030, 1, 1, tzinfo=UTC)  # the clock that judges expiry, not time.time()
    store.claim("k1", "n" * 16, device_now + timedelta(minutes=10), "status", now=device_now)
    assert store.prune(device_now) == 0
    assert store.prune(device_now + timedelta(hours=1)) == 0  # within the grace after expiry
    assert not store.claim("k1", "n" * 16, device_now + timedelta(minutes=10), "status", now=device_now)
    assert store.prune(device_now + timedelta(days=2)) == 1
    store.close()


def test_commands__spoofed_gps_does_not_revive_an_expired_command(rig: Rig) -> None:
    from edge_agent.spine.clock import Clock

    rig.agent.clock = Clock(synced=lambda: True)
    rig.agent.clock.observe_gps(datetime.now(UTC) - timedelta(hours=1))  # GPS says it is an hour ago
    expired = sign_command(
        CENTRAL, device="dev-1", name="status", args={}, ttl_s=60, now=datetime.now(UTC) - timedelta(minutes=5)
    )
    rig.send(expired)
    (out,) = rig.wait_outcomes(1)
    assert out["reason"] == "expired", out


def test_commands__a_clock_set_back_does_not_revive_a_command_whose_nonce_was_pruned(rig: Rig) -> None:
    """Unsynced device, GPS time an attacker controls: the guard prunes a spent nonce while the clock is ahead,
    then the clock is set back into the command's window, and the same command was obeyed a second time."""
    from edge_agent.spine.clock import Clock

    real = datetime.now(UTC)
    rig.agent.clock = Clock(synced=lambda: False)
    rig.agent.clock.observe_gps(real)
    msg = rig.signed("status", ttl_s=600)
    rig.send(msg)
    first = rig.wait_outcomes(1)[-1]
    assert first["event"] == "command_done", first
    rig.agent.clock.observe_gps(real + timedelta(days=2))  # ahead: the spent nonce is pruned
    assert rig.agent.commands.nonces.prune(rig.agent.security_now()) == 1
    rig.agent.clock.observe_gps(real + timedelta(minutes=1))  # back inside the command's window
    rig.send(msg)
    out = rig.wait_outcomes(2)[-1]
    assert (out["event"], out.get("reason")) == ("command_refused", "replayed"), out
    assert "no longer keeps the nonces" in out["detail"]
    # Commands that expire after the pruned ones are judged as before (their nonces were never forgotten).
    rig.send(rig.signed("status", ttl_s=3 * 24 * 3600))
    last = rig.wait_outcomes(3)[-1]
    assert last["event"] == "command_done", last


# ---------------------------------------------------------------- hostile payloads (issue 9, defect 7)


def test_commands__deep_nesting_is_malformed_counted_and_rate_limited(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    from edge_agent.spine.remote.processor import REFUSAL_EVENTS_PER_MIN

    deep = b"[" * 50_000 + b"]" * 50_000
    n = REFUSAL_EVENTS_PER_MIN + 5
    for _ in range(n):
        rig.send(deep, "status")
    outcomes = rig.wait_outcomes(n)
    assert {o["reason"] for o in outcomes} == {"malformed"}
    assert "nested too deeply" in outcomes[0]["detail"]
    assert len(_events(rig, "command_refused")) == REFUSAL_EVENTS_PER_MIN  # the rest are counted, not recorded
    assert "Traceback" not in caplog.text
    assert len(caplog.text) < 200 * n  # one short line per recorded refusal, not a traceback each


def test_mqtt_sync__asks_the_broker_for_a_maximum_packet_size(rig: Rig) -> None:
    from edge_agent.spine.sync import max_packet_bytes

    limit = max_packet_bytes(rig.agent.cfg.commands.max_bytes)
    before = len(rig.agent.commands.outcomes)
    # Far beyond the limit: the broker drops it for this client, so the device never buffers it.
    rig.send(b"x" * (limit + 100_000), "status")
    rig.send(rig.signed("status", {}))
    out = rig.wait_outcomes(before + 1)[before:]
    assert [o["event"] for o in out] == ["command_done"], out


def test_commands__a_trusted_key_that_does_not_load_is_logged_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`config check` passes a trusted key file that is not there, and the agent said nothing until a command
    came and was refused: now the journal says it when the agent starts."""
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(CONFIG_TEXT.replace("@URL@", "mqtt://127.0.0.1:9"))  # central.pub.pem never written
    agent = daemon.Agent(load_config(cfg_path), config_path=cfg_path)
    agent._setup_commands()
    try:
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert any(m.startswith("commands.trusted_keys: ") and "central.pub.pem" in m for m in errors), errors
        assert "remote commands will be refused" in caplog.text
    finally:
        agent.commands.stop()
