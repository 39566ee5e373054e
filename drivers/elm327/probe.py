"""Is an ELM327 on this port? The ATI recogniser for unknown ports, and the check of a configured adapter.

The configured check runs the driver's own start-up (resynchronise, ATZ, ATE0 ...) and support query,
so the handshake is written once, in driver.py, and doctor sees exactly what the agent would.
"""

from __future__ import annotations

import re

from edge_agent.drivers.base import DeviceUnavailable, PortBusy
from edge_agent.drivers.elm327.config import Elm327Config
from edge_agent.drivers.probing import ProbeOutcome, Recogniser, busy, unavailable

_ELM = re.compile(rb"ELM327 v(\d+\.\d+[A-Za-z]?)")


def classify(data: bytes) -> str | None:
    """ "ELM327 v1.5" when an ATI (or ATZ) answer is in `data`."""
    m = _ELM.search(data)
    return f"ELM327 v{m.group(1).decode('ascii')}" if m else None


RECOGNISER = Recogniser("elm327", b"ATI\r", classify)


def probe(cfg: Elm327Config, listen_s: float) -> ProbeOutcome:
    """Start the adapter as the agent would and ask which ECU supports which PID."""
    from edge_agent.drivers.elm327.driver import Elm327Driver

    driver = Elm327Driver(cfg.model_copy(update={"response_timeout_s": max(0.5, min(listen_s, 5.0))}))
    try:
        driver.open()
        ecus = driver.discover(listen_s)
    except PortBusy:
        return busy(cfg.port)
    except DeviceUnavailable as exc:
        text = str(exc)
        if "no '>' prompt" in text or "got ''" in text:
            return ProbeOutcome(
                "fail", f"{cfg.port}: no answer to ATZ/ATI", "switch the ignition on and check the adapter's power LED"
            )
        if "cannot open" in text:
            return unavailable(exc, "plug the OBD adapter in (ignition on) and check the port in the config")
        return ProbeOutcome("fail", text, "check the baud rate (38400 for most USB adapters) and the ignition")
    finally:
        driver.close()
    version = driver.adapter_version or "ELM327"
    if not ecus:
        return ProbeOutcome(
            "warn",
            f"{cfg.port}: adapter answers {version}, but no ECU answered the PID support query",
            "switch the ignition on (engine running for some vehicles) and run doctor again",
        )
    return ProbeOutcome("ok", f"{cfg.port}: adapter answers {version}; {driver.describe_sources()}")
