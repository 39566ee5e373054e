"""The explicit registry of driver kinds: kind -> (pydantic Config class, Driver class).

A config section names its driver with `kind = "..."`; the composition root looks the kind up
here, validates the section with the Config class and builds `DriverClass(config)`, which it
hands to a DriverRunner. Adding a driver is one line here (and a sample section in config/).
"""

from __future__ import annotations

from pydantic import BaseModel

from edge_agent.drivers.elm327 import Elm327Config, Elm327Driver
from edge_agent.drivers.lls import LlsConfig, LlsDriver
from edge_agent.drivers.modbus import ModbusMeterConfig, ModbusMeterDriver
from edge_agent.drivers.scale import ScaleConfig, ScaleDriver

DRIVER_KINDS: dict[str, tuple[type[BaseModel], type]] = {
    "elm327": (Elm327Config, Elm327Driver),
    "lls": (LlsConfig, LlsDriver),
    "modbus": (ModbusMeterConfig, ModbusMeterDriver),
    "scale": (ScaleConfig, ScaleDriver),
}
