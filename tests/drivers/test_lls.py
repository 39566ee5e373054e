"""Omnicomm LLS fuel-level driver: frames, CRC, calibration, a pty twin, noise, echo and unplug."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_agent.drivers.base import DeviceUnavailable, FrameError
from edge_agent.drivers.lls.driver import (
    LlsConfig,
    LlsDriver,
    LlsFrame,
    build_request,
    crc8_maxim,
    level_litres,
    parse_lls_frame,
)
from edge_agent.drivers.lls.twin import LlsScenario, LlsSegment, LlsTwin, crc8_dallas
from edge_agent.settings import format_validation_error
from tests.helpers import read_until, unplug_replug


def _cfg(port: str, **kw: object) -> LlsConfig:
    return LlsConfig.model_validate({"kind": "lls", "port": port, "poll_interval_s": 0.05, **kw})


def _steady(level_raw: int, temperature_c: int = 21) -> LlsScenario:
    return LlsScenario((LlsSegment(1000.0, level_raw),), start_raw=level_raw, temperature_c=temperature_c)


# ---------------------------------------------------------------- frames


def test_build_request__matches_published_broadcast_frame() -> None:
    # "31 FF 06 29" is the broadcast single-read request as printed in LLS integration notes.
    assert build_request(0xFF) == bytes.fromhex("31 ff 06 29")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=32))
def test_crc8_maxim__agrees_with_the_twins_bitwise_crc(data: bytes) -> None:
    assert crc8_maxim(data) == crc8_dallas(data)


def test_parse_lls_frame__decodes_fields() -> None:
    body = bytes.fromhex("3e 01 06 f6 d2 04 30 75")  # -10 degC, level 1234, frequency 30000
    frame = parse_lls_frame(body + bytes([crc8_dallas(body)]))
    assert frame == LlsFrame(address=1, temperature_c=-10, level_raw=1234, frequency_raw=30000)


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (bytes.fromhex("3e 01 06 15 d2 04 30 75"), "expected 9 bytes, got 8"),
        (bytes.fromhex("3f 01 06 15 d2 04 30 75 00"), "expected prefix 3e, got 3f"),
        (bytes.fromhex("3e 01 07 15 d2 04 30 75 00"), "expected operation 06, got 07"),
        (bytes.fromhex("3e 01 06 15 d2 04 30 75 00"), "CRC8 mismatch"),
    ],
)
def test_parse_lls_frame__bad_frames_raise(frame: bytes, match: str) -> None:
    with pytest.raises(FrameError, match=match):
        parse_lls_frame(frame)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=20))
def test_parse_lls_frame__no_byte_string_crashes(data: bytes) -> None:
    try:
        frame = parse_lls_frame(data)
    except FrameError:
        return
    assert 0 <= frame.level_raw <= 0xFFFF


@settings(max_examples=200, deadline=None)
@given(level=st.integers(0, 0xFFFF), temp=st.integers(-128, 127), address=st.integers(0, 254))
def test_parse_lls_frame__reads_every_answer_the_twin_builds(level: int, temp: int, address: int) -> None:
    twin = LlsTwin(address=address, scenario=_steady(level, temp))
    frame = parse_lls_frame(twin.answer(0.0))
    assert (frame.address, frame.level_raw, frame.temperature_c) == (address, level, temp)


# ---------------------------------------------------------------- calibration and config


def test_level_litres__interpolates_and_clamps_table() -> None:
    cfg = _cfg("/dev/null", calibration=[[100, 0.0], [1100, 200.0], [4000, 400.0]])
    assert level_litres(600, cfg) == pytest.approx(100.0)
    assert level_litres(2550, cfg) == pytest.approx(300.0)
    assert level_litres(0, cfg) == 0.0
    assert level_litres(4095, cfg) == 400.0


def test_level_litres__per_count_or_none() -> None:
    assert level_litres(2000, _cfg("/dev/null", litres_per_count=0.1)) == pytest.approx(200.0)
    assert level_litres(2000, _cfg("/dev/null")) is None


def test_lls_config__calibration_must_increase() -> None:
    with pytest.raises(ValidationError) as info:
        LlsConfig.model_validate({"kind": "lls", "port": "/dev/ttyUSB1", "calibration": [[10, 0], [5, 20]]})
    (msg,) = format_validation_error("config.toml", info.value, LlsConfig)
    assert msg.startswith("config.toml: calibration: expected a list of [raw level, litres] pairs with raw strictly")
    assert msg.endswith("got a list (calibration needs >= 2 points with raw strictly increasing)")


def test_lls_config__address_out_of_range() -> None:
    with pytest.raises(ValidationError) as info:
        LlsConfig.model_validate({"kind": "lls", "port": "/dev/ttyUSB1", "address": 255})
    (msg,) = format_validation_error("config.toml", info.value, LlsConfig)
    assert msg == "config.toml: address: expected a sensor network address 0-254, got 255"


# ---------------------------------------------------------------- driver over a pty


def test_lls_driver__reads_levels_in_litres_and_percent(tmp_path: Path) -> None:
    twin = LlsTwin(tmp_path / "lls", address=7, scenario=_steady(2048)).start()
    driver = LlsDriver(_cfg(twin.path, address=7, calibration=[[0, 0.0], [4095, 400.0]]))
    try:
        driver.open()
        got, bad = read_until(driver, 3)
    finally:
        driver.close()
        twin.stop()
    assert not bad
    assert len(got) == 3
    assert all(r.level_l == pytest.approx(2048 / 4095 * 400) for r in got)
    assert all(r.level_pct == pytest.approx(2048 / 4095 * 100) for r in got)
    assert got[0].source == "lls"
    assert got[0].raw.startswith("3e 07 06 15 00 08")


def test_lls_driver__refuel_scenario_shows_fall_then_jump(tmp_path: Path) -> None:
    twin = LlsTwin(tmp_path / "lls", time_scale=40.0).start()
    driver = LlsDriver(_cfg(twin.path, litres_per_count=0.1, poll_interval_s=0.02))
    try:
        driver.open()
        got, bad = read_until(driver, 10_000, timeout_s=1.4)
    finally:
        driver.close()
        twin.stop()
    assert not bad
    litres = [r.level_l for r in got if r.level_l is not None]
    assert len(litres) > 20
    assert litres[0] == pytest.approx(200, abs=5)
    assert min(litres) < 185
    assert max(litres) == pytest.approx(390, abs=2)
    assert litres.index(max(litres)) > litres.index(min(litres))


def test_lls_driver__skips_echo_of_own_request(tmp_path: Path) -> None:
    twin = LlsTwin(tmp_path / "lls", echo=True, scenario=_steady(1000)).start()
    driver = LlsDriver(_cfg(twin.path))
    try:
        driver.open()
        got, bad = read_until(driver, 3)
    finally:
        driver.close()
        twin.stop()
    assert not bad
    assert [r.level_pct for r in got] == [pytest.approx(1000 / 4095 * 100)] * 3


def test_lls_driver__noise_and_corrupt_frames_are_dropped_then_reading_goes_on(tmp_path: Path) -> None:
    twin = LlsTwin(tmp_path / "lls", scenario=_steady(3000)).start()
    driver = LlsDriver(_cfg(twin.path))
    try:
        driver.open()
        assert read_until(driver, 1)[0]
        twin.inject(b"\x00\xff\x55")  # line noise before the answer
        twin.inject(bytes.fromhex("3e 01 06 15 b8 0b 00 00 ee"))  # a frame with a broken CRC
        got, bad = read_until(driver, 4)
    finally:
        driver.close()
        twin.stop()
    assert [r.level_pct for r in got] == [pytest.approx(3000 / 4095 * 100)] * 4
    messages = " | ".join(map(str, bad))
    assert "noise before a frame: 00 ff 55" in messages
    assert "CRC8 mismatch" in messages


def test_lls_driver__wrong_address_is_silence_then_unavailable(tmp_path: Path) -> None:
    twin = LlsTwin(tmp_path / "lls", address=2).start()
    driver = LlsDriver(_cfg(twin.path, address=3, silence_timeout_s=0.4, response_timeout_s=0.1))
    try:
        driver.open()
        with pytest.raises(DeviceUnavailable, match=r"no answer from LLS address 3 for 0\.4 s"):
            for _ in range(20):
                assert driver.read(0.1) is None
    finally:
        driver.close()
        twin.stop()
    assert driver.unanswered >= 2
    assert twin.requests >= 2


def test_lls_driver__unplug_then_replug(tmp_path: Path) -> None:
    twin = LlsTwin(tmp_path / "lls", scenario=_steady(500)).start()
    driver = LlsDriver(_cfg(twin.path))
    got = unplug_replug(driver, twin, 2)
    assert [r.level_pct for r in got] == [pytest.approx(500 / 4095 * 100)] * 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=30), min_size=1, max_size=4))
def test_lls_driver__no_byte_stream_crashes_the_framing(chunks: list[bytes]) -> None:
    # loop:// hands back our own request (like an echoing RS-485 adapter) and whatever is written.
    driver = LlsDriver(_cfg("loop://", response_timeout_s=0.01, silence_timeout_s=60))
    driver.open()
    try:
        assert driver._ser is not None
        for chunk in chunks:
            driver._ser.write(chunk)
            for _ in range(4):
                try:
                    r = driver.read(0.0)
                except FrameError:
                    continue
                if r is None:
                    break
                assert r.level_pct is not None and 0.0 <= r.level_pct <= 100.0
    finally:
        driver.close()
