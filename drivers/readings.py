"""Typed readings that drivers hand to pipelines: frozen dataclasses with a timestamp and the raw frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Fix:
    """One GPS position from RMC/GGA (merged per epoch where both arrive)."""

    t_utc: datetime  # GPS time of the fix (UTC, tz-aware)
    lat: float
    lon: float
    speed_kmh: float | None
    course_deg: float | None
    valid: bool  # RMC status A / GGA quality > 0
    fix_quality: int | None  # GGA quality: 0 none, 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 dead reckoning
    satellites: int | None
    hdop: float | None
    altitude_m: float | None
    raw: str  # the sentence(s), kept for diagnosis


@dataclass(frozen=True, slots=True)
class FuelRate:
    """Engine fuel rate (OBD-II PID 0x5E, or derived from MAF PID 0x10)."""

    t_mono: float  # time.monotonic() when read
    t_utc: datetime
    rate_lph: float
    source: str  # "pid5e" | "maf"
    raw: str


@dataclass(frozen=True, slots=True)
class FuelLevel:
    """Tank level, as a percentage (OBD PID 0x2F) or litres (RS-485 level sensor)."""

    t_mono: float
    t_utc: datetime
    level_pct: float | None
    level_l: float | None
    source: str  # "pid2f" | "lls"
    raw: str


@dataclass(frozen=True, slots=True)
class VehicleSpeed:
    """Vehicle speed from OBD-II PID 0x0D."""

    t_mono: float
    t_utc: datetime
    speed_kmh: float
    raw: str


@dataclass(frozen=True, slots=True)
class Weighing:
    """One scale or axle-load reading; only stable ones count as weighings."""

    t_mono: float
    t_utc: datetime
    load_kg: float
    stable: bool
    gross: bool  # gross (True) or net (False) where the format says
    raw: str


@dataclass(frozen=True, slots=True)
class MeterReading:
    """Values read from one Modbus RTU meter poll, by configured register name."""

    t_mono: float
    t_utc: datetime
    meter: str
    values: dict[str, float]
    units: dict[str, str] = field(default_factory=dict)
    raw: str = ""


@dataclass(frozen=True, slots=True)
class Scan:
    """One barcode read by an RF scanner (serial or HID keyboard wedge)."""

    t_mono: float
    t_utc: datetime
    code: str
    source: str  # scanner name
    raw: str


@dataclass(frozen=True, slots=True)
class Frame:
    """One camera frame or image file; `image` is a BGR numpy array (kept untyped here)."""

    t_mono: float
    t_utc: datetime
    image: object
    source: str
    path: str | None = None


@dataclass(frozen=True, slots=True)
class VehicleValue:
    """A named value from the vehicle bus: a counter (total fuel, distance, engine hours, energy) or a gauge.

    Quantities the truck pipeline knows: total_fuel_l, total_fuel_hr_l, total_distance_km,
    total_distance_hr_km, engine_hours_h, engine_speed_rpm, soc_pct, energy_used_kwh, energy_charged_kwh.
    """

    t_mono: float
    t_utc: datetime
    quantity: str
    value: float
    unit: str
    resolution: float  # one count of the source, in `unit` (0.5 L for LFC, 0.001 L for HRLFC)
    source: str  # e.g. "j1939:LFC1/SA0"
    raw: str


@dataclass(frozen=True, slots=True)
class VehicleId:
    """The vehicle identification number as the vehicle sends it (J1939 VI, PGN 65260)."""

    t_mono: float
    t_utc: datetime
    vin: str
    source: str
    raw: str


@dataclass(frozen=True, slots=True)
class ActiveFaults:
    """Active diagnostic trouble codes of one ECU (J1939 DM1): (SPN, FMI, occurrences) each."""

    t_mono: float
    t_utc: datetime
    source_address: int
    amber_warning: bool
    red_stop: bool
    mil: bool
    dtcs: tuple[tuple[int, int, int], ...]
    raw: str
