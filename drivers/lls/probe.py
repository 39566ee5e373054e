"""Is the configured LLS fuel-level sensor answering? (LLS sensors speak only when asked by address.)"""

from __future__ import annotations

from edge_agent.drivers.lls.config import LlsConfig
from edge_agent.drivers.probing import ProbeOutcome, probe_with_driver


def probe(cfg: LlsConfig, listen_s: float) -> ProbeOutcome:
    """Poll the sensor with the agent's driver and wait for one level."""
    from edge_agent.drivers.lls.driver import LlsDriver

    return probe_with_driver(
        LlsDriver(cfg),
        cfg.port,
        listen_s,
        "fuel sensor replying",
        wiring="check the power, the wiring (RS-485 A/B) and the port in the config",
        settings="check the baud rate, parity and protocol settings against the device's manual",
    )
