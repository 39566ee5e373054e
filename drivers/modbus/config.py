"""The config of one Modbus RTU meter and its register specs (pydantic and stdlib only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from edge_agent.schema import Expect

RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32"]
REGISTER_WORDS: dict[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
FUNCTION_CODES: dict[str, int] = {"holding": 0x03, "input": 0x04}
# Modbus application protocol v1.1b3, 6.3/6.4: at most 125 registers per read request.
MAX_READ_REGISTERS = 125

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,47}$"


# ---------------------------------------------------------------- config


class RegisterSpec(BaseModel):
    """One value of a meter: where it lives, how its words decode, what unit it is in."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    name: Annotated[
        str, Field(pattern=NAME_PATTERN), Expect("a lower-case name of letters, digits and '_', e.g. temperature_c")
    ]
    address: Annotated[
        int, Field(ge=0, le=65535), Expect("a protocol register address 0-65535 (manual's 30001 / 40001 is 0)")
    ]
    function: Annotated[Literal["holding", "input"], Expect('"holding" (function 03) or "input" (function 04)')] = (
        "holding"
    )
    type: Annotated[RegisterType, Expect('"int16", "uint16", "int32", "uint32" or "float32"')] = "uint16"
    # Order of the two 16-bit words of a 32-bit value: "big" = high word first (ABCD, Modbus
    # convention, Eastron), "little" = low word first (CDAB, many PLCs and gateways).
    word_order: Annotated[
        Literal["big", "little"], Expect('"big" (high word first, ABCD) or "little" (low word first, CDAB)')
    ] = "big"
    scale: Annotated[float, Expect("a number the raw value is multiplied by, e.g. 0.1")] = 1.0
    offset: Annotated[float, Expect("a number added after scaling")] = 0.0
    unit: Annotated[str, Field(max_length=16), Expect("a unit of up to 16 characters, e.g. kWh or °C")] = ""
    # Absolute change (in `unit`) that makes the sensor pipeline send a record; None: the section default.
    deadband: Annotated[float | None, Field(ge=0), Expect("an absolute change >= 0 in the register's unit")] = None

    @property
    def words(self) -> int:
        return REGISTER_WORDS[self.type]


class MeterMap(BaseModel):
    """A register map file in config/meters/: which meter, which document, which registers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    vendor: Annotated[str, Expect("the maker's name")]
    model: Annotated[str, Expect("the meter model")]
    document: Annotated[str, Expect("the vendor document the addresses come from")]
    # Factory serial settings, used when the meter's config does not set them.
    baud: Annotated[int | None, Field(ge=300, le=115200), Expect("a baud rate such as 2400 or 9600")] = None
    parity: Annotated[Literal["N", "E", "O"] | None, Expect('"N", "E" or "O"')] = None
    # The cumulative kWh register the sensor pipeline turns into CO2 (None: not an energy meter).
    energy_register: Annotated[str | None, Expect("the name of one of the map's registers")] = None
    max_registers_per_read: Annotated[int, Field(ge=1, le=MAX_READ_REGISTERS), Expect("an integer 1-125")] = 64
    registers: Annotated[list[RegisterSpec], Field(min_length=1), Expect("a non-empty list of [[registers]]")]

    @model_validator(mode="after")
    def _check(self) -> MeterMap:
        _check_unique_names(self.registers)
        if self.energy_register is not None and self.energy_register not in {r.name for r in self.registers}:
            raise ValueError(f"energy_register {self.energy_register!r} is not one of the registers")
        return self


class ModbusMeterConfig(BaseModel):
    """One Modbus RTU meter on an RS-485 line: serial settings, unit id and its register map."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Annotated[Literal["modbus"], Expect('"modbus"')] = "modbus"
    name: Annotated[
        str,
        Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"),
        Expect("1-64 letters, digits, '.', '_' or '-', e.g. cold-room-1"),
    ]
    port: Annotated[str, Field(min_length=1), Expect("a serial device or pyserial URL, e.g. /dev/ttyUSB0")]
    baud: Annotated[int, Field(ge=300, le=115200), Expect("a baud rate such as 2400, 9600 or 19200")] = 9600
    parity: Annotated[Literal["N", "E", "O"], Expect('"N" (none), "E" (even) or "O" (odd)')] = "N"
    stop_bits: Annotated[Literal[1, 2], Expect("1 or 2")] = 1
    unit_id: Annotated[int, Field(ge=1, le=247), Expect("a Modbus unit (slave) id 1-247")] = 1
    poll_interval_s: Annotated[float, Field(ge=0.1, le=3600), Expect("a number of seconds 0.1-3600")] = 10.0
    # Per request; also bounds how long the driver blocks, so at most 1 s.
    timeout_s: Annotated[float, Field(gt=0, le=1.0), Expect("a number of seconds > 0 and <= 1")] = 0.5
    # A shipped map name (config/meters/NAME.toml) or a path to a map file.
    map: Annotated[
        str | None,
        Field(min_length=1),
        Expect("the name of a shipped meter map (see config/meters/) or a path to a .toml map"),
    ] = None
    # Registers of your own, added to the map's (a same-named register replaces the map's).
    registers: Annotated[list[RegisterSpec], Expect("a list of [[...registers]] tables")] = Field(default_factory=list)
    energy_register: Annotated[str | None, Expect("the name of one of this meter's registers")] = None
    max_registers_per_read: Annotated[int | None, Field(ge=1, le=MAX_READ_REGISTERS), Expect("an integer 1-125")] = None
    # Unused registers a single read may span to merge two blocks (0: only adjacent ones; some
    # meters answer "illegal data address" for gaps).
    max_gap_registers: Annotated[int, Field(ge=0, le=32), Expect("an integer 0-32")] = 0
    # Polls without any answer, or with only unreadable ones, before the driver reports the meter as gone (the
    # runner reopens).
    silent_polls_max: Annotated[int, Field(ge=1, le=100), Expect("an integer 1-100")] = 3

    _map: MeterMap | None = PrivateAttr(default=None)
    _resolved: tuple[RegisterSpec, ...] = PrivateAttr(default=())

    @field_validator("map")
    @classmethod
    def _check_map(cls, v: str | None) -> str | None:
        from edge_agent.drivers.modbus.maps import shipped_maps  # maps imports this module

        if v is not None and not (v.endswith(".toml") or "/" in v) and v not in shipped_maps():
            raise ValueError("unknown map")
        return v

    @model_validator(mode="after")
    def _resolve(self) -> ModbusMeterConfig:
        # The map file is read here so that `config check` names a broken map; maps.py is stdlib-only.
        from edge_agent.drivers.modbus.maps import load_map, map_path

        meter_map = load_map(map_path(self.map)) if self.map is not None else None
        by_name: dict[str, RegisterSpec] = {}
        if meter_map is not None:
            by_name.update((r.name, r) for r in meter_map.registers)
            if "baud" not in self.model_fields_set and meter_map.baud is not None:
                self.baud = meter_map.baud
            if "parity" not in self.model_fields_set and meter_map.parity is not None:
                self.parity = meter_map.parity
            if self.energy_register is None:
                self.energy_register = meter_map.energy_register
            if self.max_registers_per_read is None:
                self.max_registers_per_read = meter_map.max_registers_per_read
        _check_unique_names(self.registers)
        by_name.update((r.name, r) for r in self.registers)
        if not by_name:
            raise ValueError('no registers: set map = "<name>" or add [[...registers]] tables')
        if self.energy_register is not None and self.energy_register not in by_name:
            raise ValueError(f"energy_register {self.energy_register!r} names no register of this meter")
        self._map = meter_map
        self._resolved = tuple(by_name.values())
        return self

    @property
    def all_registers(self) -> tuple[RegisterSpec, ...]:
        """The map's registers merged with the meter's own."""
        return self._resolved

    @property
    def model_name(self) -> str | None:
        """The map's "vendor model", for records and `sensors list`."""
        return f"{self._map.vendor} {self._map.model}" if self._map is not None else None


def _check_unique_names(registers: Sequence[RegisterSpec]) -> None:
    seen: set[str] = set()
    for r in registers:
        if r.name in seen:
            raise ValueError(f"register name {r.name!r} is used twice")
        seen.add(r.name)
