"""What `doctor` and `sensors list` share: a probe's verdict, listening on a port, and the unknown-port scan.

Device knowledge stays in each driver's probe.py (its classifier, its request, its handshake); this
module only runs them: `probe_port` tries each kind's recogniser in the order of `DEFAULT_PLAN`, and
`probe_with_driver` opens a configured device with the agent's own driver and waits for a reading.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from edge_agent.drivers.base import BUSY, DeviceUnavailable, FrameError, NotSerialDevice, PortBusy, open_serial

log = logging.getLogger(__name__)

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """A configured device's verdict: ok/warn/fail, what was seen, and what to do about it."""

    status: Status
    message: str
    remedy: str = ""


def busy(port: str) -> ProbeOutcome:
    """The verdict on a configured port another process holds: the agent, which `edge-agent status` reports on."""
    return ProbeOutcome("ok", f"{port}: {BUSY}; not probed", "edge-agent status shows what the running agent reads")


NOT_SERIAL_REMEDY = (
    "set the port to the device's serial port (ls -l /dev/serial/by-id/), not a file or directory;"
    " a recorded NMEA or CAN log is read by `edge-agent telematics replay`"
)


def unavailable(exc: DeviceUnavailable, remedy: str) -> ProbeOutcome:
    """The verdict on a port that could not be opened: `remedy`, unless the port is a file (no plugging in helps)."""
    return ProbeOutcome("fail", str(exc), NOT_SERIAL_REMEDY if isinstance(exc, NotSerialDevice) else remedy)


def port_opens(port: str, baud: int, kind: str) -> ProbeOutcome:
    """For a device that sends only when used (a serial barcode scanner): the port opens, or why not."""
    try:
        ser = open_serial(port, baudrate=baud, timeout=0.2)
    except PortBusy:
        return busy(port)
    except DeviceUnavailable as exc:
        return unavailable(exc, "plug the device in and check the port in the config (ls -l /dev/serial/by-id/)")
    ser.close()
    return ProbeOutcome(
        "ok",
        f"{port}: opens at {baud} baud (a {kind} device sends only when used)",
        "scan a code and see it in `edge-agent status` or the station",
    )


CANNOT_OPEN = "cannot open"  # a ProbeResult's detail when the port could not be opened (missing, not serial)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What an unknown port looked like: the protocol heard (None: nothing recognised) and how."""

    url: str
    protocol: str | None
    baud: int | None
    detail: str  # what was heard, or why nothing was
    error: str | None = None  # the port could not be opened (missing, busy, no permission)


@dataclass(frozen=True, slots=True)
class Recogniser:
    """How one device family is told apart on an unknown port: what to send (b"": only listen), how to read."""

    protocol: str
    request: bytes
    classify: Callable[[bytes], str | None]
    # A second request tried in the other half of the time (MT-SICS: I4, then S).
    second_request: bytes = b""


def _recognisers() -> dict[str, Recogniser]:
    # Imported here: each kind's probe module is small and pure, but the scan is the only user.
    from edge_agent.drivers.elm327.probe import RECOGNISER as ELM327
    from edge_agent.drivers.j1939.probe import RECOGNISER as SLCAN
    from edge_agent.drivers.modbus.probe import RECOGNISER as MODBUS
    from edge_agent.drivers.nmea.probe import RECOGNISER as NMEA
    from edge_agent.drivers.scale.probe import RECOGNISER as MT_SICS

    return {r.protocol: r for r in (NMEA, ELM327, MT_SICS, MODBUS, SLCAN)}


# (protocol, baud) in the order tried. Listening for NMEA comes first because it sends nothing
# to the device. Baud rates are each device family's usual defaults: NMEA 0183 4800 (standard)
# or 9600 (most USB receivers); ELM327 38400 (v1.x default) or 9600 (many clones); MT-SICS
# 9600; Modbus RTU 9600, 19200 (the spec's default) or 2400 (Eastron SDM120 factory setting);
# slcan CAN adapters (CANable, USBtin) are USB CDC devices that ignore the baud rate: asked with `V`
# (version), which leaves the CAN channel closed.
DEFAULT_PLAN: tuple[tuple[str, int], ...] = (
    ("nmea", 9600),
    ("elm327", 9600),
    ("mt-sics", 9600),
    ("modbus", 9600),
    ("slcan", 9600),
    ("nmea", 4800),
    ("elm327", 38400),
    ("modbus", 19200),
    ("modbus", 2400),
)
PROTOCOLS = ("nmea", "elm327", "mt-sics", "modbus", "slcan")


def exchange(port: Any, request: bytes, timeout_s: float, classify: Callable[[bytes], str | None]) -> str | None:
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


def try_protocol(port: Any, protocol: str, timeout_s: float) -> str | None:
    """One recogniser on an open port; None when the port does not answer like that family."""
    rec = _recognisers().get(protocol)
    if rec is None:
        raise ValueError(f"unknown protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if not rec.second_request:
        return exchange(port, rec.request, timeout_s, rec.classify)
    return exchange(port, rec.request, timeout_s / 2, rec.classify) or exchange(
        port, rec.second_request, timeout_s / 2, rec.classify
    )


def probe_port(url: str, timeout_s: float = 1.2, plan: Sequence[tuple[str, int]] = DEFAULT_PLAN) -> ProbeResult:
    """Try each (protocol, baud) in turn, stopping at the first that answers; never raises for I/O."""
    import serial

    by_baud: dict[int, list[str]] = {}
    for protocol, baud in plan:
        by_baud.setdefault(baud, []).append(protocol)
    for baud, protocols in by_baud.items():
        try:
            # open_serial locks the port: one the agent is using stays the agent's (reported busy).
            port = open_serial(url, baudrate=baud, timeout=0.05, write_timeout=min(timeout_s, 1.0))
        except PortBusy:
            return ProbeResult(url, None, None, "busy", error=BUSY)
        except DeviceUnavailable as exc:
            return ProbeResult(url, None, None, CANNOT_OPEN, error=str(exc))
        try:
            for protocol in protocols:
                hit = try_protocol(port, protocol, timeout_s)
                if hit is not None:
                    log.debug("probe: %s looks like %s at %s baud", url, protocol, baud)
                    return ProbeResult(url, protocol, baud, hit)
        except (serial.SerialException, OSError) as exc:
            return ProbeResult(url, None, baud, "port failed during probe", error=str(exc))
        finally:
            port.close()
    return ProbeResult(url, None, None, "no known protocol answered")


def describe_reading(reading: Any) -> str:
    """The first physical value of a reading, e.g. "load_kg 1250", for a probe's one line."""
    for name in ("load_kg", "weight_kg", "level_l", "value", "gross_kg"):
        v = getattr(reading, name, None)
        if isinstance(v, (int, float)):
            return f"{name} {v:g}"
    return type(reading).__name__


def probe_with_driver(
    driver: Any, port: str, listen_s: float, what: str, *, wiring: str, settings: str
) -> ProbeOutcome:
    """Open the agent's own driver and wait up to listen_s for one good reading."""
    frames = 0
    try:
        driver.open()
        deadline = time.monotonic() + listen_s
        while time.monotonic() < deadline:
            try:
                reading = driver.read(0.5)
            except FrameError:
                frames += 1
                continue
            if reading is not None:
                return ProbeOutcome("ok", f"{port}: {what} ({describe_reading(reading)})")
    except PortBusy:
        return busy(port)
    except DeviceUnavailable as exc:  # after garbled frames, a driver that gave up on them: the settings
        return unavailable(exc, settings if frames else wiring)
    finally:
        driver.close()
    if frames:
        return ProbeOutcome("fail", f"{port}: {frames} garbled frame(s), no good reading in {listen_s:g} s", settings)
    return ProbeOutcome(
        "fail", f"{port}: no reading in {listen_s:g} s", "check the power, the wiring and the device address"
    )
