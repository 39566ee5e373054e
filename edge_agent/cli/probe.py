"""Protocol probes for a serial port, as `sensors list` uses them; the knowledge lives in each driver's probe.py.

Kept as the CLI's import point: `probe_port` and the plan come from edge_agent.drivers.probing, the
classifiers from the drivers that own each protocol.
"""

from __future__ import annotations

from edge_agent.drivers.elm327.probe import classify as classify_elm327
from edge_agent.drivers.modbus.probe import classify as classify_modbus
from edge_agent.drivers.nmea.probe import classify as classify_nmea
from edge_agent.drivers.probing import DEFAULT_PLAN, PROTOCOLS, ProbeResult, probe_port
from edge_agent.drivers.scale.probe import classify as classify_mtsics

__all__ = [
    "DEFAULT_PLAN",
    "PROTOCOLS",
    "ProbeResult",
    "classify_elm327",
    "classify_modbus",
    "classify_mtsics",
    "classify_nmea",
    "probe_port",
]
