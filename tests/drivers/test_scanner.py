"""Barcode scanners: serial frames from a pty twin, keyboard-wedge key events from a FIFO twin, pure decoders."""

from __future__ import annotations

import contextlib
import string
import struct
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.drivers.base import DeviceUnavailable, DriverRunner, FrameError
from edge_agent.drivers.readings import Scan
from edge_agent.drivers.scanner.driver import (
    HidScanner,
    HidScannerConfig,
    KeyEvent,
    KeyState,
    SerialScanner,
    SerialScannerConfig,
    decode_keys,
    find_input_device,
    finish_hid_code,
    parse_scan,
)
from edge_agent.drivers.scanner.twin import HidScannerTwin, ScannerTwin, key_events_for
from edge_agent.errors import ConfigError
from edge_agent.settings import parse_config

STX, ETX, GS = "\x02", "\x03", "\x1d"


def _cfg(**kw: object) -> SerialScannerConfig:
    return SerialScannerConfig.model_validate({"kind": "serial", "port": "/dev/null", **kw})


def _hid_cfg(device: str, **kw: object) -> HidScannerConfig:
    return HidScannerConfig.model_validate({"kind": "hid", "device": device, **kw})


def _read(driver: SerialScanner | HidScanner, timeout_s: float = 2.0) -> Scan | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        scan = driver.read(0.2)
        if scan is not None:
            return scan
    return None


# ---------------------------------------------------------------- parse_scan


def test_parse_scan__plain_code_with_cr() -> None:
    assert parse_scan(b"9780804816632\r", _cfg()) == "9780804816632"


def test_parse_scan__stx_etx_wrapped_code() -> None:
    cfg = _cfg(prefix=STX, suffix=ETX, terminator="\r\n")
    assert parse_scan(b"\x02RMA-2024-0042\x03\r\n", cfg) == "RMA-2024-0042"


def test_parse_scan__missing_prefix_is_named() -> None:
    with pytest.raises(FrameError, match=r"expected prefix '\\x02'"):
        parse_scan(b"RMA-2024-0042\x03\r", _cfg(prefix=STX, suffix=ETX))


def test_parse_scan__gs1_separators_are_data() -> None:
    raw = b"0109501101530003" + GS.encode() + b"10ABC123\r"
    assert parse_scan(raw, _cfg()) == "0109501101530003\x1d10ABC123"


def test_parse_scan__other_control_characters_are_rejected() -> None:
    with pytest.raises(FrameError, match=r"control character '\\x07' inside the code"):
        parse_scan(b"AB\x07CD\r", _cfg())


def test_parse_scan__wrong_encoding_says_which() -> None:
    with pytest.raises(FrameError, match=r"not utf-8 text \(check the scanner's encoding\)"):
        parse_scan(b"\xff\xfe12\r", _cfg())
    assert parse_scan(b"Caf\xe9\r", _cfg(encoding="latin-1")) == "Café"


def test_parse_scan__stray_lf_from_crlf_scanner_is_ignored() -> None:
    assert parse_scan(b"\nSKU-1\r", _cfg()) == "SKU-1"


def test_parse_scan__empty_frame_is_an_error() -> None:
    with pytest.raises(FrameError, match="empty code"):
        parse_scan(b"\r", _cfg())


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from(["", STX]), st.sampled_from(["\r", "\n", "\r\n"]))
def test_parse_scan__no_bytes_crash_it(data: bytes, prefix: str, term: str) -> None:
    cfg = _cfg(prefix=prefix, terminator=term)
    try:
        code = parse_scan(data, cfg)
    except FrameError:
        return
    assert code and code.encode("utf-8") in data


@settings(max_examples=200)
@given(
    st.text(alphabet=st.characters(codec="utf-8").filter(str.isprintable), min_size=1, max_size=200).filter(
        lambda s: not s.isspace()
    )
)
def test_parse_scan__framed_code_round_trips(code: str) -> None:
    cfg = _cfg(prefix=STX, suffix=ETX, terminator="\r\n")
    assert parse_scan((STX + code + ETX + "\r\n").encode(), cfg) == code


# ---------------------------------------------------------------- serial driver + pty twin


def test_serial_scanner__reads_codes_typed_by_the_twin(tmp_path: Path) -> None:
    with ScannerTwin(tmp_path / "ttyACM0", prefix=STX, suffix=ETX, terminator="\r\n") as twin:
        drv = SerialScanner(_cfg(port=twin.path, prefix=STX, suffix=ETX, terminator="\r\n", name="bench-1"))
        drv.open()
        qr = "https://returns.example/r/" + "A1" * 150  # 326 bytes: several USB packets
        twin.scan("9780804816632")
        twin.scan(qr)
        a, b = _read(drv), _read(drv)
        drv.close()
        drv.close()
    assert a is not None and b is not None
    assert (a.code, a.source) == ("9780804816632", "bench-1")
    assert a.raw == STX + "9780804816632" + ETX + "\r\n"
    assert b.code == qr


def test_serial_scanner__line_noise_is_a_frame_error_and_the_next_code_still_arrives(tmp_path: Path) -> None:
    with ScannerTwin(tmp_path / "ttyUSB0") as twin:
        drv = SerialScanner(_cfg(port=twin.path))
        drv.open()
        twin.raw(b"\x00\x07\xff\r")
        twin.scan("SKU-778")
        with pytest.raises(FrameError, match="scan"):
            _read(drv)
        scan = _read(drv)
        drv.close()
    assert scan is not None and scan.code == "SKU-778"


def test_serial_scanner__lost_terminator_is_bounded(tmp_path: Path) -> None:
    with ScannerTwin(tmp_path / "ttyUSB0") as twin:
        drv = SerialScanner(_cfg(port=twin.path))
        drv.open()
        twin.raw(b"9" * 5000)
        with pytest.raises(FrameError, match=r"bytes without a terminator '\\r'"):
            _read(drv, 3.0)
        twin.scan("OK-1")
        scan = _read(drv)
        drv.close()
    assert scan is not None and scan.code.endswith("OK-1")


def test_serial_scanner__missing_port_is_device_unavailable(tmp_path: Path) -> None:
    drv = SerialScanner(_cfg(port=str(tmp_path / "ttyACM9")))
    with pytest.raises(DeviceUnavailable, match=r"ttyACM9: cannot open"):
        drv.open()


def test_serial_scanner__unplug_replug_reconnects_through_the_runner(tmp_path: Path) -> None:
    got: list[Scan] = []
    stop = threading.Event()
    with ScannerTwin(tmp_path / "ttyACM0", scenario=[(0.1, "FIRST")]) as twin:
        runner = DriverRunner(
            SerialScanner(_cfg(port=twin.path)),
            got.append,
            stop,
            backoff_min_s=0.05,
            backoff_max_s=0.2,
            read_timeout_s=0.1,
        )
        runner.start()
        try:
            _wait(lambda: len(got) == 1)
            twin.unplug()
            _wait(lambda: runner.reconnects >= 1)
            twin.replug()
            _wait(lambda: runner.connected)
            twin.scan("SECOND")
            _wait(lambda: len(got) == 2)
        finally:
            stop.set()
            runner.join()
    assert [s.code for s in got] == ["FIRST", "SECOND"]
    assert runner.reconnects >= 1


def _wait(cond: object, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# ---------------------------------------------------------------- HID key decoding


def _keys(pairs: list[tuple[int, int]]) -> list[KeyEvent]:
    return [KeyEvent(code, value) for code, value in pairs]


def test_decode_keys__shifted_and_plain_characters() -> None:
    codes, state = decode_keys(_keys(key_events_for("Ab1-!{")), KeyState())
    assert [c.text for c in codes] == ["Ab1-!{"]
    assert state.text == "" and state.held == frozenset()


def test_decode_keys__code_split_across_reads_keeps_state() -> None:
    events = _keys(key_events_for("RMA-42"))
    first, state = decode_keys(events[:7], KeyState())
    assert first == []
    rest, state = decode_keys(events[7:], state)
    assert [c.text for c in rest] == ["RMA-42"]


def test_decode_keys__keypad_digits_and_caps_lock() -> None:
    # KEY_CAPSLOCK, a, b, KEY_CAPSLOCK, KP1, KP2, KEY_KPENTER
    events = [
        (58, 1),
        (58, 0),
        (30, 1),
        (30, 0),
        (48, 1),
        (48, 0),
        (58, 1),
        (58, 0),
        (79, 1),
        (79, 0),
        (80, 1),
        (80, 0),
        (96, 1),
        (96, 0),
    ]
    codes, _ = decode_keys(_keys(events), KeyState())
    assert [c.text for c in codes] == ["AB12"]


def test_decode_keys__alt_keypad_types_characters_outside_the_layout() -> None:
    # Alt held, keypad 2 3 3, Alt released -> chr(233) "é"; then Enter.
    events = [(56, 1), (80, 1), (80, 0), (81, 1), (81, 0), (81, 1), (81, 0), (56, 0), (28, 1), (28, 0)]
    codes, _ = decode_keys(_keys(events), KeyState())
    assert [c.text for c in codes] == ["é"]


def test_decode_keys__ctrl_bracket_is_gs1_separator() -> None:
    codes, _ = decode_keys(_keys(key_events_for("01" + GS + "10")), KeyState())
    assert [c.text for c in codes] == ["01\x1d10"]


def test_decode_keys__tab_terminator() -> None:
    codes, state = decode_keys(_keys(key_events_for("X9", "tab")), KeyState(), terminator="tab")
    assert [c.text for c in codes] == ["X9"]
    codes, state = decode_keys(_keys(key_events_for("X9", "enter")), state, terminator="tab")
    assert codes == [] and state.text == "X9"


def test_finish_hid_code__unknown_keys_name_the_layout() -> None:
    # KEY_F1 (59) typed inside a code: a scanner set to another layout or function keys.
    codes, _ = decode_keys(_keys([(30, 1), (30, 0), (59, 1), (59, 0), (28, 1), (28, 0)]), KeyState())
    with pytest.raises(FrameError, match=r"key codes \[59\] outside the US layout \(set the scanner to the US"):
        finish_hid_code(codes[0], _hid_cfg("/dev/input/event0"))


def test_finish_hid_code__strips_prefix_and_suffix() -> None:
    codes, _ = decode_keys(_keys(key_events_for("#SKU-1$")), KeyState())
    assert finish_hid_code(codes[0], _hid_cfg("x", prefix="#", suffix="$")) == "SKU-1"
    with pytest.raises(FrameError, match=r"expected suffix '%'"):
        finish_hid_code(codes[0], _hid_cfg("x", prefix="#", suffix="%"))


_TYPEABLE = string.ascii_letters + string.digits + string.punctuation + " " + GS


@settings(max_examples=200)
@given(st.text(alphabet=_TYPEABLE, min_size=1, max_size=80).filter(lambda s: not s.isspace()))
def test_decode_keys__anything_the_twin_types_is_read_back(text: str) -> None:
    codes, _ = decode_keys(_keys(key_events_for(text)), KeyState())
    assert [finish_hid_code(c, _hid_cfg("x")) for c in codes] == [text]


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(-1, 3)), max_size=200))
def test_decode_keys__no_event_sequence_crashes_it(events: list[tuple[int, int]]) -> None:
    codes, state = decode_keys(_keys(events), KeyState())
    for c in codes:
        with contextlib.suppress(FrameError):
            assert finish_hid_code(c, _hid_cfg("x"))
    assert len(state.text) <= 4096 + 8


# ---------------------------------------------------------------- HID driver + FIFO twin


def test_hid_scanner__reads_input_events_from_the_twin(tmp_path: Path) -> None:
    with HidScannerTwin(tmp_path / "event7") as twin:
        drv = HidScanner(_hid_cfg(str(twin.path), name="wedge"))
        drv.open()
        twin.scan("RMA-2024-0042")
        twin.scan("9780804816632")
        a, b = _read(drv), _read(drv)
        assert drv.read(0.1) is None
        drv.close()
    assert a is not None and b is not None
    assert (a.code, a.source, b.code) == ("RMA-2024-0042", "wedge", "9780804816632")


def test_hid_scanner__half_events_across_reads_are_reassembled(tmp_path: Path) -> None:
    with HidScannerTwin(tmp_path / "event7") as twin:
        drv = HidScanner(_hid_cfg(str(twin.path)))
        drv.open()
        # Write the key stream in odd-sized pieces: the driver must not lose event boundaries.
        ev = struct.Struct("@llHHi")
        blob = b"".join(ev.pack(0, 0, 1, c, v) for c, v in key_events_for("Z-80"))
        with open(twin.path, "wb", buffering=0) as w:  # a FIFO, written in raw pieces
            for i in range(0, len(blob), 7):
                w.write(blob[i : i + 7])
        scan = _read(drv)
        drv.close()
    assert scan is not None and scan.code == "Z-80"


def test_hid_scanner__device_gone_is_device_unavailable(tmp_path: Path) -> None:
    twin = HidScannerTwin(tmp_path / "event7").start()
    drv = HidScanner(_hid_cfg(str(twin.path)))
    drv.open()
    twin.stop()  # the only writer goes away: the reader sees end of file, as on unplug
    with pytest.raises(DeviceUnavailable, match="device closed"):
        _read(drv)
    drv.close()
    with pytest.raises(DeviceUnavailable, match=r"event7: cannot open"):
        drv.open()


_PROC_DEVICES = """I: Bus=0003 Vendor=046d Product=c31c Version=0110
N: Name="Logitech USB Keyboard"
P: Phys=usb-0000:01:00.0-1.2/input0
H: Handlers=sysrq kbd leds event0
B: EV=120013

I: Bus=0003 Vendor=05e0 Product=1200 Version=0111
N: Name="Symbol Technologies, Inc, 2008 Symbol Bar Code Scanner"
P: Phys=usb-0000:01:00.0-1.3/input0
S: Sysfs=/devices/platform/scb/fd500000.pcie/usb1/1-1/1-1.3/1-1.3:1.0/input/input5
U: Uniq=S/N:8F1A2B
H: Handlers=sysrq kbd leds event3
B: EV=120013
"""


def test_find_input_device__by_name() -> None:
    name = "Symbol Technologies, Inc, 2008 Symbol Bar Code Scanner"
    assert find_input_device(name, _PROC_DEVICES) == "/dev/input/event3"
    assert find_input_device("Honeywell 1900", _PROC_DEVICES) is None


def test_hid_scanner__unknown_device_name_is_device_unavailable(tmp_path: Path) -> None:
    devices = tmp_path / "devices"
    devices.write_text(_PROC_DEVICES)
    drv = HidScanner(_hid_cfg("Honeywell 1900"), devices_file=devices)
    with pytest.raises(DeviceUnavailable, match=r"no input device named 'Honeywell 1900'"):
        drv.open()


# ---------------------------------------------------------------- config


def test_scanner_config__terminator_must_be_cr_lf_or_crlf() -> None:
    with pytest.raises(ConfigError, match=r'bench\.scanner\.terminator: expected .*"\\r\\n", got "\t"'):
        parse_config(
            {
                "profile": "bench",
                "device": {"id": "b1", "site": "s1"},
                "bench": {"scanner": {"kind": "serial", "port": "/dev/ttyACM0", "terminator": "\t"}},
            },
            "config.toml",
        )


def test_scanner_config__kind_is_required() -> None:
    with pytest.raises(ConfigError, match=r'bench\.scanner: expected a table with kind = "serial" or "hid"'):
        parse_config(
            {"profile": "bench", "device": {"id": "b1", "site": "s1"}, "bench": {"scanner": {"port": "/dev/ttyACM0"}}},
            "config.toml",
        )
