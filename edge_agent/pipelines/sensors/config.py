"""The [sensors] section of the config: meters, deadband sampling and the grid emission factor."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.drivers.modbus.config import ModbusMeterConfig
from edge_agent.errors import ConfigError
from edge_agent.schema import Expect

if TYPE_CHECKING:
    from edge_agent.emissions import Factor

# The grid's row in the emission factor table (config/emission_factors.csv, which cites each
# number's source and year); pick your own grid's row, or add one in a table of your own.
DEFAULT_GRID_FACTOR = "grid_uk_2025"


class GridConfig(BaseModel):
    """Which emission factor turns a warehouse's kWh into CO2e (or CO2, as the factor says)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # None: the table shipped with edge-agent.
    factors_file: Annotated[Path | None, Expect("a path to a CSV emission factor table")] = None
    factor: Annotated[
        str,
        Field(min_length=1),
        Expect('the name of an electricity (kWh) row of the emission factor table, e.g. "grid_uk_2025"'),
    ] = DEFAULT_GRID_FACTOR


def lookup_grid_factor(factors_file: Path | None, name: str) -> Factor:
    """The named electricity factor; ValueError when the table has no such kWh row."""
    from edge_agent.emissions import load_factors

    table = load_factors(factors_file)  # ConfigError naming the table's file and line
    try:
        factor = table.get(name)
    except KeyError:
        raise ValueError(f"no factor {name!r}") from None
    if factor.activity != "electricity" or factor.unit != "kWh":
        raise ValueError(f"factor {name!r} is not per kWh of electricity")
    return factor


class SensorsConfig(BaseModel):
    """Meters polled at a sensor point, and when their readings become `sensor` records."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    meters: Annotated[
        list[ModbusMeterConfig],
        Expect(
            "a list of [[sensors.meters]] tables with unique names; meters sharing a port (one RS-485 line) need "
            "different unit_id and the same baud, parity and stop_bits"
        ),
    ] = Field(default_factory=list)
    # Send a meter's values at least this often even when nothing moved beyond its deadband.
    max_interval_s: Annotated[float, Field(ge=1, le=86400), Expect("a number of seconds 1-86400")] = 300.0
    # Never send one meter more often than this, however much it moves (0: every poll may send).
    min_interval_s: Annotated[float, Field(ge=0, le=3600), Expect("a number of seconds 0-3600")] = 0.0
    # Deadband for registers whose map gives none: an absolute change in the register's unit.
    default_deadband: Annotated[float, Field(ge=0), Expect("an absolute change >= 0")] = 0.0
    grid: GridConfig = Field(default_factory=GridConfig)

    def check_references(self, source: str) -> list[str]:
        """Problems with what this section names outside the config (the factor table and its grid row).

        Read when the config is loaded (so `config check` reports them), not in a validator: a
        validator does no file I/O.
        """
        from edge_agent.emissions import load_factors

        try:
            table = load_factors(self.grid.factors_file)
        except ConfigError as exc:
            return exc.problems
        try:
            factor = table.get(self.grid.factor)
        except KeyError:
            factor = None
        if factor is None or factor.activity != "electricity" or factor.unit != "kWh":
            return [
                f"{source}: sensors.grid.factor: expected the name of an electricity (kWh) row of the emission "
                f'factor table, e.g. "grid_uk_2025", got "{self.grid.factor}"'
            ]
        return []

    @field_validator("meters")
    @classmethod
    def _unique_names(cls, v: list[ModbusMeterConfig]) -> list[ModbusMeterConfig]:
        names = [m.name for m in v]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two meters named {name!r}")
        lines: dict[str, ModbusMeterConfig] = {}
        units: dict[tuple[str, int], str] = {}
        for m in v:  # one line is opened once, with the settings of the first meter on it
            first = lines.setdefault(m.port, m)
            if (m.baud, m.parity, m.stop_bits) != (first.baud, first.parity, first.stop_bits):
                raise ValueError(
                    f"{first.name!r} ({first.baud} {first.parity} {first.stop_bits}) and {m.name!r} ({m.baud} "
                    f"{m.parity} {m.stop_bits}) on {m.port} with different line settings"
                )
            if (m.port, m.unit_id) in units:
                raise ValueError(f"{units[m.port, m.unit_id]!r} and {m.name!r} both unit {m.unit_id} on {m.port}")
            units[m.port, m.unit_id] = m.name
        return v
