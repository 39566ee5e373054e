"""Pure Modbus RTU decoding against real captured frames: CRC, frame checks, value types, block planning, maps."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.drivers.base import FrameError
from edge_agent.drivers.modbus.driver import (
    MeterMap,
    ModbusMeterConfig,
    RegisterSpec,
    build_read_request,
    crc16_modbus,
    decode_block,
    decode_value,
    load_map,
    map_path,
    parse_frame,
    parse_read_response,
    plan_blocks,
    shipped_maps,
)
from edge_agent.drivers.modbus.twin import crc16 as twin_crc16
from edge_agent.errors import ConfigError
from edge_agent.settings import parse_config

DATA = Path(__file__).parents[1] / "data" / "modbus"
CAPTURES = sorted(DATA.glob("*.frames.txt"))


def load_frames(path: Path) -> list[tuple[float, str, bytes, str]]:
    """(t_s, line, frame bytes, crc verdict) for every frame of a capture file."""
    frames = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        frames.append((float(parts[0]), parts[1], bytes.fromhex("".join(parts[2:-1])), parts[-1]))
    return frames


def spec(**kw: object) -> RegisterSpec:
    base: dict[str, object] = {"name": "v", "address": 0}
    base.update(kw)
    return RegisterSpec.model_validate(base)


# ---------------------------------------------------------------- CRC and frames on real captures


def test_captures__present_and_all_crc_ok() -> None:
    assert len(CAPTURES) == 3
    total = sum(len(load_frames(p)) for p in CAPTURES)
    assert total == 132 + 18 + 88


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_parse_frame__accepts_every_captured_frame(path: Path) -> None:
    for _, _, raw, verdict in load_frames(path):
        assert verdict == "OK"
        frame = parse_frame(raw)
        assert frame.raw == raw
        assert frame.unit_id in (0x01, 0xF7)
        assert frame.function in (0x03, 0x06, 0x10)


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_crc16__driver_and_twin_agree_with_captured_crcs(path: Path) -> None:
    for _, _, raw, _ in load_frames(path):
        wire_crc = raw[-2] | raw[-1] << 8
        assert crc16_modbus(raw[:-2]) == wire_crc
        assert twin_crc16(raw[:-2]) == wire_crc


def test_parse_frame__single_bit_flip_in_captured_frame_is_rejected() -> None:
    raw = load_frames(DATA / "flowmeter_graph_tool.frames.txt")[3][2]
    for bit in range(len(raw) * 8):
        damaged = bytearray(raw)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FrameError, match="CRC mismatch"):
            parse_frame(bytes(damaged))


def test_build_read_request__matches_requests_a_real_master_sent() -> None:
    requests = [raw for _, line, raw, _ in load_frames(DATA / "wizmodbus.frames.txt") if line == "RX" and raw[1] == 3]
    assert requests
    for raw in requests:
        unit, function, address, count = struct.unpack(">BBHH", raw[:6])
        assert build_read_request(unit, function, address, count) == raw


def test_parse_read_response__flowmeter_block_of_15_registers() -> None:
    frames = load_frames(DATA / "flowmeter_target_15liter_per_min.frames.txt")
    # request F7 03 00 00 00 0F is answered by the 30-byte frame right after it on the bus.
    i = next(i for i, f in enumerate(frames) if f[2].hex() == "f7030000000f1158")
    words = parse_read_response(frames[i + 1][2], 0xF7, 0x03, 15)
    assert len(words) == 15
    assert words[2:4] == [0x41B8, 0x0194]
    got = decode_value(words[6:8], spec(type="float32"))
    assert got == 20.0


def test_parse_read_response__wrong_unit_function_and_count_are_frame_errors() -> None:
    raw = bytes.fromhex("F7 03 02 00 08 71 97")
    assert parse_read_response(raw, 0xF7, 3, 1) == [8]
    with pytest.raises(FrameError, match="from unit 247, expected unit 1"):
        parse_read_response(raw, 1, 3, 1)
    with pytest.raises(FrameError, match="function 03, expected 04"):
        parse_read_response(raw, 0xF7, 4, 1)
    with pytest.raises(FrameError, match="byte count wrong: expected 4"):
        parse_read_response(raw, 0xF7, 3, 2)


def test_parse_read_response__exception_reply_names_the_code() -> None:
    body = bytes((1, 0x84, 2))
    raw = body + struct.pack("<H", twin_crc16(body))
    with pytest.raises(FrameError, match=r"exception 2 \(illegal data address\)"):
        parse_read_response(raw, 1, 4, 2)


# ---------------------------------------------------------------- values


def test_decode_value__flowmeter_setpoint_write_is_15_l_min() -> None:
    frames = load_frames(DATA / "flowmeter_target_15liter_per_min.frames.txt")
    write = next(raw for _, _, raw, _ in frames if raw[1] == 0x10 and len(raw) > 8)
    words = list(struct.unpack(">HH", write[7:11]))
    assert decode_value(words, spec(type="float32")) == 15.0


def test_decode_value__wizmodbus_floats_are_low_word_first() -> None:
    frames = load_frames(DATA / "wizmodbus.frames.txt")
    pairs = [
        (frames[i][2], frames[i + 1][2])
        for i in range(len(frames) - 1)
        if frames[i][1] == "RX" and frames[i + 1][1] == "TX" and frames[i][2][1] == 3
    ]
    # Registers 1002-1024 hold four process values that tick up (11049.11, 22160.11, ...):
    # low word first they read as such, high word first as nonsense magnitudes.
    values = [
        (int.from_bytes(req[2:4], "big"), list(struct.unpack(">HH", rep[3:7])))
        for req, rep in pairs
        if 1002 <= int.from_bytes(req[2:4], "big") <= 1024
    ]
    assert len(values) == 24
    little = [decode_value(w, spec(type="float32", word_order="little")) for _, w in values]
    big = [decode_value(w, spec(type="float32", word_order="big")) for _, w in values]
    assert all(1e4 < v < 5e4 for v in little)
    assert not any(1 < abs(v) < 1e6 for v in big)
    assert little[0] == pytest.approx(11049.11, abs=0.01)  # A4 71 46 2C -> 0x462CA471


@pytest.mark.parametrize(
    ("kind", "words", "order", "expected"),
    [
        ("int16", [0xFFCE], "big", -50),
        ("uint16", [0xFFCE], "big", 65486),
        ("int32", [0xFFFF, 0xFFFE], "big", -2),
        ("int32", [0xFFFE, 0xFFFF], "little", -2),
        ("uint32", [0x0001, 0x0000], "big", 65536),
        ("uint32", [0x0001, 0x0000], "little", 1),
        ("float32", [0x449A, 0x5000], "big", 1234.5),
        ("float32", [0x5000, 0x449A], "little", 1234.5),
    ],
)
def test_decode_value__types_and_word_order(kind: str, words: list[int], order: str, expected: float) -> None:
    assert decode_value(words, spec(type=kind, word_order=order)) == expected


def test_decode_value__scale_and_offset() -> None:
    assert decode_value([0xFFCE], spec(type="int16", scale=0.1, offset=0.5)) == pytest.approx(-4.5)


def test_decode_value__nan_register_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="holds no number"):
        decode_value([0x7FC0, 0x0000], spec(type="float32"))


def test_decode_value__wrong_word_count_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="expected 2 register word"):
        decode_value([1], spec(type="uint32"))


# ---------------------------------------------------------------- block planning


def test_plan_blocks__merges_adjacent_and_splits_functions() -> None:
    regs = [
        spec(name="a", address=0, type="float32", function="input"),
        spec(name="b", address=2, type="float32", function="input"),
        spec(name="c", address=6, type="uint16", function="input"),
        spec(name="d", address=2, type="uint16", function="holding"),
    ]
    blocks = plan_blocks(regs)
    assert [(b.function, b.address, b.count) for b in blocks] == [(3, 2, 1), (4, 0, 4), (4, 6, 1)]
    gap = plan_blocks(regs, max_gap=2)
    assert [(b.function, b.address, b.count) for b in gap] == [(3, 2, 1), (4, 0, 7)]
    small = plan_blocks(regs, max_count=2)
    assert [(b.address, b.count) for b in small if b.function == 4] == [(0, 2), (2, 2), (6, 1)]


def test_decode_block__values_by_name_from_one_read() -> None:
    regs = [spec(name="t", address=1, type="int16", scale=0.1), spec(name="h", address=2, scale=0.1)]
    (block,) = plan_blocks(regs)
    assert decode_block(block, [0xFFF6, 615]) == {"t": pytest.approx(-1.0), "h": pytest.approx(61.5)}


@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.sampled_from(["uint16", "float32"]), st.sampled_from(["holding", "input"])),
        min_size=1,
        max_size=20,
        unique_by=lambda t: t[0],
    ),
    st.integers(1, 125),
    st.integers(0, 8),
)
@settings(max_examples=200, deadline=None)
def test_plan_blocks__covers_every_register_within_limits(
    items: list[tuple[int, str, str]], max_count: int, max_gap: int
) -> None:
    regs = [spec(name=f"r{i}", address=a, type=t, function=f) for i, (a, t, f) in enumerate(items)]
    blocks = plan_blocks(regs, max_count=max(max_count, 2), max_gap=max_gap)
    seen = [r.name for b in blocks for r in b.registers]
    assert sorted(seen) == sorted(r.name for r in regs)
    for b in blocks:
        assert b.count <= max(max_count, 2)
        for r in b.registers:
            assert b.address <= r.address and r.address + r.words <= b.address + b.count
            assert b.function == (3 if r.function == "holding" else 4)


# ---------------------------------------------------------------- no byte string crashes a parser


@given(st.binary(max_size=300))
@settings(max_examples=500, deadline=None)
def test_parse_frame__no_byte_string_crashes(data: bytes) -> None:
    try:
        frame = parse_frame(data)
    except FrameError:
        return
    assert crc16_modbus(data[:-2]) == (data[-2] | data[-1] << 8)
    assert frame.unit_id == data[0]


@given(st.binary(max_size=300), st.integers(0, 255), st.integers(0, 255), st.integers(0, 130))
@settings(max_examples=300, deadline=None)
def test_parse_read_response__no_byte_string_crashes(data: bytes, unit: int, fn: int, count: int) -> None:
    for candidate in (data, data + struct.pack("<H", crc16_modbus(data))):
        try:
            words = parse_read_response(candidate, unit, fn, count)
        except FrameError:
            continue
        assert len(words) == count


@given(
    st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2),
    st.sampled_from(["int16", "uint16", "int32", "uint32", "float32"]),
    st.sampled_from(["big", "little"]),
)
def test_decode_value__any_words_give_a_number_or_frame_error(words: list[int], kind: str, order: str) -> None:
    s = spec(type=kind, word_order=order)
    try:
        v = decode_value(words[: s.words], s)
    except FrameError:
        assert kind == "float32"
        return
    assert math.isfinite(v)


# ---------------------------------------------------------------- config and shipped maps


def test_shipped_maps__validate_and_plan() -> None:
    assert {"eastron-sdm120", "xy-md02"} <= set(shipped_maps())
    for name in shipped_maps():
        m = load_map(map_path(name))
        assert isinstance(m, MeterMap)
        assert plan_blocks(m.registers, m.max_registers_per_read)


def test_shipped_maps__sdm120_energy_register_is_30343() -> None:
    m = load_map(map_path("eastron-sdm120"))
    energy = next(r for r in m.registers if r.name == m.energy_register)
    assert (energy.address, energy.function, energy.type, energy.unit) == (342, "input", "float32", "kWh")


def test_modbus_meter_config__map_fills_registers_and_serial_defaults() -> None:
    cfg = ModbusMeterConfig.model_validate({"name": "m", "port": "/dev/ttyUSB0", "map": "eastron-sdm120"})
    assert cfg.baud == 2400
    assert cfg.energy_register == "total_active_energy_kwh"
    assert len(cfg.all_registers) == 11
    own = ModbusMeterConfig.model_validate(
        {
            "name": "m",
            "port": "/dev/ttyUSB0",
            "map": "eastron-sdm120",
            "baud": 9600,
            "registers": [
                {"name": "voltage_v", "address": 0, "function": "input", "type": "float32", "unit": "mV", "scale": 1000}
            ],
        }
    )
    assert own.baud == 9600
    assert next(r for r in own.all_registers if r.name == "voltage_v").unit == "mV"


def _agent(meter: dict[str, object]) -> dict[str, object]:
    return {"profile": "sensors", "device": {"id": "d1", "site": "s1"}, "sensors": {"meters": [meter]}}


def test_modbus_meter_config__errors_name_key_expected_and_got() -> None:
    with pytest.raises(
        ConfigError,
        match=r"cfg.toml: sensors.meters.m.unit_id: expected a Modbus unit \(slave\) id "
        r"1-247, got 0",
    ):
        parse_config(_agent({"name": "m", "port": "/dev/x", "map": "xy-md02", "unit_id": 0}), "cfg.toml")
    with pytest.raises(
        ConfigError,
        match=r"sensors.meters.m.map: expected the name of a shipped meter map .*"
        r"got \"sdm999\"",
    ):
        parse_config(_agent({"name": "m", "port": "/dev/x", "map": "sdm999"}), "cfg.toml")
    with pytest.raises(ConfigError, match=r"sensors.meters.m.registers.t.type: expected \"int16\", .*got \"float64\""):
        parse_config(
            _agent({"name": "m", "port": "/dev/x", "registers": [{"name": "t", "address": 1, "type": "float64"}]}),
            "cfg.toml",
        )
    with pytest.raises(ConfigError, match=r"sensors.meters.m.timeout_s: expected a number of seconds > 0 and <= 1"):
        parse_config(_agent({"name": "m", "port": "/dev/x", "map": "xy-md02", "timeout_s": 3}), "cfg.toml")


def test_load_map__broken_user_map_names_the_map_file(tmp_path: Path) -> None:
    bad = tmp_path / "mine.toml"
    bad.write_text('vendor = "x"\nmodel = "y"\ndocument = "z"\n[[registers]]\nname = "t"\naddress = 70000\n')
    with pytest.raises(ConfigError, match=r"mine.toml: registers.0.address: expected a protocol register address"):
        ModbusMeterConfig.model_validate({"name": "m", "port": "/dev/x", "map": str(bad)})
    with pytest.raises(ConfigError, match=r"nothere.toml: meter map not found \(shipped maps: eastron-sdm120"):
        ModbusMeterConfig.model_validate({"name": "m", "port": "/dev/x", "map": str(tmp_path / "nothere.toml")})
