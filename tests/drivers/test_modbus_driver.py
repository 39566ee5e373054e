"""The Modbus meter driver on a pty: against the RTU slave twin and against replayed real captures."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.drivers.base import DeviceUnavailable, DriverRunner, FrameError
from edge_agent.drivers.modbus.driver import ModbusMeterConfig, ModbusMeterDriver
from edge_agent.drivers.modbus.twin import ModbusTwin, sdm120_scenario, xy_md02_scenario
from edge_agent.drivers.ptytwin import PtyTwin
from edge_agent.drivers.readings import MeterReading
from tests.helpers import wait_until

DATA = Path(__file__).parents[1] / "data" / "modbus"


def meter(port: str, **kw: object) -> ModbusMeterConfig:
    data: dict[str, object] = {"name": "m1", "port": port, "poll_interval_s": 0.1, "timeout_s": 0.3}
    data.update(kw)
    return ModbusMeterConfig.model_validate(data)


@pytest.fixture
def md02(tmp_path: Path) -> Iterator[ModbusTwin]:
    twin = ModbusTwin(tmp_path / "ttyMD02", scenario=xy_md02_scenario(start_c=-2.0, drift_c_per_s=2.0))
    twin.start()
    yield twin
    twin.stop()


@pytest.fixture
def sdm120(tmp_path: Path) -> Iterator[ModbusTwin]:
    twin = ModbusTwin(tmp_path / "ttySDM", scenario=sdm120_scenario(start_kwh=1234.5, time_scale=2000))
    twin.start()
    yield twin
    twin.stop()


def read_n(driver: ModbusMeterDriver, n: int, limit_s: float = 10.0) -> list[MeterReading]:
    out: list[MeterReading] = []
    deadline = time.monotonic() + limit_s
    while len(out) < n and time.monotonic() < deadline:
        r = driver.read(0.5)
        if r is not None:
            out.append(r)
    return out


# ---------------------------------------------------------------- against the twin


def test_modbus_meter_driver__xy_md02_negative_and_drifting_temperature(md02: ModbusTwin) -> None:
    driver = ModbusMeterDriver(meter(md02.path, map="xy-md02", poll_interval_s=0.3))
    driver.open()
    try:
        first, *_, last = read_n(driver, 3)
    finally:
        driver.close()
    assert first.meter == "m1"
    assert first.values["temperature_c"] < 0  # int16 two's complement, below freezing
    assert last.values["temperature_c"] > first.values["temperature_c"]  # 2 degC/s drift
    assert first.values["humidity_pct"] == pytest.approx(61.5)
    assert first.units == {"temperature_c": "°C", "humidity_pct": "%RH"}
    assert first.raw.startswith("01 04 04 ")  # the reply frame, kept for diagnosis
    # Both registers come from one read request: 01 04 0001 0002 + CRC.
    assert md02.requests[-1][:6] == bytes.fromhex("01 04 00 01 00 02")


def test_modbus_meter_driver__sdm120_energy_counts_up_in_eight_requests(sdm120: ModbusTwin) -> None:
    driver = ModbusMeterDriver(meter(sdm120.path, map="eastron-sdm120"))
    driver.open()
    try:
        before = len(sdm120.requests)
        a, b = read_n(driver, 2)
        per_poll = (len(sdm120.requests) - before) / 2
    finally:
        driver.close()
    assert per_poll == 8  # 11 registers in 8 contiguous blocks
    assert b.values["total_active_energy_kwh"] > a.values["total_active_energy_kwh"] >= 1234.5
    assert a.values["frequency_hz"] == 50.0
    assert 230 <= a.values["voltage_v"] < 233
    assert len(a.values) == 11


def test_modbus_meter_driver__unmapped_register_gets_exception_and_warns_once(
    md02: ModbusTwin, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = meter(
        md02.path,
        map="xy-md02",
        registers=[{"name": "dew_point_c", "address": 0x0040, "function": "input", "type": "int16"}],
    )
    driver = ModbusMeterDriver(cfg)
    caplog.set_level(logging.WARNING, logger="edge_agent.drivers.modbus.driver")
    driver.open()
    try:
        readings = read_n(driver, 3)
    finally:
        driver.close()
    assert len(readings) == 3
    assert all("dew_point_c" not in r.values and "temperature_c" in r.values for r in readings)
    warnings = [r.getMessage() for r in caplog.records if r.name == "edge_agent.drivers.modbus.driver"]
    assert len(warnings) == 1
    assert "exception 2 (illegal data address)" in warnings[0]
    assert "64" in warnings[0]


def test_modbus_meter_driver__only_bad_register_is_a_frame_error(md02: ModbusTwin) -> None:
    cfg = meter(md02.path, registers=[{"name": "x", "address": 0x0300, "function": "holding"}])
    driver = ModbusMeterDriver(cfg)
    driver.open()  # the meter answers (with an exception): it is there
    try:
        with pytest.raises(FrameError, match=r"exception 2 \(illegal data address\) to a read of 1 register"):
            driver.poll()
    finally:
        driver.close()


def test_modbus_meter_driver__missing_port_is_unavailable(tmp_path: Path) -> None:
    driver = ModbusMeterDriver(meter(str(tmp_path / "ttyUSB9"), map="xy-md02"))
    with pytest.raises(DeviceUnavailable, match="ttyUSB9"):
        driver.open()
    driver.close()
    driver.close()  # idempotent


def test_modbus_meter_driver__silent_meter_is_unavailable(md02: ModbusTwin) -> None:
    driver = ModbusMeterDriver(meter(md02.path, map="xy-md02", silent_polls_max=2))
    md02.silent = True
    with pytest.raises(DeviceUnavailable, match="unit 1 does not answer"):
        driver.open()
    md02.silent = False
    driver.open()
    md02.silent = True
    try:
        assert driver.poll() is None
        with pytest.raises(DeviceUnavailable, match="did not answer 2 polls"):
            driver.poll()
    finally:
        driver.close()


def test_modbus_meter_driver__a_meter_whose_every_reply_is_garbled_is_unavailable(md02: ModbusTwin) -> None:
    # At another baud rate or parity every reply arrives unreadable: the meter was 'connected' forever with no
    # reading; now it is gone after silent_polls_max such polls, saying which settings to compare.
    driver = ModbusMeterDriver(meter(md02.path, map="xy-md02", silent_polls_max=2))
    driver.open()
    try:
        md02.corrupt_replies = 1  # one bad reply between good ones is noise, not a setting
        with pytest.raises(FrameError, match="unreadable reply"):
            driver.poll()
        assert driver.poll() is not None
        md02.corrupt_replies = 1_000_000
        with pytest.raises(FrameError, match="unreadable reply"):
            driver.poll()
        with pytest.raises(
            DeviceUnavailable,
            match=r"unit 1: no readable reply in 2 polls \(unreadable reply 01 04 04 .*\); expected the meter at "
            r"9600 baud, parity N, stop bits 1: set those to the meter's",
        ):
            driver.poll()
    finally:
        driver.close()


def test_modbus_probe__a_meter_whose_every_reply_is_garbled_is_told_to_check_the_settings(md02: ModbusTwin) -> None:
    """doctor, when the driver gives up on unreadable replies: the line settings, not the power and wiring."""
    from edge_agent.drivers.modbus.probe import probe

    md02.corrupt_replies = 1_000_000
    outcome = probe(meter(md02.path, map="xy-md02", silent_polls_max=2), 5.0)
    assert outcome.status == "fail" and "no readable reply in 2 polls" in outcome.message, outcome
    assert outcome.remedy == "check the baud rate, parity and protocol settings against the device's manual"


def test_modbus_meter_driver__other_unit_on_the_bus_is_ignored(tmp_path: Path) -> None:
    with ModbusTwin(tmp_path / "tty", unit_id=2, scenario=xy_md02_scenario()) as twin:
        driver = ModbusMeterDriver(meter(twin.path, map="xy-md02", unit_id=1))
        with pytest.raises(DeviceUnavailable, match="unit 1 does not answer"):
            driver.open()
        driver = ModbusMeterDriver(meter(twin.path, map="xy-md02", unit_id=2))
        driver.open()
        try:
            assert read_n(driver, 1)[0].values["humidity_pct"] == pytest.approx(61.5)
        finally:
            driver.close()


def test_modbus_meter_driver__corrupt_crc_and_garbage_then_recovers(md02: ModbusTwin) -> None:
    driver = ModbusMeterDriver(meter(md02.path, map="xy-md02"))
    driver.open()
    try:
        md02.corrupt_replies = 1
        with pytest.raises(FrameError, match="unit 1: unreadable reply 01 04 04"):
            driver.poll()
        md02.inject(b"\x00\xff\x55\xaa" * 8)  # noise on the idle line between polls...
        # ...has landed before the next request (the pty delivers it asynchronously)
        assert wait_until(lambda: driver._client is not None and driver._client.socket.in_waiting >= 32, 5)
        good = driver.poll()
        assert good is not None and good.values["humidity_pct"] == pytest.approx(61.5)
    finally:
        driver.close()


def test_modbus_meter_driver__partial_poll_keeps_the_blocks_that_answered(sdm120: ModbusTwin) -> None:
    driver = ModbusMeterDriver(meter(sdm120.path, map="eastron-sdm120"))
    driver.open()
    try:
        sdm120.garbage_before_reply = bytes.fromhex("01 04 ff 00 13 37")  # claims 255 data bytes
        partial = driver.poll()
    finally:
        driver.close()
    assert partial is not None
    assert "voltage_v" not in partial.values  # the first block's reply was buried in noise
    assert len(partial.values) == 10


@given(garbage=st.binary(min_size=1, max_size=64))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_modbus_meter_driver__garbage_before_reply_never_crashes(md02: ModbusTwin, garbage: bytes) -> None:
    driver = ModbusMeterDriver(meter(md02.path, map="xy-md02"))
    driver.open()
    try:
        md02.garbage_before_reply = garbage
        try:
            reading = driver.poll()
        except FrameError:
            reading = None
        if reading is not None:  # pymodbus found the real frame behind the noise
            assert reading.values["humidity_pct"] == pytest.approx(61.5)
        md02.garbage_before_reply = b""
        after = driver.poll()
        assert after is not None and after.values["humidity_pct"] == pytest.approx(61.5)
    finally:
        driver.close()


def test_driver_runner__modbus_meter_survives_unplug_and_replug(
    sdm120: ModbusTwin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent.drivers.base")
    readings: list[MeterReading] = []
    got = threading.Event()

    def on_reading(r: MeterReading) -> None:
        readings.append(r)
        got.set()

    stop = threading.Event()
    runner = DriverRunner(
        ModbusMeterDriver(meter(sdm120.path, map="eastron-sdm120")),
        on_reading,
        stop,
        backoff_min_s=0.05,
        backoff_max_s=0.2,
        read_timeout_s=0.2,
    )
    runner.start()
    try:
        assert got.wait(5)
        sdm120.unplug()
        assert wait_until(lambda: not runner.connected, 5), "the unplug was not noticed"
        n_unplugged = len(readings)

        def tries() -> int:
            return sum("still unavailable" in r.getMessage() for r in list(caplog.records))

        assert wait_until(lambda: tries() >= 2, 5), "no attempt to reopen"
        assert len(readings) == n_unplugged  # nothing while the cable is out, over two reopen attempts
        got.clear()
        sdm120.replug()
        assert got.wait(5)
        back = [r for r in list(caplog.records) if "device back" in r.getMessage()]
        assert back, "logged before the first reading after the replug"
    finally:
        stop.set()
        runner.join(3)
    assert runner.reconnects >= 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "device lost" in warnings[0].getMessage()
    assert any("device back" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert readings[-1].values["total_active_energy_kwh"] > readings[0].values["total_active_energy_kwh"]


# ---------------------------------------------------------------- against replayed real captures


class ReplaySlave(PtyTwin):
    """Answers each request with the reply a real slave gave to the byte-identical request."""

    name = "replay"

    def __init__(self, link: Path, pairs: list[tuple[bytes, bytes]]) -> None:
        super().__init__(link)
        self.replies: dict[bytes, list[bytes]] = {}
        for req, rep in pairs:
            self.replies.setdefault(req, []).append(rep)
        self.unknown: list[bytes] = []

    def serve(self) -> None:
        while not self.stop_event.is_set():
            req = self.read_available(0.05)
            if not req:
                continue
            options = self.replies.get(req)
            if not options:
                self.unknown.append(req)
                continue
            options.append(options.pop(0))  # cycle through what the slave answered over time
            self.write(options[-1])


def capture_pairs(name: str) -> list[tuple[bytes, bytes]]:
    frames = []
    for line in (DATA / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            parts = line.split()
            frames.append((parts[1], bytes.fromhex("".join(parts[2:-1]))))
    pairs = []
    for (line_a, a), (line_b, b) in itertools.pairwise(frames):
        if (
            line_a in ("bus", "RX")
            and line_b in ("bus", "TX")
            and a[1] == 3
            and len(a) == 8
            and b[1] == 3
            and len(b) == 5 + b[2]
        ):
            pairs.append((a, b))
    return pairs


def test_modbus_meter_driver__replayed_flowmeter_capture(tmp_path: Path) -> None:
    pairs = capture_pairs("flowmeter_target_15liter_per_min.frames.txt")
    assert len(pairs) >= 40
    with ReplaySlave(tmp_path / "ttyFlow", pairs) as slave:
        # The master in the capture read 15 holding registers from 0 in one request; the same
        # request must leave our driver byte for byte, or the replay has nothing to answer.
        cfg = meter(
            slave.path,
            unit_id=247,
            max_gap_registers=8,
            registers=[
                {"name": "status", "address": 0},
                {"name": "flow_a", "address": 2, "type": "float32"},
                {"name": "flow_b", "address": 4, "type": "float32"},
                {"name": "setpoint", "address": 6, "type": "float32"},
                {"name": "last", "address": 14},
            ],
        )
        driver = ModbusMeterDriver(cfg)
        driver.open()
        try:
            readings = read_n(driver, 4)
        finally:
            driver.close()
        assert slave.unknown == []
    assert len(readings) == 4
    assert readings[0].values["flow_a"] == pytest.approx(23.0008, abs=1e-3)
    assert readings[0].values["flow_b"] == pytest.approx(0.2106, abs=1e-3)
    assert readings[0].values["setpoint"] == 20.0
    assert readings[0].raw.startswith("f7 03 1e ")


def test_modbus_meter_driver__replayed_wizmodbus_capture_low_word_first(tmp_path: Path) -> None:
    pairs = capture_pairs("wizmodbus.frames.txt")
    with ReplaySlave(tmp_path / "ttyWiz", pairs) as slave:
        regs = [
            {"name": f"v{a}", "address": a, "type": "float32", "word_order": "little"} for a in range(1002, 1025, 2)
        ]
        driver = ModbusMeterDriver(meter(slave.path, registers=regs, max_registers_per_read=2))
        driver.open()
        try:
            (reading,) = read_n(driver, 1)
        finally:
            driver.close()
        assert slave.unknown == []
    assert reading.values["v1002"] == pytest.approx(11049.11, abs=0.2)
    assert reading.values["v1004"] == pytest.approx(22160.11, abs=0.2)
    assert all(1e4 < v < 5e4 for v in reading.values.values())


def test_driver_runner__two_meters_on_one_line_both_come_back_after_an_unplug(tmp_path: Path) -> None:
    """The meters of one RS-485 line share its port: when the adapter is pulled, neither may keep the dead
    port open for the other (the line is opened afresh once it failed), and both read again after the replug."""
    with ModbusTwin(tmp_path / "tty", unit_id=1, scenario=sdm120_scenario(), others={2: xy_md02_scenario()}) as line:
        got: dict[str, threading.Event] = {"a": threading.Event(), "b": threading.Event()}
        stop = threading.Event()
        runners = [
            DriverRunner(
                ModbusMeterDriver(meter(line.path, map=m, unit_id=u, name=n, baud=9600)),
                lambda r: got[r.meter].set(),
                stop,
                backoff_min_s=0.05,
                backoff_max_s=0.2,
                read_timeout_s=0.2,
            )
            for n, m, u in (("a", "eastron-sdm120", 1), ("b", "xy-md02", 2))
        ]
        for r in runners:
            r.start()
        try:
            assert all(e.wait(5) for e in got.values())
            line.unplug()
            assert wait_until(lambda: not any(r.connected for r in runners), 5), "the unplug was not noticed"
            for e in got.values():
                e.clear()
            line.replug()
            assert all(e.wait(10) for e in got.values()), [r.last_error for r in runners]
        finally:
            stop.set()
            for r in runners:
                r.join(3)


def test_modbus_meter_driver__a_meter_reopens_a_failed_line_while_another_still_holds_it(tmp_path: Path) -> None:
    """The second meter of a line may still hold the pulled adapter's port when the first comes back: the
    first must open the line afresh, not share the dead port because it is still open in this process."""
    with ModbusTwin(tmp_path / "tty", unit_id=1, scenario=sdm120_scenario(), others={2: xy_md02_scenario()}) as line:
        a = ModbusMeterDriver(meter(line.path, map="eastron-sdm120", unit_id=1, name="a", baud=9600))
        b = ModbusMeterDriver(meter(line.path, map="xy-md02", unit_id=2, name="b", baud=9600))
        a.open()
        b.open()
        try:
            assert a.poll() is not None and b.poll() is not None
            line.unplug()
            with pytest.raises(DeviceUnavailable, match="went away"):
                a.poll()
            a.close()  # b has not noticed yet: it still holds the old port
            line.replug()
            a.open()
            assert a.poll() is not None, "the meter came back on the dead port"
            with pytest.raises(DeviceUnavailable):
                b.poll()
            b.close()
            b.open()
            assert a.poll() is not None and b.poll() is not None
        finally:
            a.close()
            b.close()


def test_modbus_meter_driver__the_first_poll_is_not_followed_by_a_second_at_once(md02: ModbusTwin) -> None:
    """The first poll set the next one due at once (`sensors watch` showed two readings 5 ms apart)."""
    d = ModbusMeterDriver(meter(md02.path, map="xy-md02", poll_interval_s=30))
    d.open()
    try:
        assert read_n(d, 1)
        assert d.read(0.0) is None, "a second poll came before its interval"
    finally:
        d.close()
