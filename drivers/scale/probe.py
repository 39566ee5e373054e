"""Is a scale on this port? The MT-SICS recogniser for unknown ports and the check of a configured scale."""

from __future__ import annotations

import re

from edge_agent.drivers.probing import ProbeOutcome, Recogniser, probe_with_driver
from edge_agent.drivers.scale.config import ScaleConfig

# MT-SICS reference manual, level 0: I4 answers the serial number, S a stable (S) or dynamic (D) weight.
_SICS_I4 = re.compile(rb'(?:^|[\r\n])I4 A "?([^"\r\n]*)"?\r?\n')
_SICS_S = re.compile(rb"(?:^|[\r\n])S ([SD]) +(-?[0-9.]+) +([a-zA-Z]+)\r?\n")


def classify(data: bytes) -> str | None:
    """An MT-SICS answer to I4 (serial number) or S (stable / dynamic weight)."""
    if m := _SICS_I4.search(data):
        return f"serial number {m.group(1).decode('ascii', 'replace')}"
    if m := _SICS_S.search(data):
        state = "stable" if m.group(1) == b"S" else "dynamic"
        return f"{state} weight {m.group(2).decode('ascii')} {m.group(3).decode('ascii')}"
    return None


RECOGNISER = Recogniser("mt-sics", b"I4\r\n", classify, second_request=b"S\r\n")


def probe(cfg: ScaleConfig, listen_s: float) -> ProbeOutcome:
    """Open the scale with the agent's driver and wait for one weight."""
    from edge_agent.drivers.scale.driver import ScaleDriver

    return probe_with_driver(
        ScaleDriver(cfg),
        cfg.port,
        listen_s,
        "scale replying",
        wiring="check the power, the wiring (RS-485 A/B) and the port in the config",
        settings="check the baud rate, parity and protocol settings against the device's manual",
    )
