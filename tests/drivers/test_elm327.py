"""ELM327 OBD-II driver: response parsing, PID scaling, MAF fallback, a pty twin, carOBD replay."""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_agent.drivers.base import DeviceUnavailable, FrameError
from edge_agent.drivers.elm327.driver import (
    BusDown,
    Elm327Config,
    Elm327Driver,
    NoData,
    decode_pid,
    fuel_constants,
    maf_to_fuel_rate_lph,
    merge_support,
    parse_elm_answers,
    parse_elm_response,
    supported_from_bitmap,
)
from edge_agent.drivers.elm327.twin import (
    ETIOS_PIDS,
    CarObdReplay,
    DriveScenario,
    DriveSegment,
    Elm327Twin,
    ObdState,
)
from edge_agent.drivers.readings import FuelLevel, FuelRate, VehicleSpeed
from edge_agent.settings import format_validation_error
from tests.helpers import read_until, unplug_replug

DATA = Path(__file__).parents[1] / "data" / "obd"


def _cfg(port: str, **kw: object) -> Elm327Config:
    return Elm327Config.model_validate({"kind": "elm327", "port": port, "poll_interval_s": 0.02, **kw})


def _steady(speed_kmh: float = 42.0, level_pct: float = 50.0, **kw: object) -> DriveScenario:
    return DriveScenario(
        (DriveSegment(1e6, speed_kmh, level_pct),),
        start_level_pct=level_pct,
        start_speed_kmh=speed_kmh,
        **kw,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "pid", "data"),
    [
        ("41 0D 32 \r\r", 0x0D, b"\x32"),
        ("010D\r41 0D 32 \r\r", 0x0D, b"\x32"),  # echo still on
        ("SEARCHING...\r41 0D 32 \r\r", 0x0D, b"\x32"),
        ("410D32\r\r", 0x0D, b"\x32"),  # ATS0
        ("41 5E 01 F4\r\n\r\n", 0x5E, b"\x01\xf4"),  # ATL1
        ("BUS INIT: ...OK\r41 2F 80\r", 0x2F, b"\x80"),
        ("41 00 BE 1F A8 13\r41 00 98 18 00 01\r", 0x00, bytes.fromhex("be1fa813")),  # two ECUs: first wins
        ("\x0041 10 01 F4 \r", 0x10, b"\x01\xf4"),
    ],
)
def test_parse_elm_response__answers(text: str, pid: int, data: bytes) -> None:
    assert parse_elm_response(text.replace("\x00", ""), pid) == data


@pytest.mark.parametrize(
    ("text", "exc", "match"),
    [
        ("NO DATA\r\r", NoData, "015E: NO DATA"),
        ("SEARCHING...\rNO DATA\r", NoData, "NO DATA"),
        ("?\r\r", FrameError, "answered '\\?'"),
        ("SEARCHING...\rUNABLE TO CONNECT\r", BusDown, "UNABLE TO CONNECT"),
        ("BUS INIT: ...ERROR\r", BusDown, "BUS INIT"),
        ("CAN ERROR\r", BusDown, "ignition off"),
        ("41 5E 01\r", FrameError, "truncated answer '41 5E 01': expected 2 data byte"),
        ("41 5E 0G 10\r", FrameError, "garbled answer"),
        ("STOPPED\r", FrameError, "adapter reports 'STOPPED'"),
        ("\r\r", FrameError, "empty answer"),
        ("7E8 04 41 5E 01 F4\r", FrameError, "expected an answer starting 415E"),
    ],
)
def test_parse_elm_response__errors(text: str, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        parse_elm_response(text, 0x5E)


@settings(max_examples=400, deadline=None)
@given(
    text=st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.decode("latin-1"))),
    pid=st.sampled_from([0x00, 0x0D, 0x10, 0x2F, 0x5E]),
)
def test_parse_elm_response__no_text_crashes(text: str, pid: int) -> None:
    try:
        data = parse_elm_response(text, pid)
    except FrameError:
        return
    decode_pid(pid, data) if pid else supported_from_bitmap(0, data)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="0123456789ABCDEF \r", max_size=40))
def test_parse_elm_response__hexlike_text_never_crashes(text: str) -> None:
    with contextlib.suppress(FrameError):
        parse_elm_response("41 5E " + text, 0x5E)


def test_decode_pid__sae_j1979_scaling() -> None:
    assert decode_pid(0x0D, b"\x32") == 50.0
    assert decode_pid(0x2F, b"\xff") == 100.0
    assert decode_pid(0x2F, b"\x80") == pytest.approx(50.196, abs=1e-3)
    assert decode_pid(0x5E, b"\x00\x24") == 1.8
    assert decode_pid(0x5E, b"\xff\xff") == 3276.75
    assert decode_pid(0x10, b"\x01\xf4") == 5.0


def test_supported_from_bitmap__wikipedia_example() -> None:
    # The example answer to 0100 in Wikipedia's "OBD-II PIDs" article.
    got = supported_from_bitmap(0x00, bytes.fromhex("BE1FA813"))
    assert got == {0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0C, 0x0D, 0x0E, 0x0F, 0x10, 0x11, 0x13, 0x15, 0x1C, 0x1F, 0x20}


def test_maf_to_fuel_rate_lph__follows_fuel_type() -> None:
    petrol = fuel_constants(Elm327Config(kind="elm327", port="x", fuel_type="petrol"))
    diesel = fuel_constants(Elm327Config(kind="elm327", port="x", fuel_type="diesel"))
    assert petrol == (14.7, 745.0)
    assert diesel == (14.5, 832.0)
    # 10 g/s of air: 36000 g/h / 14.7 = 2449 g/h of petrol = 3.287 L/h at 745 g/L.
    assert maf_to_fuel_rate_lph(10.0, *petrol) == pytest.approx(3.2872, abs=1e-4)
    assert maf_to_fuel_rate_lph(10.0, *diesel) == pytest.approx(2.9841, abs=1e-4)
    lean = Elm327Config(kind="elm327", port="x", fuel_type="diesel", afr=29.0, fuel_density_g_l=840.0)
    assert fuel_constants(lean) == (29.0, 840.0)


def test_elm327_config__errors_name_key_and_expectation() -> None:
    with pytest.raises(ValidationError) as info:
        Elm327Config.model_validate(
            {"kind": "elm327", "port": "/dev/rfcomm0", "fuel_type": "lpg", "protocol": "D", "pids": []}
        )
    msgs = format_validation_error("config.toml", info.value, Elm327Config)
    assert 'config.toml: fuel_type: expected "petrol" or "diesel", got "lpg"' in msgs
    assert 'config.toml: protocol: expected one protocol digit "0"-"9" or "A"-"C", got "D"' in msgs
    assert any(m.startswith("config.toml: pids: expected a non-empty list") for m in msgs)


# ---------------------------------------------------------------- real recording


def test_carobd_raw_capture__answers_parse_and_match_twin_support_table() -> None:
    entries = re.findall(r"^([\d.]+):([0-9a-f]+),?$", (DATA / "raw-can.txt").read_text(), re.MULTILINE)
    assert len(entries) > 150
    pids = {int(hexdata[:2], 16) for _, hexdata in entries}
    assert pids == ETIOS_PIDS  # the twin's Etios answers exactly what the real car answered
    levels = []
    for _, hexdata in entries:
        pid = int(hexdata[:2], 16)
        text = "41 " + " ".join(hexdata[i : i + 2] for i in range(0, len(hexdata), 2)).upper() + " \r\r"
        if pid == 0x0D:
            assert 0 <= decode_pid(pid, parse_elm_response(text, pid)) <= 255
        if pid == 0x2F:
            levels.append(decode_pid(pid, parse_elm_response(text, pid)))
    assert levels
    # A fifth of a tank, steady over the 20 s capture (0x31..0x34 = 19.2..20.4 %).
    assert all(19.0 < pct < 20.5 for pct in levels)


# ---------------------------------------------------------------- driver over a pty


def test_elm327_driver__drive_with_stop_and_refuel(tmp_path: Path) -> None:
    twin = Elm327Twin(tmp_path / "obd", time_scale=100.0).start()
    driver = Elm327Driver(_cfg(twin.path, poll_interval_s=0.01))
    try:
        driver.open()
        got, bad = read_until(driver, 10_000, 2.0)
    finally:
        driver.close()
        twin.stop()
    assert not bad
    assert driver.adapter_version == "ELM327 v1.5"
    speeds = [r.speed_kmh for r in got if isinstance(r, VehicleSpeed)]
    rates = [r for r in got if isinstance(r, FuelRate)]
    levels = [r.level_pct for r in got if isinstance(r, FuelLevel) and r.level_pct is not None]
    assert len(speeds) > 20 and len(rates) > 20 and len(levels) > 20
    assert max(speeds) == 60.0
    assert 0.0 in speeds
    assert {r.source for r in rates} == {"pid5e"}
    assert 0.0 in [r.rate_lph for r in rates]  # engine off at the stop
    assert max(r.rate_lph for r in rates) == pytest.approx(1.8 + 0.22 * 60, abs=0.05)
    low = min(levels)
    assert low == pytest.approx(57.8, abs=0.5)
    assert max(levels[levels.index(low) :]) == pytest.approx(95.0, abs=0.5)  # the refuel
    assert "SEARCHING..." not in " ".join(r.raw for r in got)


def test_elm327_driver__maf_fallback_when_no_pid5e(tmp_path: Path) -> None:
    twin = Elm327Twin(tmp_path / "obd", scenario=_steady(has_pid5e=False, fuel="diesel")).start()
    try:
        results = {}
        for fuel in ("diesel", "petrol"):
            driver = Elm327Driver(_cfg(twin.path, pids=["fuel_rate"], fuel_type=fuel))
            driver.open()
            try:
                got, bad = read_until(driver, 3, 3.0)
            finally:
                driver.close()
            assert not bad
            assert all(isinstance(r, FuelRate) and r.source == "maf" for r in got)
            results[fuel] = got[-1].rate_lph  # type: ignore[union-attr]
        assert "015E" not in twin.requests  # the support bitmap said it is not there
    finally:
        twin.stop()
    expected_lph = 1.8 + 0.22 * 42
    assert results["diesel"] == pytest.approx(expected_lph, rel=2e-3)
    assert results["petrol"] == pytest.approx(expected_lph * (14.5 * 832) / (14.7 * 745), rel=2e-3)


class _LyingEcu:
    """Claims PID 5E in its bitmap but answers NO DATA for it (seen on real ECUs)."""

    supported = frozenset({0x0D, 0x10, 0x5E})

    def at(self, t_s: float) -> ObdState:
        return ObdState(speed_kmh=30.0, level_pct=40.0, fuel_rate_lph=None, maf_g_s=12.0)


def test_elm327_driver__no_data_three_times_drops_pid_and_falls_back_to_maf(tmp_path: Path) -> None:
    twin = Elm327Twin(tmp_path / "obd", scenario=_LyingEcu()).start()
    driver = Elm327Driver(_cfg(twin.path, pids=["fuel_rate"], fuel_type="petrol"))
    try:
        driver.open()
        got, bad = read_until(driver, 3, 3.0)
    finally:
        driver.close()
        twin.stop()
    assert [type(e) for e in bad] == [NoData] * 3
    assert twin.requests.count("015E") == 3
    assert [r.rate_lph for r in got] == [pytest.approx(12.0 * 3600 / (14.7 * 745))] * 3  # type: ignore[union-attr]


def test_elm327_driver__carobd_replay_reports_recorded_values(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    replay = CarObdReplay(DATA / "ufpe3.csv")
    csv_speeds = {row[0] for row in replay.rows}
    csv_levels = [row[1] for row in replay.rows]
    twin = Elm327Twin(tmp_path / "obd", scenario=replay, time_scale=200.0).start()
    driver = Elm327Driver(_cfg(twin.path, poll_interval_s=0.005))
    caplog.set_level(logging.INFO, logger="edge_agent.drivers.elm327.driver")
    try:
        driver.open()
        got, bad = read_until(driver, 10_000, 1.5)
    finally:
        driver.close()
        twin.stop()
    assert not bad
    speeds = [r.speed_kmh for r in got if isinstance(r, VehicleSpeed)]
    levels = [r.level_pct for r in got if isinstance(r, FuelLevel) and r.level_pct is not None]
    assert len(set(speeds)) > 5
    assert set(speeds) <= csv_speeds
    assert all(any(abs(lv - c) < 0.01 for c in csv_levels) for lv in levels)
    assert not [r for r in got if isinstance(r, FuelRate)]  # the Etios has neither 5E nor MAF
    warnings = [r for r in caplog.records if "neither PID 5E" in r.getMessage()]
    assert len(warnings) == 1
    assert "015E" not in twin.requests and "0110" not in twin.requests


def test_elm327_driver__carobd_replay_with_estimated_maf(tmp_path: Path) -> None:
    replay = CarObdReplay(DATA / "ufpe3.csv", estimate_maf=True)
    twin = Elm327Twin(tmp_path / "obd", scenario=replay, time_scale=200.0).start()
    driver = Elm327Driver(_cfg(twin.path, pids=["fuel_rate"], fuel_type="petrol", poll_interval_s=0.005))
    try:
        driver.open()
        got, bad = read_until(driver, 10_000, 0.6)
    finally:
        driver.close()
        twin.stop()
    assert not bad
    rates = [r.rate_lph for r in got if isinstance(r, FuelRate) and r.source == "maf"]
    assert len(rates) == len(got) > 10
    # A 1.5 L petrol engine: 0 with the engine stopped (first rows), about 1-10 L/h running.
    assert all(0 <= lph < 30 for lph in rates)
    assert max(rates) > 1.0


def test_elm327_driver__garbage_answers_are_dropped_then_polling_goes_on(tmp_path: Path) -> None:
    twin = Elm327Twin(tmp_path / "obd", scenario=_steady()).start()
    driver = Elm327Driver(_cfg(twin.path, pids=["speed"]))
    try:
        driver.open()
        assert read_until(driver, 1, 3.0)[0]
        twin.inject(b"41 0D 3\xff\r\r>")
        twin.inject(b"41 0D\r\r>")
        twin.inject(b"?\r\r>")
        twin.inject(b"\x00\x00STOPPED\r\r>")
        got, bad = read_until(driver, 3, 3.0)
    finally:
        driver.close()
        twin.stop()
    assert [r.speed_kmh for r in got] == [42.0] * 3  # type: ignore[union-attr]
    messages = [str(e) for e in bad]
    assert len(messages) == 4
    assert "garbled answer" in messages[0]
    assert "truncated answer" in messages[1]
    assert "'?'" in messages[2]
    assert "STOPPED" in messages[3]


def test_elm327_driver__ignition_off_is_device_unavailable(tmp_path: Path) -> None:
    twin = Elm327Twin(tmp_path / "obd").start()
    twin.bus_up = False
    driver = Elm327Driver(_cfg(twin.path))
    try:
        driver.open()
        with pytest.raises(DeviceUnavailable, match="UNABLE TO CONNECT"):
            read_until(driver, 1, 3.0)
    finally:
        driver.close()
        twin.stop()


def test_elm327_driver__silent_adapter_times_out_then_unavailable(tmp_path: Path) -> None:
    twin = Elm327Twin(tmp_path / "obd", scenario=_steady()).start()
    driver = Elm327Driver(_cfg(twin.path, pids=["speed"], response_timeout_s=0.2))
    try:
        driver.open()
        assert read_until(driver, 1, 3.0)[0]
        twin.mute = True
        bad: list[Exception] = []
        with pytest.raises(DeviceUnavailable, match="adapter silent: no '>' prompt for 2 requests"):
            for _ in range(20):
                try:
                    driver.read(0.2)
                except FrameError as exc:
                    bad.append(exc)
    finally:
        driver.close()
        twin.stop()
    assert [str(e) for e in bad] == ["010D: no answer within 0.2 s"]


def test_elm327_driver__unplug_then_replug_reinitialises(tmp_path: Path) -> None:
    twin = Elm327Twin(tmp_path / "obd", scenario=_steady()).start()
    driver = Elm327Driver(_cfg(twin.path, pids=["speed"]))
    got = unplug_replug(driver, twin, 2)
    assert [r.speed_kmh for r in got] == [42.0, 42.0]  # type: ignore[union-attr]
    assert twin.requests.count("ATZ") == 2


def test_elm327_driver__not_an_elm327_fails_open() -> None:
    driver = Elm327Driver(_cfg("loop://"))  # a port that only echoes what is sent
    with pytest.raises(DeviceUnavailable, match="no '>' prompt after ATZ within 2 s"):
        driver.open()
    driver.close()


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=80), pid=st.sampled_from([0x00, 0x0D, 0x10, 0x2F, 0x40, 0x5E]))
def test_elm327_driver__no_answer_bytes_crash_the_handler(raw: bytes, pid: int) -> None:
    driver = Elm327Driver(_cfg("/nonexistent"))
    with contextlib.suppress(FrameError, DeviceUnavailable):
        driver._handle(pid, raw)


# ---------------------------------------------------------------- several ECUs, a stale session


def test_parse_elm_answers__two_ecus_support_bitmaps_merge() -> None:
    # The answers to 0100 from a real two-ECU car (issue 14): only the second ECU advertises MAF (0x10).
    text = "7E8 06 41 00 98 18 00 13 \r7E9 06 41 00 98 3B 00 13 \r"
    answers = parse_elm_answers(text, 0x00)
    assert [a.ecu for a in answers] == ["7E8", "7E9"]
    by_ecu = merge_support(answers, 0x00)
    assert 0x10 not in by_ecu["7E8"] and 0x10 in by_ecu["7E9"]
    assert by_ecu["7E8"] < by_ecu["7E9"]
    # Headers off, as before: the first answer's data, and a header line is not an answer.
    assert parse_elm_response("41 00 98 18 00 13\r41 00 98 3B 00 13\r", 0x00) == bytes.fromhex("98180013")


class _EngineEcuWithoutMaf:
    """The engine ECU (7E8) flags speed and level only; the vehicle's MAF is answered by a second ECU."""

    supported = frozenset({0x0D, 0x2F})

    def at(self, t_s: float) -> ObdState:
        return ObdState(speed_kmh=42.0, level_pct=50.0, fuel_rate_lph=None, maf_g_s=10.0)


def test_elm327_driver__maf_only_on_second_ecu_is_polled_from_it(tmp_path: Path) -> None:
    twin = Elm327Twin(tmp_path / "obd", scenario=_EngineEcuWithoutMaf(), second_ecu=frozenset({0x0D, 0x10})).start()
    driver = Elm327Driver(_cfg(twin.path, pids=["speed", "fuel_rate"], fuel_type="diesel"))
    try:
        driver.open()
        got, bad = read_until(driver, 6, 4.0)
    finally:
        driver.close()
        twin.stop()
    assert not bad
    assert {0x0D, 0x2F} <= driver.ecu_support["7E8"] and 0x10 not in driver.ecu_support["7E8"]
    assert {0x0D, 0x10} <= driver.ecu_support["7E9"]
    assert driver.pid_source[0x10] == "7E9" and driver.pid_source[0x0D] == "7E8"
    rates = [r for r in got if isinstance(r, FuelRate)]
    assert rates and all(r.source == "maf" and r.raw.startswith("7E9") for r in rates)
    assert rates[0].rate_lph == pytest.approx(maf_to_fuel_rate_lph(10.0, 14.5, 832.0), rel=1e-3)
    assert all(r.raw.startswith("7E8") for r in got if isinstance(r, VehicleSpeed))
    described = driver.describe_sources()
    assert "ECU 7E8" in described and "ECU 7E9" in described and "10 MAF" in described
    assert "ATH1" in twin.requests
    # With two ECUs each PID is asked of its own ECU: MAF of 7E9 (ATSH 7E1), speed of 7E8 (ATSH 7E0).
    maf_at = twin.requests.index("0110")
    assert [r for r in twin.requests[:maf_at] if r.startswith("ATSH")][-1] == "ATSH7E1"
    speed_after = [i for i, r in enumerate(twin.requests) if r == "010D" and i > maf_at]
    assert speed_after and [r for r in twin.requests[: speed_after[0]] if r.startswith("ATSH")][-1] == "ATSH7E0"


@pytest.mark.parametrize(
    "stale",
    [
        b"\r>\r>",  # two prompts left by an earlier session
        b"41 0D 2A \r\r>\r>",  # the tail of an answer, then prompts
        b"\x00\xff\xfeNO DATA\r\r>garbage\r\r>",  # noise, an answer and garbage
    ],
)
def test_elm327_driver__leftovers_at_open_are_drained_before_atz(tmp_path: Path, stale: bytes) -> None:
    twin = Elm327Twin(tmp_path / "obd", scenario=_steady(), stale_at_open=stale).start()
    driver = Elm327Driver(_cfg(twin.path, pids=["speed"]))
    try:
        driver.open()
        got, bad = read_until(driver, 2, 3.0)
    finally:
        driver.close()
        twin.stop()
    assert driver.adapter_version == "ELM327 v1.5"
    assert not bad and [r.speed_kmh for r in got] == [42.0, 42.0]  # type: ignore[union-attr]
    assert twin.requests.count("ATZ") == 1
