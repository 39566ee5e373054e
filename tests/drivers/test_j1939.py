"""J1939: identifiers, SPN table decoding, transport protocol and DM1 on real and made frames; the driver over slcan on a pty."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.drivers.base import FrameError
from edge_agent.drivers.j1939.config import J1939Config
from edge_agent.drivers.j1939.driver import J1939Driver
from edge_agent.drivers.j1939.protocol import (
    PGN_TP_CM,
    PGN_TP_DT,
    Spn,
    TransportAssembler,
    decode_dm1,
    decode_spn,
    make_can_id,
    marker,
    parse_can_id,
    parse_spn_table,
    shipped_table,
)
from edge_agent.drivers.j1939.twin import DEFAULT_VIN, J1939Twin, Leg
from edge_agent.drivers.probing import probe_port
from edge_agent.drivers.readings import ActiveFaults, FuelRate, VehicleId, VehicleSpeed, VehicleValue, Weighing
from edge_agent.drivers.registry import probe_device
from edge_agent.errors import ConfigError
from edge_agent.settings import parse_config

DATA = Path(__file__).parents[1] / "data" / "j1939"
LINE = re.compile(r"\(([\d.]+)\)\s+\S+\s+([0-9A-Fa-f]{8})#([0-9A-Fa-f]*)")


def candump(path: Path) -> list[tuple[float, int, bytes]]:
    out = []
    for line in path.read_text().splitlines():
        m = LINE.match(line.strip())
        if m:
            out.append((float(m.group(1)), int(m.group(2), 16), bytes.fromhex(m.group(3))))
    return out


def _driver(**kw: object) -> J1939Driver:
    return J1939Driver(J1939Config.model_validate({"kind": "j1939", "channel": "can0", "emit_interval_s": 0, **kw}))


def _drain(d: J1939Driver) -> list[object]:
    got = []
    while d._pending:
        got.append(d._pending.popleft())
    return got


# ---------------------------------------------------------------- real traffic


def test_real_truck_broadcast__distance_and_engine_speed_decode_as_pretty_j1939_shows() -> None:
    d = _driver()
    for t, can_id, data in candump(DATA / "truck-broadcast.candump"):
        d.handle_frame(can_id, data, t)
    values = {r.quantity: r for r in _drain(d) if isinstance(r, VehicleValue)}
    assert values["total_distance_km"].value == 854934.0  # pretty_j1939's README: "854934.0 [m]" (its unit slip)
    assert values["engine_speed_rpm"].value == 649.0  # EEC1 bytes 4-5 = 0x1448 * 0.125
    # CCVS from the cab controller (SA 49) says "not available" for wheel speed: no reading, not 255.99 km/h.
    assert not any(isinstance(r, VehicleSpeed) for r in _drain(d))
    assert {0, 11, 49, 85} <= set(d.sources_seen)
    assert d.pgns_seen[65265] == 1 and d.pgns_seen[61444] == 1


def test_real_bam__engine_configuration_reassembled() -> None:
    tp = TransportAssembler()
    done = [
        a
        for t, can_id, data in candump(DATA / "bam-engine-config.candump")
        if (a := tp.feed(parse_can_id(can_id), data, t)) is not None
    ]
    assert len(done) == 1
    assert (done[0].pgn, done[0].source, done[0].destination, len(done[0].payload)) == (65251, 0, 0xFF, 34)
    assert done[0].payload[:3] == bytes.fromhex("5014BB")  # first packet's data, sequence byte stripped


def test_dm1__project_vector_mil_on_spn_91_fmi_3() -> None:
    frames = candump(DATA / "dm1.candump")
    assert decode_dm1(frames[0][2]).dtcs == ()
    dm1 = decode_dm1(frames[1][2])
    assert dm1.mil == 1 and dm1.amber_warning == 0
    assert [(x.spn, x.fmi, x.occurrences) for x in dm1.dtcs] == [(91, 3, 1)]


# ---------------------------------------------------------------- identifiers, markers, table


def test_parse_can_id__pdu1_and_pdu2() -> None:
    tp_cm = parse_can_id(0x1CEC4900)
    assert (tp_cm.priority, tp_cm.pgn, tp_cm.source, tp_cm.destination) == (7, PGN_TP_CM, 0x00, 0x49)
    eec1 = parse_can_id(0x0CF00400)
    assert (eec1.priority, eec1.pgn, eec1.source, eec1.destination) == (3, 61444, 0, 0xFF)
    with pytest.raises(FrameError, match="29-bit"):
        parse_can_id(1 << 29)


@given(st.integers(0, 7), st.integers(0, (1 << 18) - 1), st.integers(0, 255), st.integers(0, 255))
def test_make_can_id__round_trips_through_parse(priority: int, pgn: int, source: int, dest: int) -> None:
    pf = (pgn >> 8) & 0xFF
    if pf < 240:
        pgn &= ~0xFF  # a PDU1 PGN has no group extension
    cid = parse_can_id(make_can_id(priority, pgn, source, dest))
    assert (cid.priority, cid.pgn, cid.source) == (priority, pgn, source)
    assert cid.destination == (dest if pf < 240 else 0xFF)


def test_marker__j1939_71_ranges() -> None:
    assert marker(0xFAFF, 16) is None and marker(0xFB00, 16) == "reserved"
    assert marker(0xFE12, 16) == "error" and marker(0xFFFF, 16) == "not available"
    assert marker(0xFFFFFFFF, 32) == "not available" and marker(0xFAFFFFFF, 32) is None
    assert marker(3, 2) == "not available" and marker(2, 2) == "error" and marker(1, 2) is None
    assert marker(0xF, 4) == "not available" and marker(0xE, 4) == "error"


def test_shipped_table__has_every_quantity_the_truck_needs() -> None:
    table = shipped_table()
    quantities = {s.quantity for pgn in table.by_pgn for s in table.spns(pgn)}
    assert {
        "speed_kmh",
        "fuel_rate_lph",
        "total_fuel_l",
        "total_fuel_hr_l",
        "total_distance_km",
        "total_distance_hr_km",
        "fuel_level_pct",
        "cargo_weight_kg",
        "engine_hours_h",
    } <= quantities
    total = next(s for s in table.spns(64777) if s.spn == 5054)
    assert decode_spn(bytes(4) + (123_456_789).to_bytes(4, "little"), total) == pytest.approx(123456.789)


def test_parse_spn_table__bad_rows_name_the_file_and_row() -> None:
    header = "pgn,acronym,spn,name,start_byte,start_bit,length_bits,resolution,offset,unit,quantity\n"
    with pytest.raises(ValueError, match=r"site.csv: data row 1: expected numbers"):
        parse_spn_table(header + "65280,X,1,x,one,1,8,1,0,,\n", "site.csv")
    with pytest.raises(ValueError, match=r"site.csv: data row 1 \(SPN 1\): runs past byte 8"):
        parse_spn_table(header + "65280,X,1,x,8,1,16,1,0,,\n", "site.csv")
    with pytest.raises(ValueError, match="expected the header"):
        parse_spn_table("pgn,spn\n1,2\n", "site.csv")


def test_site_can_map__state_of_charge_and_energy_counter_of_an_electric_van(tmp_path: Path) -> None:
    # A site-supplied map for an EV's proprietary PGN 65296 (0xFF10): SOC 0.4 %/bit, energy used 0.1 kWh/bit.
    site = tmp_path / "ev.csv"
    site.write_text(
        "pgn,acronym,spn,name,start_byte,start_bit,length_bits,resolution,offset,unit,quantity\n"
        "65296,EVB,520001,Battery State of Charge,1,1,8,0.4,0,%,soc_pct\n"
        "65296,EVB,520002,Traction Energy Used,2,1,32,0.1,0,kWh,energy_used_kwh\n"
    )
    d = _driver(spn_map=str(site))
    d.handle_frame(make_can_id(6, 65296, 0xF3), bytes([200]) + (123456).to_bytes(4, "little") + b"\xff\xff\xff", 1.0)
    got = {r.quantity: r for r in _drain(d) if isinstance(r, VehicleValue)}
    assert got["soc_pct"].value == pytest.approx(80.0)
    assert got["energy_used_kwh"].value == pytest.approx(12345.6) and got["energy_used_kwh"].unit == "kWh"


# ---------------------------------------------------------------- transport protocol


def _cm(control: int, size: int, packets: int, pgn: int, src: int, dst: int) -> tuple[int, bytes]:  # noqa: PLR0917
    data = bytes([control]) + size.to_bytes(2, "little") + bytes([packets, 0xFF]) + pgn.to_bytes(3, "little")
    return make_can_id(7, PGN_TP_CM, src, dst), data


def test_transport__rts_cts_session_seen_by_a_listener() -> None:
    payload = bytes(range(20))
    tp = TransportAssembler()
    rts = _cm(16, 20, 3, 65260, 0x00, 0xF9)
    cts = (make_can_id(7, PGN_TP_CM, 0xF9, 0x00), bytes([17, 3, 1, 0xFF, 0xFF]) + (65260).to_bytes(3, "little"))
    frames = [rts, cts] + [
        (make_can_id(7, PGN_TP_DT, 0x00, 0xF9), bytes([i + 1]) + payload[i * 7 : i * 7 + 7].ljust(7, b"\xff"))
        for i in range(3)
    ]
    done = [a for cid, data in frames if (a := tp.feed(parse_can_id(cid), data, 0.0)) is not None]
    assert [(a.pgn, a.source, a.destination, a.payload) for a in done] == [(65260, 0, 0xF9, payload)]


def test_transport__abort_timeout_and_bad_sequence_drop_the_session() -> None:
    tp = TransportAssembler()
    dt = make_can_id(7, PGN_TP_DT, 0x00, 0xFF)
    cm_id, cm = _cm(32, 20, 3, 65226, 0x00, 0xFF)
    tp.feed(parse_can_id(cm_id), cm, 0.0)
    assert tp.feed(parse_can_id(dt), bytes([1]) + bytes(7), 1.0) is None  # 1 s later: T1 (750 ms) passed
    assert tp.stats.timed_out == 1
    tp.feed(parse_can_id(cm_id), cm, 2.0)
    with pytest.raises(FrameError, match=r"sequence 9 outside 1\.\.3"):
        tp.feed(parse_can_id(dt), bytes([9]) + bytes(7), 2.1)
    with pytest.raises(FrameError, match="inconsistent"):
        tp.feed(parse_can_id(cm_id), _cm(32, 20, 9, 65226, 0, 0xFF)[1], 2.2)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, (1 << 29) - 1), st.binary(max_size=8)), max_size=40))
def test_driver__any_frames_give_readings_or_frame_errors(frames: list[tuple[int, bytes]]) -> None:
    d = _driver()
    for i, (can_id, data) in enumerate(frames):
        try:
            d.handle_frame(can_id, data, i * 0.01)
        except FrameError:
            continue
    assert d.frames == len(frames)


# ---------------------------------------------------------------- config


def test_j1939_config__requests_need_listen_only_off() -> None:
    base = {"profile": "truck", "device": {"id": "d", "site": "s"}}
    with pytest.raises(ConfigError) as info:
        parse_config({**base, "telematics": {"can": {"kind": "j1939", "channel": "can0", "request_pgns": True}}}, "c")
    # the validator's words, not "expected value error, request_pgns ..., got a table"
    assert info.value.problems == [
        "c: telematics.can: request_pgns = true transmits on the bus: it needs listen_only = false"
    ]
    with pytest.raises(ConfigError, match=r"telematics.can.bitrate: expected 250000 or 500000"):
        parse_config({**base, "telematics": {"can": {"kind": "j1939", "channel": "can0", "bitrate": 125000}}}, "c")


# ---------------------------------------------------------------- over slcan on a pty


def _slcan(path: str, **kw: object) -> J1939Config:
    return J1939Config.model_validate(
        {"kind": "j1939", "interface": "slcan", "channel": path, "sleep_after_open_s": 0, **kw}
    )


def test_j1939_driver__listens_to_a_route_at_real_rates_with_vin_and_dm1(tmp_path: Path) -> None:
    twin = J1939Twin(tmp_path / "ttyACM0", route=(Leg(1, 0), Leg(3, 60), Leg(60, 60))).start()
    driver = J1939Driver(_slcan(twin.path, emit_interval_s=0.2))
    got: list[object] = []
    try:
        driver.open()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            any(isinstance(r, VehicleId) for r in got)
            and any(isinstance(r, ActiveFaults) for r in got)
            and any(isinstance(r, VehicleSpeed) and r.speed_kmh > 30 for r in got)
        ):
            r = driver.read(0.5)
            if r is not None:
                got.append(r)
        t_open = time.monotonic() - (deadline - 20)
    finally:
        driver.close()
        twin.stop()
    assert "L" in twin.commands and "O" not in twin.commands and "S5" in twin.commands  # 250 kbit/s, listen-only
    assert twin.sent_by_host == [] and twin.refused == []
    vin = next(r for r in got if isinstance(r, VehicleId))
    assert vin.vin == DEFAULT_VIN
    faults = next(r for r in got if isinstance(r, ActiveFaults))
    assert faults.dtcs == ((100, 1, 3), (3226, 2, 1)) and faults.amber_warning  # two DTCs: a BAM DM1
    speeds = [r.speed_kmh for r in got if isinstance(r, VehicleSpeed)]
    assert max(speeds) > 30
    rates = [r for r in got if isinstance(r, FuelRate)]
    assert rates and all(r.source == "j1939_lfe" for r in rates)
    totals = [r for r in got if isinstance(r, VehicleValue) and r.quantity == "total_fuel_hr_l"]
    assert totals and totals[0].resolution == 0.001 and totals[-1].value >= totals[0].value > 123456
    assert any(isinstance(r, Weighing) and r.load_kg == 7400.0 for r in got)
    # At real rates EEC1 alone is 50 frames/s: the bus was heard at that pace.
    assert driver.pgns_seen[61444] >= 40 * min(t_open, 5) - 20


def test_j1939_driver__requests_only_when_configured_and_transmitting(tmp_path: Path) -> None:
    twin = J1939Twin(tmp_path / "ttyACM0", vin="WDB9634031L123456").start()
    driver = J1939Driver(_slcan(twin.path, listen_only=False, request_pgns=True))
    try:
        driver.open()
        deadline = time.monotonic() + 10
        vin = None
        while time.monotonic() < deadline and vin is None:
            r = driver.read(0.5)
            vin = r.vin if isinstance(r, VehicleId) else vin
    finally:
        driver.close()
        twin.stop()
    assert vin == "WDB9634031L123456"
    assert "O" in twin.commands
    assert "T18EAFFF93ECFE00" in twin.sent_by_host  # Request (59904) for VI (65260) from SA 249


def test_j1939_probe__doctor_and_port_scan_find_the_bus(tmp_path: Path) -> None:
    twin = J1939Twin(tmp_path / "ttyACM0").start()
    try:
        outcome = probe_device(_slcan(twin.path), 1.5)
        scan = probe_port(twin.path, timeout_s=1.0)  # only the silent protocols before slcan wait it out
    finally:
        twin.stop()
    assert outcome.status == "ok", outcome
    assert "EEC1(61444)" in outcome.message and f"VIN {DEFAULT_VIN}" in outcome.message
    assert "source addresses 0, 11, 23" in outcome.message
    assert scan.protocol == "slcan" and "version 1013" in scan.detail


def test_j1939_probe__silent_bus_fails_with_the_ignition_remedy(tmp_path: Path) -> None:
    twin = J1939Twin(tmp_path / "ttyACM0").start()
    twin.stop_event.set()  # the adapter answers nothing: no frames either
    try:
        outcome = probe_device(_slcan(str(tmp_path / "nothere")), 0.5)
    finally:
        twin.stop()
    assert outcome.status == "fail" and "cannot open the CAN interface" in outcome.message
    assert "ls /dev/ttyACM*" in outcome.remedy


def test_j1939_probe__a_socketcan_channel_that_cannot_be_opened_is_named_in_the_remedy() -> None:
    """The remedy named can0 whatever the configured channel; now the channel and its bitrate."""
    cfg = J1939Config.model_validate({"kind": "j1939", "interface": "socketcan", "channel": "can9", "bitrate": 500000})
    outcome = probe_device(cfg, 0.2)  # no SocketCAN here, or no can9 on a machine that has it
    assert outcome.status == "fail" and outcome.message.startswith("can9: cannot open the CAN interface")
    assert "ip link show can9" in outcome.remedy and "ip link set can9 up type can bitrate 500000" in outcome.remedy


def test_spn__bit_fields_inside_a_byte() -> None:
    brake = Spn(65265, "CCVS1", 70, "Parking Brake Switch", 1, 3, 2, 1, 0, "", "")
    assert decode_spn(bytes([0b00000100]), brake) == 1.0
    assert decode_spn(bytes([0b00001100]), brake) is None  # 11: not available


def test_sensors_list__names_the_j1939_bus_behind_an_slcan_adapter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.cli.main import main

    twin = J1939Twin(tmp_path / "ttyACM3").start()
    try:
        rc = main(["sensors", "list", "--port", twin.path, "--json", "--timeout-s", "0.3"])
    finally:
        twin.stop()
    assert rc == 0
    (entry,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert entry["likely"] == "slcan"
    assert "J1939 at 250 kbit/s" in entry["detail"] and f"VIN {DEFAULT_VIN}" in entry["detail"]
    assert twin.sent_by_host == []  # listening only


def test_socketcan_interfaces__found_by_link_type_in_sysfs(tmp_path: Path) -> None:
    from edge_agent.drivers.j1939.probe import socketcan_interfaces

    for name, link_type in (("can0", "280"), ("eth0", "1"), ("vcan0", "280\n"), ("broken", "x")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "type").write_text(link_type)
    (tmp_path / "notype").mkdir()
    assert socketcan_interfaces(tmp_path) == ["can0", "vcan0"]
    assert socketcan_interfaces(tmp_path / "missing") == []
