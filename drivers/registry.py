"""The explicit registry of serial driver kinds: kind -> (module, Config class, Driver class).

A config section names its driver with `kind = "..."`; services build it with `make_driver(cfg)`.
Modules are imported on first use, so a truck never loads pymodbus and a sensor point never
loads the OBD code. Adding a driver is one line here (and a sample section in config/).
Cameras and scanners have their own factories (drivers/camera/driver.py, drivers/scanner/driver.py).
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel

DRIVER_KINDS: dict[str, tuple[str, str, str]] = {
    "nmea": ("edge_agent.drivers.nmea.driver", "NmeaConfig", "NmeaDriver"),
    "elm327": ("edge_agent.drivers.elm327.driver", "Elm327Config", "Elm327Driver"),
    "lls": ("edge_agent.drivers.lls.driver", "LlsConfig", "LlsDriver"),
    "scale": ("edge_agent.drivers.scale.driver", "ScaleConfig", "ScaleDriver"),
    "modbus": ("edge_agent.drivers.modbus.driver", "ModbusMeterConfig", "ModbusMeterDriver"),
}


def driver_classes(kind: str) -> tuple[type[BaseModel], type]:
    """(Config class, Driver class) of a kind; KeyError names the known kinds."""
    try:
        module, config_name, driver_name = DRIVER_KINDS[kind]
    except KeyError:
        raise KeyError(f"unknown driver kind {kind!r}; expected one of {', '.join(sorted(DRIVER_KINDS))}") from None
    mod = importlib.import_module(module)
    return getattr(mod, config_name), getattr(mod, driver_name)


def make_driver(cfg: Any) -> Any:
    """The driver for a validated config section (its `kind` picks the class); no I/O."""
    return driver_classes(cfg.kind)[1](cfg)
