"""Is an NMEA 0183 receiver on this port? The recogniser for unknown ports and the check of a configured GPS."""

from __future__ import annotations

import re
import time

from edge_agent.drivers.base import DeviceUnavailable, FrameError, PortBusy, open_serial
from edge_agent.drivers.nmea.config import NmeaConfig
from edge_agent.drivers.nmea.protocol import split_checksum
from edge_agent.drivers.probing import ProbeOutcome, Recogniser, busy, unavailable

_SENTENCE = re.compile(rb"\$[A-Z][A-Z0-9]{2,9},[^*\r\n$]*\*[0-9A-Fa-f]{2}")


def good_sentences(data: bytes) -> list[str]:
    """The headers (e.g. "GPRMC") of the sentences in `data` whose checksum is right, in order."""
    heads: list[str] = []
    for m in _SENTENCE.finditer(data):
        try:
            body, ok = split_checksum(m.group().decode("ascii"))
        except FrameError:
            continue
        if ok:
            heads.append(body.split(",", 1)[0])
    return heads


def classify(data: bytes) -> str | None:
    """The sentence types of NMEA sentences whose checksum is right, e.g. "GPRMC, GPGGA"."""
    kinds = list(dict.fromkeys(good_sentences(data)))
    return ", ".join(kinds[:4]) if kinds else None


RECOGNISER = Recogniser("nmea", b"", classify)


def probe(cfg: NmeaConfig, listen_s: float) -> ProbeOutcome:
    """Listen to the configured port for sentences with good checksums; never writes to the receiver."""
    import serial

    port = cfg.port
    try:
        ser = open_serial(port, baudrate=cfg.baud, timeout=0.2)
    except PortBusy:
        return busy(port)
    except DeviceUnavailable as exc:
        return unavailable(exc, "plug the GPS in and check the port (ls -l /dev/serial/by-id/)")
    got = bytearray()
    heard = bytearray()
    types: dict[str, int] = {}
    try:
        deadline = time.monotonic() + listen_s
        while time.monotonic() < deadline and sum(types.values()) < 5:
            chunk = ser.read(512)
            heard += chunk[:64]
            got += chunk
            *lines, rest = bytes(got).split(b"\n")
            got = bytearray(rest)
            for head in good_sentences(b"\n".join(lines)):
                t = head if head.startswith("P") else head[2:]
                types[t] = types.get(t, 0) + 1
    except (serial.SerialException, OSError) as exc:
        return ProbeOutcome(
            "fail", f"{port}: read failed ({exc})", "check the cable and that no other program holds the port"
        )
    finally:
        ser.close()
    if types:
        n = sum(types.values())
        return ProbeOutcome("ok", f"{port}: {n} NMEA sentence(s) with good checksums ({', '.join(sorted(types))})")
    if heard or got or listen_s <= 0:
        return ProbeOutcome(
            "fail",
            f"{port}: bytes arrive but no valid NMEA sentence in {listen_s:g} s",
            "check the baud rate (GPS receivers use 4800, 9600 or 115200) or set autobaud = true",
        )
    return ProbeOutcome(
        "fail", f"{port}: silent for {listen_s:g} s", "check the GPS power and wiring; a USB GPS may need replugging"
    )
