"""Scale driver: KERN recordings, MT-SICS and continuous lines, a pty twin, garbage and unplug."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_agent.drivers.base import DeviceUnavailable, FrameError
from edge_agent.drivers.scale.driver import ScaleConfig, ScaleDriver, ScaleValue, parse_scale_line
from edge_agent.drivers.scale.twin import ScaleScenario, ScaleSegment, ScaleTwin, format_line
from edge_agent.settings import format_validation_error
from tests.helpers import read_until, unplug_replug

DATA = Path(__file__).parents[1] / "data" / "scale"

# What the balance's display showed in each capture (the file names say so; see SOURCES.md).
KERN_TRUTH_G = {
    "kern_ew_6200-2nm_0g.bin": (0.0, True),
    "kern_ew_6200-2nm_127_2g_15byte_packet.bin": (127.2, True),
    "kern_ew_6200-2nm_26_9g_stable.bin": (26.9, True),
    "kern_ew_6200-2nm_402_95g_15byte_packet_unstable_9600_8o2.bin": (402.95, False),
    "kern_ew_6200-2nm_minus_0_04g.bin": (-0.04, True),
}


def _lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().split(b"\r\n") if line]


# ---------------------------------------------------------------- pure parsing


@pytest.mark.parametrize("name", sorted(KERN_TRUTH_G))
def test_parse_scale_line__kern_recordings_match_display(name: str) -> None:
    grams, stable = KERN_TRUTH_G[name]
    (line,) = _lines(DATA / name)
    value = parse_scale_line(line)
    assert value.load_kg == pytest.approx(grams / 1000)
    assert value.stable is stable
    assert value.unit == "G"


def test_parse_scale_line__kern_tare_recording_goes_from_load_to_zero() -> None:
    values = [parse_scale_line(line).load_kg for line in _lines(DATA / "kern_ew_6200-2nm_tare.bin")]
    assert len(values) == 17
    assert values[0] == pytest.approx(0.1272)
    assert values[-1] == 0.0
    # one step only: the tare key pressed once
    assert sum(1 for a, b in itertools.pairwise(values) if a != b) == 1


def test_parse_scale_line__kern_percent_is_not_a_weight() -> None:
    (line,) = _lines(DATA / "kern_ew_6200-2nm_0percent.bin")
    with pytest.raises(FrameError, match=r"unit '%' is not a mass"):
        parse_scale_line(line)


@pytest.mark.parametrize(
    ("line", "kg", "stable", "gross"),
    [
        (b"S S     12.34 kg\r\n", 12.34, True, False),
        (b"S D     12.30 kg\r\n", 12.30, False, False),
        (b"S S    -0.250 g", -0.00025, True, False),
        (b"ST,GS,+00012.34kg\r\n", 12.34, True, True),
        (b"US,GS,+00012.34kg\r\n", 12.34, False, True),
        (b"ST,NT,-00001.50kg", -1.5, True, False),
        (b"ST,+00012.34  g\r\n", 0.01234, True, True),
        (b"ST,GS,+001.250 t\r\n", 1250.0, True, True),
        (b"US,GS,+0002205lb\r\n", 2205 * 0.45359237, False, True),
    ],
)
def test_parse_scale_line__formats(line: bytes, kg: float, stable: bool, gross: bool) -> None:
    value = parse_scale_line(line)
    assert value.load_kg == pytest.approx(kg)
    assert (value.stable, value.gross) == (stable, gross)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (b"S I\r\n", "busy"),
        (b"S +\r\n", "overload"),
        (b"S -\r\n", "underload"),
        (b"ES\r\n", "syntax error"),
        (b"EL\r\n", "logical error"),
        (b"OL,GS,+99999999kg\r\n", "overload"),
        (b"QT,+00000012PC\r\n", "piece count"),
        (b"ST,GS,+000", "expected a value and a unit"),
        (b"+0026.90 G X\r\n", "stability flag 'X'"),
        (b"\xff\xfe\r\n", "not ASCII"),
        (b"ST,GS,+00\x0112.34kg", "control characters"),
        (b"\r\n", "empty"),
        (b"hello scale", r"expected 'ST,GS,\+00012.34kg'"),
    ],
)
def test_parse_scale_line__bad_lines_raise_frame_error(line: bytes, match: str) -> None:
    with pytest.raises(FrameError, match=match):
        parse_scale_line(line)


def test_parse_scale_line__protocol_forced_rejects_the_other_format() -> None:
    with pytest.raises(FrameError, match="MT-SICS weight"):
        parse_scale_line(b"ST,GS,+00012.34kg", "mt-sics")
    with pytest.raises(FrameError, match="expected 'ST,GS"):
        parse_scale_line(b"S S     12.34 kg", "continuous")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_parse_scale_line__no_byte_string_crashes(data: bytes) -> None:
    try:
        value = parse_scale_line(data)
    except FrameError:
        return
    assert isinstance(value, ScaleValue)


@settings(max_examples=300, deadline=None)
@given(
    load_kg=st.floats(min_value=-9999, max_value=99999, allow_nan=False).map(lambda x: round(x, 2)),
    stable=st.booleans(),
    fmt=st.sampled_from(["and", "kern", "mt-sics"]),
)
def test_parse_scale_line__reads_what_the_twin_formats(load_kg: float, stable: bool, fmt: str) -> None:
    if fmt == "kern":
        load_kg = max(min(load_kg, 9999.0), -9.0)  # a KERN balance's range is grams
    value = parse_scale_line(format_line(load_kg, stable, fmt))  # type: ignore[arg-type]
    assert value.load_kg == pytest.approx(load_kg, abs=1e-5)
    assert value.stable is stable


# ---------------------------------------------------------------- config


def test_scale_config__bad_protocol_names_key_and_choices() -> None:
    with pytest.raises(ValidationError) as info:
        ScaleConfig.model_validate({"kind": "scale", "port": "/dev/ttyUSB0", "protocol": "sics"})
    (msg,) = format_validation_error("config.toml", info.value, ScaleConfig)
    assert msg == 'config.toml: protocol: expected "mt-sics", "continuous" or "auto", got "sics"'


def test_scale_config__unknown_key_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"baudrate\n  Extra inputs are not permitted"):
        ScaleConfig.model_validate({"kind": "scale", "port": "/dev/ttyUSB0", "baudrate": 9600})


# ---------------------------------------------------------------- driver over a pty


def test_scale_driver__continuous_load_drop_yields_stable_weighings(tmp_path: Path) -> None:
    twin = ScaleTwin(tmp_path / "scale", fmt="and", interval_s=0.02, time_scale=10.0).start()
    driver = ScaleDriver(ScaleConfig(kind="scale", port=twin.path))
    try:
        driver.open()
        got, bad = read_until(driver, 10_000, timeout_s=1.9)
    finally:
        driver.close()
        twin.stop()
    assert not bad
    stable = sorted({round(w.load_kg) for w in got if w.stable})
    assert stable == [0, 400, 1250]
    moving = [w.load_kg for w in got if not w.stable]
    assert moving
    assert all(0 < kg < 1250 or 400 < kg < 1250 for kg in moving)
    assert got[0].raw.startswith(("ST,GS,", "US,GS,"))


def test_scale_driver__replays_kern_tare_recording_byte_exact(tmp_path: Path) -> None:
    rec = DATA / "kern_ew_6200-2nm_tare.bin"
    twin = ScaleTwin(tmp_path / "kern", replay=rec, interval_s=0.005).start()
    driver = ScaleDriver(ScaleConfig(kind="scale", port=twin.path, baud=1200, stopbits=2, protocol="continuous"))
    try:
        driver.open()
        got, bad = read_until(driver, 20)
    finally:
        driver.close()
        twin.stop()
    assert not bad
    recorded = [line.decode() for line in _lines(rec)]
    # The driver joins the looped replay somewhere: what it read is a window of the recording.
    raws = [w.raw for w in got]
    looped = recorded * 3
    assert any(looped[i : i + len(raws)] == raws for i in range(len(recorded)))
    assert {round(w.load_kg, 4) for w in got} == {0.1272, 0.0}


def test_scale_driver__mt_sics_poll_si_and_s(tmp_path: Path) -> None:
    scenario = ScaleScenario((ScaleSegment(100.0, 12.34, True),), start_kg=12.34)
    twin = ScaleTwin(tmp_path / "sics", fmt="mt-sics", scenario=scenario).start()
    try:
        for command in ("SI", "S"):
            cfg = ScaleConfig(kind="scale", port=twin.path, poll=True, poll_command=command, poll_interval_s=0.05)
            driver = ScaleDriver(cfg)
            driver.open()
            try:
                got, bad = read_until(driver, 3)
            finally:
                driver.close()
            assert not bad
            assert [w.load_kg for w in got] == [12.34] * 3
            assert all(w.stable and not w.gross for w in got)
            assert got[0].raw == "S S      12.34 kg"
    finally:
        twin.stop()


def test_scale_driver__mt_sics_s_while_moving_is_dropped_as_busy(tmp_path: Path) -> None:
    scenario = ScaleScenario((ScaleSegment(100.0, 500.0, False),), start_kg=500.0)
    twin = ScaleTwin(tmp_path / "sics", fmt="mt-sics", scenario=scenario).start()
    driver = ScaleDriver(ScaleConfig(kind="scale", port=twin.path, poll=True, poll_command="S", poll_interval_s=0.05))
    try:
        driver.open()
        got, bad = read_until(driver, 1, timeout_s=0.5)
    finally:
        driver.close()
        twin.stop()
    assert got == []
    assert bad
    assert all("busy" in str(exc) for exc in bad)


def test_scale_driver__garbage_and_truncated_lines_are_dropped_then_reading_goes_on(tmp_path: Path) -> None:
    scenario = ScaleScenario((ScaleSegment(100.0, 80.0, True),), start_kg=80.0)
    twin = ScaleTwin(tmp_path / "scale", fmt="and", scenario=scenario, interval_s=0.02).start()
    driver = ScaleDriver(ScaleConfig(kind="scale", port=twin.path))
    try:
        driver.open()
        first, _ = read_until(driver, 2)
        twin.inject(b"\x00\xff\x13garbage\r\n")
        twin.inject(b"ST,GS,+000")  # truncated: glued to the next line
        twin.inject(b"#" * 300)  # a line that never ends
        got, bad = read_until(driver, 10)
    finally:
        driver.close()
        twin.stop()
    assert len(first) == 2
    assert [w.load_kg for w in got] == [80.0] * 10
    messages = " | ".join(str(e) for e in bad)
    assert "not ASCII" in messages
    assert "line longer than 128 bytes" in messages


def test_scale_driver__unplug_raises_device_unavailable_and_replug_reads_again(tmp_path: Path) -> None:
    scenario = ScaleScenario((ScaleSegment(100.0, 42.0, True),), start_kg=42.0)
    twin = ScaleTwin(tmp_path / "scale", fmt="and", scenario=scenario, interval_s=0.02).start()
    driver = ScaleDriver(ScaleConfig(kind="scale", port=twin.path))
    got = unplug_replug(driver, twin, 3, lost="read failed")
    assert [w.load_kg for w in got] == [42.0] * 3


def test_scale_driver__silent_port_counts_as_unavailable() -> None:
    driver = ScaleDriver(ScaleConfig(kind="scale", port="loop://", silence_timeout_s=0.2))
    driver.open()
    try:
        with pytest.raises(DeviceUnavailable, match=r"silent for 0\.2 s"):
            for _ in range(10):
                assert driver.read(0.1) is None
    finally:
        driver.close()
        driver.close()  # idempotent


def test_scale_driver__missing_port_says_which() -> None:
    driver = ScaleDriver(ScaleConfig(kind="scale", port="/nonexistent/ttyUSB9"))
    with pytest.raises(DeviceUnavailable, match=r"/nonexistent/ttyUSB9: cannot open"):
        driver.open()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=5))
def test_scale_driver__no_byte_stream_crashes_the_framing(chunks: list[bytes]) -> None:
    # loop:// hands back what is written: real pyserial I/O without a device.
    driver = ScaleDriver(ScaleConfig(kind="scale", port="loop://", silence_timeout_s=0))
    driver.open()
    try:
        assert driver._ser is not None
        for chunk in chunks:
            driver._ser.write(chunk)
        driver._ser.write(b"\r\n")
        for _ in range(len(chunks) * 3 + 3):
            try:
                w = driver.read(0.0)
            except FrameError:
                continue
            if w is None:
                break
            assert isinstance(w.load_kg, float)
    finally:
        driver.close()


def test_scale_driver__silence_timeout_zero_never_gives_up() -> None:
    driver = ScaleDriver(ScaleConfig(kind="scale", port="loop://", silence_timeout_s=0))
    driver.open()
    try:
        assert [driver.read(0.1) for _ in range(3)] == [None, None, None]
    finally:
        driver.close()
