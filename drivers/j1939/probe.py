"""Is a J1939 bus there? Listen for a while (never transmitting) and report PGNs, source addresses and the VIN."""

from __future__ import annotations

import re
import time
from pathlib import Path

from edge_agent.drivers.base import DeviceUnavailable, DriverError, FrameError
from edge_agent.drivers.j1939.config import J1939Config
from edge_agent.drivers.probing import ProbeOutcome, Recogniser

# Lawicel slcan: `V` answers the adapter's hardware and firmware version as V + 4 hex digits, CR.
_SLCAN_VERSION = re.compile(rb"(?:^|[\r\x07])V([0-9A-Fa-f]{4})\r")


def classify(data: bytes) -> str | None:
    """ "slcan adapter, version 1013" when an answer to `V` is in `data`."""
    m = _SLCAN_VERSION.search(data)
    return f"slcan CAN adapter, version {m.group(1).decode('ascii')}" if m else None


# `V` only asks the adapter; the CAN channel stays closed, so nothing reaches the vehicle bus. The CRs
# first empty the adapter's command buffer of whatever earlier probes left in it (Lawicel: "send CR
# a few times to clear the buffer").
RECOGNISER = Recogniser("slcan", b"\r\rV\r", classify)


ARPHRD_CAN = 280  # linux/if_arp.h: the link type of a CAN network interface (can0, vcan0, slcan0)


def socketcan_interfaces(sys_class_net: Path = Path("/sys/class/net")) -> list[str]:
    """The machine's CAN network interfaces, from sysfs (no socket is opened)."""
    found = []
    try:
        entries = sorted(sys_class_net.iterdir())
    except OSError:
        return []
    for entry in entries:
        try:
            if int((entry / "type").read_text().strip()) == ARPHRD_CAN:
                found.append(entry.name)
        except (OSError, ValueError):
            continue
    return found


def listen(cfg: J1939Config, listen_s: float) -> tuple[str, bool, str | None]:
    """(description of what was heard, whether any J1939 frame came, the VIN) after listening listen_s."""
    from edge_agent.drivers.j1939.driver import J1939Driver

    driver = J1939Driver(cfg.model_copy(update={"request_pgns": False, "silence_timeout_s": max(listen_s, 1.0) + 1}))
    try:
        driver.open()
        deadline = time.monotonic() + listen_s
        while time.monotonic() < deadline:
            try:
                driver.read(min(0.5, max(0.01, deadline - time.monotonic())))
            except FrameError:
                continue
    finally:
        driver.close()
    return driver.describe_bus(), bool(driver.pgns_seen), driver.vin


def probe(cfg: J1939Config, listen_s: float) -> ProbeOutcome:
    """Listen to the configured bus; ok when J1939 frames arrive, naming PGNs, sources and the VIN."""
    try:
        heard, any_j1939, _ = listen(cfg, listen_s)
    except DeviceUnavailable as exc:
        return ProbeOutcome(
            "fail",
            str(exc),
            "check the adapter is plugged in and the channel in the config "
            + (
                f"(ip link show {cfg.channel}; bring it up with the bitrate: "
                f"ip link set {cfg.channel} up type can bitrate {cfg.bitrate})"
                if cfg.interface == "socketcan"
                else "(ls /dev/ttyACM*)"
            ),
        )
    except DriverError as exc:
        return ProbeOutcome("fail", str(exc), "fix the CAN map file named above (same columns as spns.csv)")
    if not any_j1939:
        return ProbeOutcome(
            "fail",
            f"{cfg.channel}: {heard} in {listen_s:g} s",
            "switch the ignition on; check CAN-H/CAN-L wiring and that bitrate matches the truck (250000 or 500000)",
        )
    return ProbeOutcome("ok", f"{cfg.channel}: {heard}")
