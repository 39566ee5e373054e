"""RF barcode scanners: serial (CDC-ACM / RS-232) and HID keyboard-wedge (Linux input events), config and drivers.

Wire facts followed:
- Serial scanners (Zebra/Symbol "Serial/USB CDC" host mode, Honeywell "USB Serial Emulation",
  Datalogic "USB-COM") send each code as ASCII/UTF-8 bytes, optionally wrapped in a
  programmable prefix/suffix (often STX ... ETX), then a terminator: CR by default, CR LF or LF
  where configured. GS1 codes keep their FNC1 separators as GS (0x1D); ISO/IEC 15434 envelopes
  use RS (0x1E), GS and EOT (0x04) -- these are data, not garbage.
- HID keyboard wedges type the code as key presses (Linux `struct input_event`, EV_KEY with
  value 1 down / 0 up / 2 repeat, codes from linux/input-event-codes.h), ending with Enter (or
  Tab). We read /dev/input/eventN directly (no evdev dependency) and grab it (EVIOCGRAB) so the
  codes do not also land in a logged-in console. Decoding assumes the scanner is set to the US
  keyboard layout, the factory default of every mainstream scanner.

Over 400 lines because the HID keymap (US layout, shift/caps/ctrl/keypad) sits beside the two
drivers that use it; serial framing is in protocol.py and the config in config.py.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import serial

from edge_agent.drivers.base import DeviceUnavailable, FrameError, open_serial
from edge_agent.drivers.readings import Scan
from edge_agent.drivers.scanner.config import HidScannerConfig, ScannerDriverConfig, SerialScannerConfig
from edge_agent.drivers.scanner.protocol import DATA_CONTROLS, MAX_CODE_BYTES, check_code, parse_scan, strip_affixes

# Names kept importable from here for code written before the config/protocol split.
__all__ = [
    "DATA_CONTROLS",
    "MAX_CODE_BYTES",
    "HidScanner",
    "HidScannerConfig",
    "ScannerDriver",
    "ScannerDriverConfig",
    "SerialScanner",
    "SerialScannerConfig",
    "check_code",
    "decode_keys",
    "find_input_device",
    "finish_hid_code",
    "make_scanner",
    "parse_scan",
]

log = logging.getLogger(__name__)

_READ_SLICE_S = 0.05


class SerialScanner:
    """Reads codes from a serial scanner; the port is opened with serial.serial_for_url."""

    def __init__(self, cfg: SerialScannerConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._ser: serial.Serial | None = None
        self._buf = bytearray()
        self._term = cfg.terminator.encode("ascii")

    def open(self) -> None:
        self.close()
        self._ser = open_serial(self.cfg.port, baudrate=self.cfg.baud, timeout=_READ_SLICE_S)
        self._buf.clear()

    def close(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                ser.close()

    def read(self, timeout_s: float) -> Scan | None:
        ser = self._ser
        if ser is None:
            raise DeviceUnavailable(f"{self.cfg.port}: not open")
        deadline = time.monotonic() + timeout_s
        while True:
            frame = self._next_frame()
            if frame is not None:
                code = parse_scan(frame, self.cfg)
                return Scan(
                    t_mono=time.monotonic(),
                    t_utc=datetime.now(UTC),
                    code=code,
                    source=self.name,
                    raw=frame.decode("latin-1"),
                )
            if time.monotonic() >= deadline:
                return None
            try:
                chunk = ser.read(max(1, ser.in_waiting))
            except (serial.SerialException, OSError) as exc:
                raise DeviceUnavailable(f"{self.cfg.port}: read failed: {exc}") from None
            self._buf += chunk

    def _next_frame(self) -> bytes | None:
        idx = self._buf.find(self._term)
        if idx < 0:
            if len(self._buf) > MAX_CODE_BYTES + 64:
                n = len(self._buf)
                self._buf.clear()
                raise FrameError(f"{self.cfg.port}: {n} bytes without a terminator {self.cfg.terminator!r}")
            return None
        frame = bytes(self._buf[: idx + len(self._term)])
        del self._buf[: idx + len(self._term)]
        if not frame.strip(b"\r\n"):
            return None  # the LF of a CR LF pair, or a blank line
        return frame


# ---------------------------------------------------------------- HID keyboard wedge

EV_KEY = 0x01
KEY_UP, KEY_DOWN, KEY_REPEAT = 0, 1, 2
KEY_TAB, KEY_ENTER, KEY_KPENTER = 15, 28, 96
KEY_LEFTSHIFT, KEY_RIGHTSHIFT = 42, 54
KEY_LEFTCTRL, KEY_RIGHTCTRL = 29, 97
KEY_LEFTALT, KEY_RIGHTALT = 56, 100
KEY_CAPSLOCK = 58

# linux/input-event-codes.h, US layout: code -> (unshifted, shifted).
_US_KEYS: dict[int, tuple[str, str]] = {
    2: ("1", "!"),
    3: ("2", "@"),
    4: ("3", "#"),
    5: ("4", "$"),
    6: ("5", "%"),
    7: ("6", "^"),
    8: ("7", "&"),
    9: ("8", "*"),
    10: ("9", "("),
    11: ("0", ")"),
    12: ("-", "_"),
    13: ("=", "+"),
    16: ("q", "Q"),
    17: ("w", "W"),
    18: ("e", "E"),
    19: ("r", "R"),
    20: ("t", "T"),
    21: ("y", "Y"),
    22: ("u", "U"),
    23: ("i", "I"),
    24: ("o", "O"),
    25: ("p", "P"),
    26: ("[", "{"),
    27: ("]", "}"),
    30: ("a", "A"),
    31: ("s", "S"),
    32: ("d", "D"),
    33: ("f", "F"),
    34: ("g", "G"),
    35: ("h", "H"),
    36: ("j", "J"),
    37: ("k", "K"),
    38: ("l", "L"),
    39: (";", ":"),
    40: ("'", '"'),
    41: ("`", "~"),
    43: ("\\", "|"),
    44: ("z", "Z"),
    45: ("x", "X"),
    46: ("c", "C"),
    47: ("v", "V"),
    48: ("b", "B"),
    49: ("n", "N"),
    50: ("m", "M"),
    51: (",", "<"),
    52: (".", ">"),
    53: ("/", "?"),
    57: (" ", " "),
    # keypad: scanners in "keypad emulation" send digits this way
    71: ("7", "7"),
    72: ("8", "8"),
    73: ("9", "9"),
    74: ("-", "-"),
    75: ("4", "4"),
    76: ("5", "5"),
    77: ("6", "6"),
    78: ("+", "+"),
    79: ("1", "1"),
    80: ("2", "2"),
    81: ("3", "3"),
    82: ("0", "0"),
    83: (".", "."),
    55: ("*", "*"),
    98: ("/", "/"),
}
_KEYPAD_DIGITS = {82: 0, 79: 1, 80: 2, 81: 3, 75: 4, 76: 5, 77: 6, 71: 7, 72: 8, 73: 9}
# Ctrl + key -> control character, as scanners send GS1 separators in keyboard mode.
_CTRL_KEYS = {27: "\x1d", 26: "\x1b", 43: "\x1c", 7: "\x1e", 32: "\x04"}
_SHIFTS = frozenset({KEY_LEFTSHIFT, KEY_RIGHTSHIFT})
_CTRLS = frozenset({KEY_LEFTCTRL, KEY_RIGHTCTRL})
_ALTS = frozenset({KEY_LEFTALT, KEY_RIGHTALT})


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """One EV_KEY input event: a Linux key code and 1 down / 0 up / 2 autorepeat."""

    code: int
    value: int


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the keyboard decoder carries between events: held modifiers and the code typed so far."""

    held: frozenset[int] = frozenset()
    caps: bool = False
    text: str = ""
    alt_digits: str = ""  # Alt + keypad digits (how scanners type characters outside the layout)
    overflow: bool = False
    unknown: tuple[int, ...] = field(default_factory=tuple)


def _key_char(code: int, held: frozenset[int], caps: bool) -> str | None:
    """The character one key press types under the held modifiers, or None outside the keymap."""
    if held & _CTRLS:
        return _CTRL_KEYS.get(code)
    pair = _US_KEYS.get(code)
    if pair is None:
        return None
    shifted = bool(held & _SHIFTS)
    if caps and pair[0].isalpha():
        shifted = not shifted
    return pair[1] if shifted else pair[0]


@dataclass(frozen=True, slots=True)
class TypedCode:
    """What was typed up to one terminator key: the text, keys outside the keymap, and whether it overflowed."""

    text: str
    unknown_keys: tuple[int, ...] = ()
    overflow: bool = False


def decode_keys(
    events: Iterable[KeyEvent], state: KeyState, terminator: str = "enter"
) -> tuple[list[TypedCode], KeyState]:
    """Feed key events through a US keymap; return what the terminator key completed and the new state."""
    codes: list[TypedCode] = []
    term_keys = (KEY_ENTER, KEY_KPENTER) if terminator == "enter" else (KEY_TAB,)
    held, caps, text, alt_digits = state.held, state.caps, state.text, state.alt_digits
    overflow, unknown = state.overflow, state.unknown
    for ev in events:
        code, value = ev.code, ev.value
        if value == KEY_UP:
            if code in _ALTS and alt_digits:
                n = int(alt_digits)
                if 0 < n < 0x110000:
                    text += chr(n)
                alt_digits = ""
            held = held - {code}
            continue
        if value not in (KEY_DOWN, KEY_REPEAT):
            continue
        if code in _SHIFTS or code in _CTRLS or code in _ALTS:
            held = held | {code}
            continue
        if code == KEY_CAPSLOCK:
            caps ^= value == KEY_DOWN  # autorepeat does not toggle
            continue
        if code in term_keys:
            if text or unknown or overflow:
                codes.append(TypedCode(text, unknown, overflow))
            text, overflow, unknown = "", False, ()
            continue
        if held & _ALTS and code in _KEYPAD_DIGITS:
            alt_digits = (alt_digits + str(_KEYPAD_DIGITS[code]))[-7:]
            continue
        ch = _key_char(code, held, caps)
        if ch is None:
            unknown = (*unknown, code)[:8]
            continue
        if len(text) >= MAX_CODE_BYTES:
            overflow = True
            continue
        text += ch
    return codes, KeyState(held, caps, text, alt_digits, overflow, unknown)


def finish_hid_code(typed: TypedCode, cfg: HidScannerConfig) -> str:
    """Turn what decode_keys completed into a code: FrameError for unknown keys, overflow, bad affixes."""
    raw = typed.text.encode("utf-8", "replace")
    if typed.overflow:
        raise FrameError(f"scan longer than {MAX_CODE_BYTES} characters (lost Enter?)")
    if typed.unknown_keys:
        raise FrameError(
            f"scan {raw[:40]!r}: key codes {list(typed.unknown_keys)} outside the US layout "
            "(set the scanner to the US keyboard layout)"
        )
    return check_code(strip_affixes(typed.text, cfg.prefix, cfg.suffix, raw), raw)


# struct input_event { struct timeval time; __u16 type; __u16 code; __s32 value; } in native
# layout: 24 bytes on 64-bit kernels (aarch64, x86_64), 16 on 32-bit time_t.
INPUT_EVENT = struct.Struct("@llHHi")
# _IOW('E', 0x90, int): grab the device so its keys reach only this reader.
EVIOCGRAB = 0x40044590


def find_input_device(name: str, devices_text: str) -> str | None:
    """The /dev/input/eventN of the device called `name` in /proc/bus/input/devices text, if any keyboard has it."""
    for block in devices_text.split("\n\n"):
        dev_name = handlers = None
        for line in block.splitlines():
            if line.startswith("N: Name="):
                dev_name = line[len("N: Name=") :].strip().strip('"')
            elif line.startswith("H: Handlers="):
                handlers = line[len("H: Handlers=") :].split()
        if dev_name == name and handlers:
            for h in handlers:
                if h.startswith("event"):
                    return f"/dev/input/{h}"
    return None


class HidScanner:
    """Reads a keyboard-wedge scanner's key events from its input device and decodes them to codes."""

    def __init__(self, cfg: HidScannerConfig, devices_file: Path = Path("/proc/bus/input/devices")) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._devices_file = devices_file
        self._fd: int | None = None
        self._buf = b""
        self._state = KeyState()
        self._ready: list[TypedCode] = []

    def _resolve(self) -> str:
        dev = self.cfg.device
        if dev.startswith("/"):
            return dev
        try:
            text = self._devices_file.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise DeviceUnavailable(f"{self._devices_file}: cannot read: {exc}") from None
        path = find_input_device(dev, text)
        if path is None:
            raise DeviceUnavailable(f"no input device named {dev!r} (see /proc/bus/input/devices; plugged in?)")
        return path

    def open(self) -> None:
        self.close()
        path = self._resolve()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError:
            raise DeviceUnavailable(f"{path}: permission denied (add the service user to the 'input' group)") from None
        except OSError as exc:
            raise DeviceUnavailable(f"{path}: cannot open: {exc.strerror}") from None
        if self.cfg.grab:
            try:
                fcntl.ioctl(fd, EVIOCGRAB, 1)
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    os.close(fd)
                    raise DeviceUnavailable(f"{path}: grabbed by another program") from None
                log.debug("%s: not an evdev device, reading without grab (%s)", path, exc.strerror)
        self._fd = fd
        self._buf = b""
        self._state = KeyState()
        self._ready = []

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing releases the grab

    def read(self, timeout_s: float) -> Scan | None:
        fd = self._fd
        if fd is None:
            raise DeviceUnavailable(f"{self.cfg.device}: not open")
        deadline = time.monotonic() + timeout_s
        while not self._ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
                if not ready:
                    continue
                chunk = os.read(fd, INPUT_EVENT.size * 64)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise DeviceUnavailable(f"{self.cfg.device}: read failed: {exc.strerror}") from None
            if not chunk:
                raise DeviceUnavailable(f"{self.cfg.device}: device closed")
            self._feed(chunk)
        typed = self._ready.pop(0)
        code = finish_hid_code(typed, self.cfg)
        return Scan(t_mono=time.monotonic(), t_utc=datetime.now(UTC), code=code, source=self.name, raw=code)

    def _feed(self, chunk: bytes) -> None:
        data = self._buf + chunk
        n = len(data) // INPUT_EVENT.size * INPUT_EVENT.size
        self._buf = data[n:]
        events = [
            KeyEvent(code, value)
            for _sec, _usec, etype, code, value in INPUT_EVENT.iter_unpack(data[:n])
            if etype == EV_KEY
        ]
        codes, self._state = decode_keys(events, self._state, self.cfg.terminator)
        self._ready.extend(codes)


ScannerDriver = SerialScanner | HidScanner


def make_scanner(cfg: ScannerDriverConfig) -> ScannerDriver:
    """The driver for one [bench.scanner] section (no I/O until open())."""
    if isinstance(cfg, SerialScannerConfig):
        return SerialScanner(cfg)
    return HidScanner(cfg)
