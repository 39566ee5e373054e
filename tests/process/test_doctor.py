"""`edge-agent doctor` on healthy and broken setups: real broker, pty twins of real devices, a fake root for systemd."""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.cli import main as cli
from edge_agent.cli.doctor import (
    FAIL,
    OK,
    WARN,
    Check,
    ClockFacts,
    check_client_cert,
    check_clock_sync,
    check_expected_returns,
    check_ocr_models,
    run_checks,
)
from edge_agent.drivers.elm327.twin import Elm327Twin
from edge_agent.drivers.nmea.twin import NmeaTwin
from edge_agent.drivers.scale.twin import ScaleTwin
from edge_agent.settings import load_config
from edge_agent.spine.clock import Clock
from edge_agent.spine.keys import generate_key
from edge_agent.spine.outbox import Outbox
from tests.broker import TEST_USERS, Broker

DATA = Path(__file__).parents[1] / "data"
NMEA_LOG = DATA / "nmea" / "mt3339.log"  # Adafruit Ultimate GPS HAT (MT3339) on a Raspberry Pi, gpsd test log
LISTEN_S = 1.5
USER = pwd.getpwuid(os.geteuid()).pw_name


def _unit(root: Path, *, watchdog: bool = True, enabled: bool = True) -> None:
    d = root / "etc/systemd/system"
    d.mkdir(parents=True, exist_ok=True)
    lines = ["[Service]", "Type=notify", f"User={USER}", "ExecStart=/opt/edge-agent/venv/bin/edge-agent run"]
    if watchdog:
        lines.append("WatchdogSec=30")
    (d / "edge-agent.service").write_text("\n".join(lines) + "\n")
    if enabled:
        (d / "multi-user.target.wants").mkdir(exist_ok=True)
        (d / "multi-user.target.wants" / "edge-agent.service").symlink_to(d / "edge-agent.service")


def _config(
    tmp_path: Path, broker: Broker, *, gps: str, fuel: str, weight: str, password: str, extra: str = ""
) -> Path:
    pw = tmp_path / "mqtt.password"
    fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, password.encode() + b"\n")
    os.close(fd)
    path = tmp_path / "config.toml"
    path.write_text(f"""\
profile = "truck"
state_dir = "state"
[device]
id = "truck-7"
site = "depot-1"
[mqtt]
url = "{broker.url}"
username = "edge-device"
password_file = "mqtt.password"
[outbox]
max_mb = 64
[telematics.gps]
kind = "nmea"
port = "{gps}"
[telematics.fuel]
kind = "elm327"
port = "{fuel}"
[telematics.weight]
kind = "scale"
port = "{weight}"
{extra}
""")
    cfg = load_config(path)
    generate_key(cfg.key_path)
    return path


class _ShiftedClock(Clock):
    def __init__(self, shift: timedelta) -> None:
        super().__init__()
        self.shift = shift

    def now(self) -> tuple[datetime, str]:
        t, state = super().now()
        return t + self.shift, state


def _records(path: Path, items: list[tuple[str, dict[str, Any]]], clock: Clock | None = None) -> None:
    from edge_agent.spine.keys import load_key

    cfg = load_config(path)
    ob, _ = Outbox.open_checked(cfg.db_path)
    try:
        ob.append(items, device=cfg.device.id, key=load_key(cfg.key_path), clock=clock or Clock(), max_bytes=1 << 30)
    finally:
        ob.close()


@pytest.fixture
def twins(tmp_path: Path) -> Iterator[tuple[NmeaTwin, Elm327Twin, ScaleTwin]]:
    gps = NmeaTwin(tmp_path / "gps", log=NMEA_LOG, loop=True, lines_per_s=100).start()
    elm = Elm327Twin(tmp_path / "obd").start()
    scale = ScaleTwin(tmp_path / "scale", interval_s=0.1).start()
    try:
        yield gps, elm, scale
    finally:
        for t in (gps, elm, scale):
            t.stop()


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_doctor__healthy_truck_passes_every_check(
    tmp_path: Path, password_broker: Broker, twins: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    gps, elm, scale = twins
    root = tmp_path / "root"
    _unit(root)
    cfg_path = _config(
        tmp_path, password_broker, gps=gps.path, fuel=elm.path, weight=scale.path, password=TEST_USERS["edge-device"]
    )
    _records(cfg_path, [("event", {"event": "agent_started"}), ("health", {"clock": {"gps_skew_s": 0.4}})])
    checks = _by_name(run_checks(cfg_path, root=root, listen_s=LISTEN_S))
    not_ok = {n: c.line() for n, c in checks.items() if c.status != OK and n not in ("clock sync", "command keys")}
    assert not_ok == {}
    assert set(checks) >= {
        "config",
        "device key",
        "mqtt password file",
        "clock vs records",
        "gps time",
        "disk",
        "outbox",
        "broker reachable",
        "broker login",
        "telematics.gps (nmea)",
        "telematics.fuel (elm327)",
        "telematics.weight (scale)",
        "systemd unit",
        "systemd enabled",
        "systemd watchdog",
    }
    assert "NMEA sentence(s) with good checksums" in checks["telematics.gps (nmea)"].message
    assert "GGA" in checks["telematics.gps (nmea)"].message
    assert "ELM327 v1.5" in checks["telematics.fuel (elm327)"].message
    assert "scale replying" in checks["telematics.weight (scale)"].message
    assert "head seq 2, 2 undelivered" in checks["outbox"].message
    assert checks["command keys"].status == WARN  # none trusted: said, not fatal
    # The CLI: exit 0 (warnings do not fail), the same checks as JSON.
    rc = cli.main(["doctor", "-c", str(cfg_path), "--root", str(root), "--listen-s", str(LISTEN_S), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert {d["name"] for d in data} == set(checks)
    assert all(set(d) == {"name", "status", "message", "remedy"} for d in data)


def test_doctor__broken_truck_fails_each_check_with_a_remedy(
    tmp_path: Path, password_broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    _unit(root, watchdog=False, enabled=False)
    elm = Elm327Twin(tmp_path / "obd").start()
    elm.mute = True  # adapter powered but answering nothing
    noise = NmeaTwin(
        tmp_path / "gps", log=DATA / "nmea" / "firefly-II.log", loop=True, lines_per_s=100, garbage_every=1
    ).start()
    try:
        cfg_path = _config(
            tmp_path,
            password_broker,
            gps=str(tmp_path / "no-gps"),
            fuel=elm.path,
            weight=noise.path,
            password="wrong password",  # noqa: S106 - a test-only wrong password
            extra="",
        )
        cfg = load_config(cfg_path)
        # A record from the future: the clock went backwards since.
        _records(cfg_path, [("event", {"event": "x"})], clock=_ShiftedClock(timedelta(hours=2)))
        cfg.key_path.chmod(0o644)
        checks = _by_name(run_checks(cfg_path, root=root, listen_s=LISTEN_S))
        rc = cli.main(["doctor", "-c", str(cfg_path), "--root", str(root), "--listen-s", "0.5"])
        out = capsys.readouterr().out
    finally:
        elm.stop()
        noise.stop()
    expect = {
        "device key": ("mode 0644 (others can read it)", f"chmod 600 {cfg.key_path}"),
        "clock vs records": ("before the last record's time", "set the clock"),
        "broker login": ("broker refused the login", "mqtt.username and mqtt.password_file"),
        "telematics.gps (nmea)": ("cannot open", "plug the GPS in"),
        "telematics.fuel (elm327)": ("no answer to ATZ/ATI", "ignition on"),
        "telematics.weight (scale)": ("garbled frame(s), no good reading", "baud rate, parity"),
        "systemd enabled": ("will not start at boot", "systemctl enable --now edge-agent.service"),
        "systemd watchdog": ("WatchdogSec=unset", "WatchdogSec=30"),
    }
    for name, (message, remedy) in expect.items():
        assert checks[name].status == FAIL, checks[name].line()
        assert message in checks[name].message, checks[name].line()
        assert remedy in checks[name].remedy, checks[name].line()
    assert checks["broker reachable"].status == OK  # the network is fine, the password is not
    assert rc == 1
    assert f"fail device key: {cfg.key_path}: mode 0644" in out
    assert "       -> run: chmod 600" in out


def test_doctor__a_key_it_cannot_read_fails_its_check_and_the_rest_still_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A device key path that is a folder (or unreadable) stopped doctor with a traceback after its first line."""
    path = tmp_path / "config.toml"
    state = tmp_path / "state"
    path.write_text(
        f'profile = "sensors"\nstate_dir = "{state}"\n[device]\nid = "s1"\nsite = "s"\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:9"\npassword_file = "/nonexistent/broker.password"\nusername = "u"\n'
    )
    (state / "keys" / "device.key").mkdir(parents=True)  # mode 0755: its mode is not what is wrong
    rc = cli.main(["doctor", "-c", str(path), "--root", str(tmp_path), "--json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert rc == 1
    key = checks["device key"]
    assert key["status"] == FAIL and "expected a file, got a folder" in key["message"], key
    assert "chmod" not in key["remedy"] and "keys generate" in key["remedy"], key
    pw = checks["mqtt password file"]
    assert pw["status"] == FAIL and "broker password there, on one line" in pw["remedy"], pw
    assert {"disk", "outbox", "broker reachable"} <= set(checks)


def test_doctor__invalid_config_fails_first_and_says_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_text('profile = "van"\n[device]\nid = "a/b"\nsite = "s"\n')
    rc = cli.main(["doctor", "-c", str(path), "--root", str(tmp_path), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert data[0]["name"] == "config" and data[0]["status"] == FAIL
    assert f'{path}: profile: expected "bench", "truck" or "sensors", got "van"' in data[0]["message"]
    assert "device.id: expected 1-64 letters" in data[0]["message"]
    assert [d["name"] for d in data] == ["config", "systemd unit"]


def _sensors_config(tmp_path: Path, broker_url: str, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'profile = "sensors"\nstate_dir = "state"\n[device]\nid = "m1"\nsite = "w"\n'
        f'[mqtt]\nurl = "{broker_url}"\n{extra}'
    )
    generate_key(load_config(path).key_path)
    return path


def test_doctor__broker_down_and_outbox_damage(tmp_path: Path, broker: Broker) -> None:
    path = _sensors_config(tmp_path, broker.url, "[outbox]\nmax_mb = 100000000\n")
    _records(path, [("event", {"i": i}) for i in range(5)])
    cfg = load_config(path)
    with sqlite3.connect(cfg.db_path) as conn:  # someone edits a stored record
        data = json.loads(conn.execute("SELECT data FROM records WHERE seq = 3").fetchone()[0])
        data["prev"] = "f" * 64
        conn.execute("UPDATE records SET data = ? WHERE seq = 3", (json.dumps(data),))
    broker.stop()
    checks = _by_name(run_checks(path, root=tmp_path, listen_s=LISTEN_S))
    assert checks["outbox"].status == FAIL and "chain broken between seq 2 and 3" in checks["outbox"].message
    assert checks["broker reachable"].status == FAIL
    assert "Connection refused" in checks["broker reachable"].message
    assert "broker login" not in checks  # not tried without a TCP connection
    assert checks["disk"].status == FAIL and "lower outbox.max_mb" in checks["disk"].remedy
    assert checks["systemd unit"].status == FAIL and "install-service" in checks["systemd unit"].remedy
    cfg.db_path.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(str(cfg.db_path) + suffix).unlink(missing_ok=True)
    outbox = _by_name(run_checks(path, root=tmp_path, listen_s=LISTEN_S))["outbox"]
    assert outbox.status == FAIL and "failed its integrity check" in outbox.message
    assert "moves the damaged file aside" in outbox.remedy


def test_doctor__an_outbox_of_another_device_id_fails_with_the_remedy(tmp_path: Path) -> None:
    path = _sensors_config(tmp_path, "mqtt://127.0.0.1:1")
    _records(path, [("event", {"i": 1})])
    path.write_text(path.read_text().replace('id = "m1"', 'id = "m2"'))
    outbox = _by_name(run_checks(path, root=tmp_path, listen_s=LISTEN_S))["outbox"]
    assert outbox.status == FAIL, outbox
    assert "holds the chain of device 'm1' (up to seq 1), not of 'm2'" in outbox.message
    assert "the agent refuses to start on it" in outbox.remedy and "init --state-dir" in outbox.remedy


def test_doctor__tls_checks_with_the_right_and_a_wrong_ca(tmp_path: Path, mtls_broker: Broker) -> None:
    pki = mtls_broker.pki
    extra = f'ca_file = "{pki.ca_pem}"\ncert_file = "{pki.client_pem}"\nkey_file = "{pki.client_key}"\n'
    (tmp_path / "good").mkdir()
    good = _sensors_config(tmp_path / "good", mtls_broker.url, extra)
    checks = _by_name(run_checks(good, root=tmp_path, listen_s=LISTEN_S))
    assert checks["broker TLS"].status == OK and "handshake verified" in checks["broker TLS"].message
    assert checks["broker login"].status == OK
    # The harness issues certificates valid for one day: a warning, well before it is too late.
    assert checks["client certificate"].status == WARN
    assert "expires in 0 day(s)" in checks["client certificate"].message
    assert checks["mqtt key file"].status == OK
    (tmp_path / "bad").mkdir()
    bad = _sensors_config(tmp_path / "bad", mtls_broker.url, extra.replace(str(pki.ca_pem), str(pki.wrong_ca_pem)))
    tls = _by_name(run_checks(bad, root=tmp_path, listen_s=LISTEN_S))["broker TLS"]
    assert tls.status == FAIL and "not trusted" in tls.message and "mqtt.ca_file" in tls.remedy
    cfg = load_config(good)
    expired = check_client_cert(cfg, datetime.now(UTC) + timedelta(days=3))
    assert expired is not None and expired.status == FAIL and "expired on" in expired.message


def test_check_clock_sync__any_source_synchronised_is_enough() -> None:
    assert check_clock_sync(ClockFacts(True, None, False)).status == OK
    assert "chrony" in check_clock_sync(ClockFacts(False, True, None)).message
    unsynced = check_clock_sync(ClockFacts(False, False, False))
    assert unsynced.status == WARN and "timedatectl set-ntp true" in unsynced.remedy
    assert "no time service found" in check_clock_sync(ClockFacts(None, None, None)).message


def test_check_ocr_models__sha256_and_a_timed_run(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    path = tmp_path / "config.toml"
    path.write_text('profile = "bench"\nstate_dir = "state"\n[device]\nid = "b1"\nsite = "w"\n')
    cfg = load_config(path)
    checks = check_ocr_models(cfg)
    assert [c.name for c in checks] == ["ocr model det", "ocr model rec", "ocr model cls"]
    assert all(c.status == OK for c in checks), [c.line() for c in checks]
    assert all("sha256 matches; loads in" in c.message and " run in " in c.message for c in checks)
    # A manifest whose hash does not match the installed file.
    from edge_agent.resources import models_file

    manifest = json.loads(models_file("manifest.json").read_text())
    manifest["models"]["ppocrv6-small"]["det"]["sha256"] = "0" * 64
    del manifest["models"]["ppocrv6-small"]["cls"]
    manifest["models"]["ppocrv6-small"]["rec"] = {"file": "missing.onnx", "sha256": "1" * 64}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    cfg.bench.ocr.manifest = tmp_path / "manifest.json"
    det, rec = check_ocr_models(cfg)
    assert det.status == FAIL and "differs from the manifest's 000000000000" in det.message
    assert rec.status == FAIL and "missing.onnx: missing" in rec.message


def test_check_expected_returns__none_broken_old_and_central_s(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('profile = "bench"\nstate_dir = "state"\n[device]\nid = "b1"\nsite = "w"\n')
    cfg = load_config(path)
    now = datetime.now(UTC)
    none = check_expected_returns(cfg, now)
    assert none.status == WARN and "no manifest" in none.message and "bench.validation.manifest" in none.remedy
    # A configured file, relative to the config, with two orders (one on two lines).
    (tmp_path / "returns.csv").write_text(
        "order_no,sku,quantity,customer_id,order_date\n"
        "DD1001,SKU-A1,1,C100,2026-11-20\nDD1001,SKU-B2,2,C100,2026-11-20\nDD1002,SKU-A1,1,C200,2026-11-21\n"
    )
    cfg.bench.validation.manifest = Path("returns.csv")
    ok = check_expected_returns(cfg, now)
    assert ok.status == OK and ok.message.startswith(f"2 orders {tmp_path / 'returns.csv'}, updated "), ok.line()
    # Not updated for over a week: returns announced since are missing.
    week = (now - timedelta(days=8)).timestamp()
    os.utime(tmp_path / "returns.csv", (week, week))
    old = check_expected_returns(cfg, now)
    assert old.status == WARN and "updated 8.0 days ago" in old.message and "unknown orders" in old.remedy
    # A broken one says where and what, as the bench would refuse it.
    (tmp_path / "returns.csv").write_text("order_no,sku,quantity\nDD1001,SKU-A1,none\nDD1002,,1\nDD1003,X,0\n")
    bad = check_expected_returns(cfg, now)
    assert bad.status == FAIL and "returns.csv" in bad.message and "quantity" in bad.message, bad.line()
    assert bad.message.endswith("line 2: quantity: expected an integer >= 1, got 'none' (and 2 more bad rows)")
    assert "every slip to review" in bad.remedy and bad.remedy.startswith("fix the file (columns"), bad.line()
    # The first bad line, and how many in all: not capped at the 20 problems the manifest keeps.
    (tmp_path / "returns.csv").write_text("order_no,sku,quantity\n" + "DD1001,SKU-A1,0\n" * 500)
    many = check_expected_returns(cfg, now)
    assert many.message.endswith("line 2: quantity: expected an integer >= 1, got '0' (and 499 more bad rows)")
    # A path to no file is the path to fix, not the file's columns.
    cfg.bench.validation.manifest = Path("retruns.csv")
    typo = check_expected_returns(cfg, now)
    assert typo.status == FAIL and "retruns.csv" in typo.message, typo.line()
    assert typo.remedy.startswith("fix the path in bench.validation.manifest"), typo.line()
    cfg.bench.validation.manifest = Path("returns.csv")
    # The one central sent wins over the configured file.
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "manifest.csv").write_text("order_no,sku,quantity\nDD2001,SKU-C3,1\n")
    central = check_expected_returns(cfg, now)
    assert central.status == OK and central.message.startswith("1 order from central"), central.line()


def test_doctor__j1939_bus_is_listened_to_and_named(tmp_path: Path) -> None:
    from edge_agent.cli.doctor.devices import check_serial_device, serial_devices
    from edge_agent.drivers.j1939.twin import DEFAULT_VIN, J1939Twin
    from edge_agent.settings import parse_config

    twin = J1939Twin(tmp_path / "ttyACM0").start()
    try:
        cfg = parse_config(
            {
                "profile": "truck",
                "device": {"id": "t1", "site": "s"},
                "telematics": {
                    "can": {"kind": "j1939", "interface": "slcan", "channel": twin.path, "sleep_after_open_s": 0}
                },
            },
            "c.toml",
        )
        devices = serial_devices(cfg)
        assert [p for p, _ in devices] == ["telematics.can"]
        check = check_serial_device(*devices[0], listen_s=LISTEN_S)
    finally:
        twin.stop()
    assert check.name == "telematics.can (j1939)" and check.status == OK, check.line()
    assert f"VIN {DEFAULT_VIN}" in check.message and "LFE1(65266)" in check.message
    assert twin.sent_by_host == []


def test_status__a_damaged_outbox_is_named_not_called_none_yet(
    tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    """status said "outbox: none yet (the agent has not run)" beside "last error: ... cannot read"."""
    path = _sensors_config(tmp_path, broker.url)
    cfg = load_config(path)
    cfg.db_path.parent.mkdir(parents=True, exist_ok=True)
    cfg.db_path.write_bytes(b"\x5a" * 65536)
    assert cli.main(["status", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"outbox:        {cfg.db_path}: cannot read (" in out and "none yet" not in out
