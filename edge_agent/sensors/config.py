"""The [sensors] section of the config: meters, deadband sampling and the grid emission factor."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.drivers.modbus import ModbusMeterConfig
from edge_agent.schema import Expect

# Default grid factor: UK Government GHG Conversion Factors for Company Reporting 2024
# (DESNZ/DEFRA), "UK electricity", generation, kg CO2e per kWh. Set your own grid's factor
# (and its source and year) in [sensors.grid]; records carry all three.
DEFAULT_GRID_FACTOR_KG_PER_KWH = 0.20705
DEFAULT_GRID_FACTOR_SOURCE = "UK DESNZ GHG conversion factors 2024, UK electricity (generation)"
DEFAULT_GRID_FACTOR_YEAR = 2024


class GridConfig(BaseModel):
    """The electricity grid's emission factor that turns a warehouse's kWh into CO2."""

    model_config = ConfigDict(extra="forbid")

    factor_kg_per_kwh: Annotated[
        float, Field(ge=0, le=2), Expect("kg CO2e per kWh between 0 and 2, e.g. 0.20705")
    ] = DEFAULT_GRID_FACTOR_KG_PER_KWH
    source: Annotated[str, Field(min_length=1, max_length=200), Expect("where the factor comes from (1-200 chars)")] = (
        DEFAULT_GRID_FACTOR_SOURCE
    )
    year: Annotated[int, Field(ge=1990, le=2100), Expect("the factor's year, e.g. 2024")] = DEFAULT_GRID_FACTOR_YEAR


class SensorsConfig(BaseModel):
    """Meters polled at a sensor point, and when their readings become `sensor` records."""

    model_config = ConfigDict(extra="forbid")

    meters: Annotated[
        list[ModbusMeterConfig], Expect("a list of [[sensors.meters]] tables with unique names")
    ] = Field(default_factory=list)
    # Send a meter's values at least this often even when nothing moved beyond its deadband.
    max_interval_s: Annotated[float, Field(ge=1, le=86400), Expect("a number of seconds 1-86400")] = 300.0
    # Never send one meter more often than this, however much it moves (0: every poll may send).
    min_interval_s: Annotated[float, Field(ge=0, le=3600), Expect("a number of seconds 0-3600")] = 0.0
    # Deadband for registers whose map gives none: an absolute change in the register's unit.
    default_deadband: Annotated[float, Field(ge=0), Expect("an absolute change >= 0")] = 0.0
    grid: GridConfig = Field(default_factory=GridConfig)

    @field_validator("meters")
    @classmethod
    def _unique_names(cls, v: list[ModbusMeterConfig]) -> list[ModbusMeterConfig]:
        names = [m.name for m in v]
        if len(set(names)) != len(names):
            raise ValueError("duplicate meter names")
        return v
