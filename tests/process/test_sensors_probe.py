"""Port probes: pure classifiers on real recordings and arbitrary bytes, and probe_port against every serial twin."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.cli.probe import (
    DEFAULT_PLAN,
    classify_elm327,
    classify_modbus,
    classify_mtsics,
    classify_nmea,
    probe_port,
)
from edge_agent.drivers.elm327.twin import Elm327Twin
from edge_agent.drivers.modbus.twin import ModbusTwin, crc16, xy_md02_scenario
from edge_agent.drivers.nmea.twin import Leg, NmeaTwin
from edge_agent.drivers.scale.twin import ScaleTwin

DATA = Path(__file__).parents[1] / "data"
# Per protocol and baud on a pty, where baud rates do not matter. A twin answers in milliseconds; the
# budget is for a machine under heavy load (0.3 s once lost MT-SICS's I4 half at load 6), and is only
# waited out in full on the protocols a port stays silent to.
FAST = 1.0


# ---------------------------------------------------------------- classifiers


def test_classify_nmea__real_gpsd_log_is_recognised() -> None:
    raw = (DATA / "nmea" / "bu353s4.log").read_bytes()[:4000]
    kinds = classify_nmea(raw)
    assert kinds is not None and kinds.startswith("GP")


def test_classify_nmea__bad_checksum_is_not_nmea() -> None:
    assert classify_nmea(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n") == "GPGGA"
    assert classify_nmea(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48\r\n") is None


def test_classify_elm327__ati_answer() -> None:
    assert classify_elm327(b"ATI\rELM327 v1.5\r\r>") == "ELM327 v1.5"
    assert classify_elm327(b"?\r\r>") is None


def test_classify_mtsics__i4_and_weight_answers() -> None:
    assert classify_mtsics(b'I4 A "0123456789"\r\n') == "serial number 0123456789"
    assert classify_mtsics(b"S S     100.00 g\r\n") == "stable weight 100.00 g"
    assert classify_mtsics(b"S D      12.5 kg\r\n") == "dynamic weight 12.5 kg"
    assert classify_mtsics(b"ES\r\n") is None


def test_classify_modbus__captured_reply_and_exception() -> None:
    # A reply to "read 1 holding register" from the sigrok flow-meter capture (unit 247).
    assert (
        classify_modbus(bytes.fromhex("F7 03 02 00 08 71 97"), unit_id=0xF7)
        == "unit 247 answered, holding register 0 = 8"
    )
    exc = bytes((1, 0x83, 2))
    exc += struct.pack("<H", crc16(exc))
    assert classify_modbus(b"\x00\xff" + exc) == "unit 1 answered exception 2 (illegal data address)"
    assert classify_modbus(bytes.fromhex("F7 03 02 00 08 71 98"), unit_id=0xF7) is None  # CRC off by one


@given(st.binary(max_size=400))
@settings(max_examples=400, deadline=None)
def test_classifiers__no_byte_string_crashes(data: bytes) -> None:
    for result in (classify_nmea(data), classify_elm327(data), classify_mtsics(data), classify_modbus(data)):
        assert result is None or isinstance(result, str)


# ---------------------------------------------------------------- probe_port against twins


def test_probe_port__modbus_meter(tmp_path: Path) -> None:
    with ModbusTwin(tmp_path / "tty", scenario=xy_md02_scenario()) as twin:
        twin.bank.set_uint16("holding", 0, 4242)
        r = probe_port(twin.path, timeout_s=FAST)
    assert (r.protocol, r.baud, r.error) == ("modbus", 9600, None)
    assert r.detail == "unit 1 answered, holding register 0 = 4242"


def test_probe_port__modbus_meter_without_register_0_still_counts(tmp_path: Path) -> None:
    with ModbusTwin(tmp_path / "tty", scenario=xy_md02_scenario()) as twin:
        r = probe_port(twin.path, timeout_s=FAST)
    assert r.protocol == "modbus" and "exception 2" in r.detail


def test_probe_port__nmea_gps(tmp_path: Path) -> None:
    with NmeaTwin(tmp_path / "tty", legs=[Leg(600, 50.0, 90.0)], epoch_s=1.0, speedup=10.0) as twin:
        r = probe_port(twin.path, timeout_s=FAST)
    assert r.protocol == "nmea" and r.detail.startswith("GN")


def test_probe_port__elm327_adapter(tmp_path: Path) -> None:
    with Elm327Twin(tmp_path / "tty") as twin:
        r = probe_port(twin.path, timeout_s=FAST)
    assert (r.protocol, r.detail) == ("elm327", "ELM327 v1.5")


def test_probe_port__mt_sics_scale(tmp_path: Path) -> None:
    with ScaleTwin(tmp_path / "tty", fmt="mt-sics") as twin:
        r = probe_port(twin.path, timeout_s=FAST)
    assert r.protocol == "mt-sics" and r.detail.startswith("serial number")


def test_probe_port__silent_port_is_nothing(tmp_path: Path) -> None:
    with ModbusTwin(tmp_path / "tty", unit_id=9) as twin:  # answers only unit 9: silent to the probe
        r = probe_port(twin.path, timeout_s=0.2, plan=DEFAULT_PLAN[:4])
    assert (r.protocol, r.error) == (None, None)
    assert r.detail == "no known protocol answered"


def test_probe_port__missing_port_reports_the_error(tmp_path: Path) -> None:
    r = probe_port(str(tmp_path / "ttyUSB7"), timeout_s=0.2)
    assert r.protocol is None
    assert r.error is not None and "ttyUSB7" in r.error


def test_probe_port__a_regular_file_is_not_a_serial_device(tmp_path: Path) -> None:
    regular = tmp_path / "gps.log"
    regular.write_bytes((Path(__file__).parents[1] / "data" / "nmea" / "nl2008u.log").read_bytes())
    r = probe_port(str(regular), timeout_s=0.2)
    assert r.protocol is None
    assert r.error == (
        f"{regular}: cannot open: a regular file, not a serial device (expected a tty such as /dev/ttyUSB0, "
        "a pty or a pyserial URL such as socket://host:port)"
    )


def test_probe_port__a_directory_is_not_a_serial_device(tmp_path: Path) -> None:
    # /dev/serial/by-id/ itself rather than the adapter's link in it: pyserial said '[Errno 21] could not open
    # port ...: [Errno 21] Is a directory', and doctor told the technician to check the power and the wiring.
    from edge_agent.drivers.modbus.config import ModbusMeterConfig
    from edge_agent.drivers.modbus.probe import probe as probe_modbus

    folder = tmp_path / "by-id"
    folder.mkdir()
    r = probe_port(str(folder), timeout_s=0.2)
    assert r.protocol is None
    assert r.error == (
        f"{folder}: cannot open: a directory, not a serial device (expected a tty such as /dev/ttyUSB0, "
        "a pty or a pyserial URL such as socket://host:port)"
    )
    outcome = probe_modbus(ModbusMeterConfig(kind="modbus", name="m", port=str(folder), map="xy-md02"), 0.2)
    assert outcome.status == "fail" and outcome.message == r.error
    assert outcome.remedy.startswith("set the port to the device's serial port") and "wiring" not in outcome.remedy


def test_device_probes__a_regular_file_as_port_is_not_told_to_plug_the_device_in(tmp_path: Path) -> None:
    """doctor's remedy for a GPS or OBD port that is a recorded log: set the port, not "plug the GPS in"."""
    from edge_agent.drivers.elm327.config import Elm327Config
    from edge_agent.drivers.elm327.probe import probe as probe_elm327
    from edge_agent.drivers.nmea.config import NmeaConfig
    from edge_agent.drivers.nmea.probe import probe as probe_nmea

    regular = tmp_path / "gps.log"
    regular.write_bytes((DATA / "nmea" / "nl2008u.log").read_bytes())
    for outcome in (
        probe_nmea(NmeaConfig(kind="nmea", port=str(regular)), 0.2),
        probe_elm327(Elm327Config(kind="elm327", port=str(regular)), 0.2),
    ):
        assert outcome.status == "fail" and "a regular file, not a serial device" in outcome.message
        assert outcome.remedy.startswith("set the port to the device's serial port") and "plug" not in outcome.remedy
        assert "edge-agent telematics replay" in outcome.remedy
    # a device not plugged in: as before
    missing = probe_nmea(NmeaConfig(kind="nmea", port=str(tmp_path / "ttyACM9")), 0.2)
    assert missing.status == "fail" and missing.remedy.startswith("plug the GPS in")


def test_doctor__a_serial_scanner_is_checked_by_opening_its_port(tmp_path: Path) -> None:
    """doctor said it had no probe for kind 'serial'; a scanner sends nothing until it reads a code."""
    from edge_agent.cli.doctor.devices import check_serial_device
    from edge_agent.drivers.scanner.config import SerialScannerConfig
    from edge_agent.drivers.scanner.twin import ScannerTwin

    with ScannerTwin(tmp_path / "ttyACM0") as twin:
        ok = check_serial_device("bench.scanner", SerialScannerConfig(kind="serial", port=twin.path, baud=115200))
    assert (ok.name, ok.status) == ("bench.scanner (serial)", "ok"), ok.line()
    assert ok.message == f"{twin.path}: opens at 115200 baud (a serial device sends only when used)"
    missing = check_serial_device("bench.scanner", SerialScannerConfig(kind="serial", port=str(tmp_path / "ttyACM9")))
    assert missing.status == "fail" and "cannot open" in missing.message and "plug the device in" in missing.remedy
    regular = tmp_path / "scans.txt"
    regular.write_text("DD1001\r")
    logfile = check_serial_device("bench.scanner", SerialScannerConfig(kind="serial", port=str(regular)))
    assert logfile.status == "fail" and logfile.remedy.startswith("set the port to the device's serial port")


def test_probe_port__unknown_protocol_in_plan_is_a_value_error(tmp_path: Path) -> None:
    with ModbusTwin(tmp_path / "tty") as twin, pytest.raises(ValueError, match="unknown protocol 'can'"):
        probe_port(twin.path, timeout_s=0.1, plan=[("can", 9600)])


def test_sensors_list__says_which_ecu_answers_what_behind_an_elm327(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from edge_agent.cli.main import main
    from edge_agent.drivers.elm327.twin import drive_scenario

    twin = Elm327Twin(
        tmp_path / "obd", scenario=drive_scenario(has_pid5e=False, has_maf=False), second_ecu=frozenset({0x0D, 0x10})
    ).start()
    try:
        rc = main(["sensors", "list", "--port", twin.path, "--json", "--timeout-s", "0.5"])
    finally:
        twin.stop()
    assert rc == 0
    (entry,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert entry["likely"] == "elm327"
    assert "ECU 7E8" in entry["detail"] and "ECU 7E9" in entry["detail"] and "10 MAF" in entry["detail"]


def test_probes__leave_a_port_the_agent_holds_alone(tmp_path: Path) -> None:
    """doctor and sensors list beside the running agent: a port its driver holds is reported busy, and not
    one byte is written to it (an ATZ to a live adapter resets it under the agent)."""
    from edge_agent.drivers.elm327.config import Elm327Config
    from edge_agent.drivers.elm327.driver import Elm327Driver
    from edge_agent.drivers.elm327.probe import probe as probe_elm327
    from edge_agent.drivers.nmea.config import NmeaConfig
    from edge_agent.drivers.nmea.driver import NmeaDriver
    from edge_agent.drivers.nmea.probe import probe as probe_nmea

    with Elm327Twin(tmp_path / "obd") as twin:
        cfg = Elm327Config(kind="elm327", port=twin.path)
        agent = Elm327Driver(cfg)
        agent.open()
        try:
            asked = list(twin.requests)
            assert "ATZ" in asked or "ATWS" in asked  # the agent's own start-up reached the adapter
            outcome = probe_elm327(cfg, 0.5)
            scan = probe_port(twin.path, timeout_s=FAST)
            assert (outcome.status, scan.detail) == ("ok", "busy")
            assert "in use by another process" in outcome.message and "not probed" in outcome.message
            assert scan.error is not None and "the running agent" in scan.error
            assert twin.requests == asked, "the probes wrote nothing to the adapter"
        finally:
            agent.close()
        freed = probe_elm327(cfg, 2.0)
        assert freed.status == "ok" and "adapter answers ELM327 v1.5" in freed.message  # free again: probed
    with NmeaTwin(tmp_path / "gps", legs=[Leg(600, 50.0, 90.0)], epoch_s=1.0, speedup=10.0) as gps:
        gps_cfg = NmeaConfig(kind="nmea", port=gps.path)
        receiver = NmeaDriver(gps_cfg)
        receiver.open()
        try:
            outcome = probe_nmea(gps_cfg, 0.5)
            assert outcome.status == "ok" and "not probed" in outcome.message
        finally:
            receiver.close()
        assert "NMEA sentence(s) with good checksums" in probe_nmea(gps_cfg, 5.0).message  # free again: probed
