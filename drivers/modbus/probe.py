"""Is a Modbus RTU meter on this port? The recogniser for unknown ports and the check of a configured meter."""

from __future__ import annotations

from edge_agent.drivers.modbus.config import ModbusMeterConfig
from edge_agent.drivers.modbus.protocol import EXCEPTION_NAMES, build_read_request, crc16_modbus
from edge_agent.drivers.probing import ProbeOutcome, Recogniser, probe_with_driver


def classify(data: bytes, unit_id: int = 1) -> str | None:
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


# One holding register from unit 1: every meter answers it, with a value or an exception.
RECOGNISER = Recogniser("modbus", build_read_request(1, 0x03, 0, 1), classify)


def probe(cfg: ModbusMeterConfig, listen_s: float) -> ProbeOutcome:
    """Poll the meter's register map with the agent's driver and wait for one reading."""
    from edge_agent.drivers.modbus.driver import ModbusMeterDriver

    return probe_with_driver(
        ModbusMeterDriver(cfg),
        cfg.port,
        listen_s,
        "register readable",
        wiring="check the power, the wiring (RS-485 A/B) and the port in the config",
        settings="check the baud rate, parity and protocol settings against the device's manual",
    )
