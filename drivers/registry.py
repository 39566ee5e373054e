"""The explicit registry of driver kinds: kind -> its package's Config, Driver and probe.

A config section names its driver with `kind = "..."`; services build it with `make_driver(cfg)`,
and `doctor` checks it with `probe_device(cfg, listen_s)`. Every kind is a package
edge_agent.drivers.<package> laid out the same way (config.py, protocol.py, driver.py, probe.py,
twin.py); modules are imported on first use, so a truck never loads pymodbus and a sensor point
never loads the OBD code. Adding a driver is one line here (and a sample section in config/).
Cameras and scanners have their own factories (drivers/camera/driver.py, drivers/scanner/driver.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from edge_agent.drivers.probing import ProbeOutcome, port_opens


@dataclass(frozen=True, slots=True)
class DriverKind:
    """Where one kind lives: edge_agent.drivers.<package>.{config,driver,probe}."""

    package: str
    config: str  # class name in config.py
    driver: str  # class name in driver.py
    what: str  # for people: what is on the wire

    def module(self, part: str) -> Any:
        return importlib.import_module(f"edge_agent.drivers.{self.package}.{part}")


DRIVER_KINDS: dict[str, DriverKind] = {
    "nmea": DriverKind("nmea", "NmeaConfig", "NmeaDriver", "NMEA 0183 GPS receiver"),
    "elm327": DriverKind("elm327", "Elm327Config", "Elm327Driver", "ELM327 OBD-II adapter"),
    "j1939": DriverKind("j1939", "J1939Config", "J1939Driver", "SAE J1939 CAN bus (SocketCAN or slcan)"),
    "lls": DriverKind("lls", "LlsConfig", "LlsDriver", "Omnicomm LLS fuel level sensor"),
    "scale": DriverKind("scale", "ScaleConfig", "ScaleDriver", "scale or axle-load indicator"),
    "modbus": DriverKind("modbus", "ModbusMeterConfig", "ModbusMeterDriver", "Modbus RTU meter"),
}


def _kind(kind: str) -> DriverKind:
    try:
        return DRIVER_KINDS[kind]
    except KeyError:
        raise KeyError(f"unknown driver kind {kind!r}; expected one of {', '.join(sorted(DRIVER_KINDS))}") from None


def config_class(kind: str) -> type[BaseModel]:
    """The pydantic Config class of a kind (imports only its config.py: pydantic and stdlib)."""
    k = _kind(kind)
    cls: type[BaseModel] = getattr(k.module("config"), k.config)
    return cls


def driver_classes(kind: str) -> tuple[type[BaseModel], type]:
    """(Config class, Driver class) of a kind; KeyError names the known kinds."""
    k = _kind(kind)
    return config_class(kind), getattr(k.module("driver"), k.driver)


def make_driver(cfg: Any) -> Any:
    """The driver for a validated config section (its `kind` picks the class); no I/O."""
    return driver_classes(cfg.kind)[1](cfg)


def probe_device(cfg: Any, listen_s: float) -> ProbeOutcome:
    """Check one configured device the way its own probe.py knows how; never raises for I/O."""
    try:
        k = _kind(cfg.kind)
    except KeyError:
        port = getattr(cfg, "port", None)
        if isinstance(port, str):  # a serial barcode scanner: it says nothing until it reads a code
            return port_opens(port, int(getattr(cfg, "baud", 9600)), cfg.kind)
        where = getattr(cfg, "channel", "?")
        return ProbeOutcome("warn", f"{where}: doctor has no probe for kind {cfg.kind!r}", "check the device by hand")
    outcome: ProbeOutcome = k.module("probe").probe(cfg, listen_s)
    return outcome
