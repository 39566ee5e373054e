"""Protocol probes for a serial port: is an NMEA GPS, an ELM327, an MT-SICS scale or a Modbus meter on it?"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import serial

from edge_agent.drivers.modbus.driver import EXCEPTION_NAMES, build_read_request, crc16_modbus

log = logging.getLogger(__name__)

# (protocol, baud) in the order tried. Listening for NMEA comes first because it sends nothing
# to the device. Baud rates are each device family's usual defaults: NMEA 0183 4800 (standard)
# or 9600 (most USB receivers); ELM327 38400 (v1.x default) or 9600 (many clones); MT-SICS
# 9600; Modbus RTU 9600, 19200 (the spec's default) or 2400 (Eastron SDM120 factory setting).
DEFAULT_PLAN: tuple[tuple[str, int], ...] = (
    ("nmea", 9600),
    ("elm327", 9600),
    ("mt-sics", 9600),
    ("modbus", 9600),
    ("nmea", 4800),
    ("elm327", 38400),
    ("modbus", 19200),
    ("modbus", 2400),
)
PROTOCOLS = ("nmea", "elm327", "mt-sics", "modbus")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What a port looked like: the protocol heard (None: nothing recognised) and how."""

    url: str
    protocol: str | None
    baud: int | None
    detail: str  # what was heard, or why nothing was
    error: str | None = None  # the port could not be opened (missing, busy, no permission)


# ---------------------------------------------------------------- pure classifiers

_NMEA = re.compile(rb"\$([A-Z][A-Z0-9]{2,6}),([^*\r\n$]*)\*([0-9A-Fa-f]{2})")
_ELM = re.compile(rb"ELM327 v(\d+\.\d+[A-Za-z]?)")
_SICS_I4 = re.compile(rb'(?:^|[\r\n])I4 A "?([^"\r\n]*)"?\r?\n')
_SICS_S = re.compile(rb"(?:^|[\r\n])S ([SD]) +(-?[0-9.]+) +([a-zA-Z]+)\r?\n")


def classify_nmea(data: bytes) -> str | None:
    """The sentence types of NMEA sentences whose checksum is right, e.g. "GPRMC, GPGGA"."""
    kinds: list[str] = []
    for m in _NMEA.finditer(data):
        body = m.group(1) + b"," + m.group(2)  # between "$" and "*"
        cs = 0
        for b in body:
            cs ^= b
        if cs == int(m.group(3), 16):
            kind = m.group(1).decode("ascii")
            if kind not in kinds:
                kinds.append(kind)
    return ", ".join(kinds[:4]) if kinds else None


def classify_elm327(data: bytes) -> str | None:
    """ "ELM327 v1.5" when an ATI answer is in `data`."""
    m = _ELM.search(data)
    return f"ELM327 v{m.group(1).decode('ascii')}" if m else None


def classify_mtsics(data: bytes) -> str | None:
    """An MT-SICS answer to I4 (serial number) or S (stable / dynamic weight)."""
    if m := _SICS_I4.search(data):
        return f"serial number {m.group(1).decode('ascii', 'replace')}"
    if m := _SICS_S.search(data):
        state = "stable" if m.group(1) == b"S" else "dynamic"
        return f"{state} weight {m.group(2).decode('ascii')} {m.group(3).decode('ascii')}"
    return None


def classify_modbus(data: bytes, unit_id: int = 1) -> str | None:
    """A CRC-correct reply from `unit_id` to a holding-register read (a value or an exception)."""
    for i in range(max(0, len(data) - 4)):
        if data[i] != unit_id:
            continue
        fn = data[i + 1]
        if fn == 0x03 and i + 2 < len(data):
            n = 5 + data[i + 2]
        elif fn == 0x83:
            n = 5
        else:
            continue
        frame = data[i : i + n]
        if len(frame) < n or crc16_modbus(frame[:-2]) != (frame[-2] | frame[-1] << 8):
            continue
        if fn == 0x83:
            return f"unit {unit_id} answered exception {frame[2]} ({EXCEPTION_NAMES.get(frame[2], 'unknown')})"
        if frame[2] >= 2:
            return f"unit {unit_id} answered, holding register 0 = {frame[3] << 8 | frame[4]}"
        return f"unit {unit_id} answered"
    return None


# ---------------------------------------------------------------- probing a port


def _exchange(
    port: serial.Serial, request: bytes, timeout_s: float, classify: Callable[[bytes], str | None]
) -> str | None:
    """Send `request` (may be empty: just listen), read until recognised or timeout_s."""
    port.reset_input_buffer()
    if request:
        port.write(request)
        port.flush()
    buf = bytearray()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        chunk = port.read(max(1, min(port.in_waiting, 1024)))
        if chunk:
            buf += chunk[:4096]
            if (hit := classify(bytes(buf))) is not None:
                return hit
    return classify(bytes(buf))


def _try(port: serial.Serial, protocol: str, timeout_s: float) -> str | None:
    if protocol == "nmea":
        return _exchange(port, b"", timeout_s, classify_nmea)
    if protocol == "elm327":
        return _exchange(port, b"ATI\r", timeout_s, classify_elm327)
    if protocol == "mt-sics":
        return _exchange(port, b"I4\r\n", timeout_s / 2, classify_mtsics) or _exchange(
            port, b"S\r\n", timeout_s / 2, classify_mtsics
        )
    if protocol == "modbus":
        request = build_read_request(1, 0x03, 0, 1)  # one holding register from unit 1
        return _exchange(port, request, timeout_s, classify_modbus)
    raise ValueError(f"unknown protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")


def probe_port(url: str, timeout_s: float = 1.2, plan: Sequence[tuple[str, int]] = DEFAULT_PLAN) -> ProbeResult:
    """Try each (protocol, baud) in turn, stopping at the first that answers; never raises for I/O."""
    by_baud: dict[int, list[str]] = {}
    for protocol, baud in plan:
        by_baud.setdefault(baud, []).append(protocol)
    for baud, protocols in by_baud.items():
        try:
            # exclusive: a port the agent is using stays the agent's (the probe reports it busy).
            port = serial.serial_for_url(
                url, baudrate=baud, timeout=0.05, write_timeout=min(timeout_s, 1.0), exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            return ProbeResult(url, None, None, "cannot open", error=str(exc))
        try:
            for protocol in protocols:
                hit = _try(port, protocol, timeout_s)
                if hit is not None:
                    log.debug("probe: %s looks like %s at %s baud", url, protocol, baud)
                    return ProbeResult(url, protocol, baud, hit)
        except (serial.SerialException, OSError) as exc:
            return ProbeResult(url, None, baud, "port failed during probe", error=str(exc))
        finally:
            port.close()
    return ProbeResult(url, None, None, "no known protocol answered")
