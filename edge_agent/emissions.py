"""CO2e (or CO2, as the factor says) = activity x emission factor, from a cited table (fuel, tonne-km, grid kWh)."""

from __future__ import annotations

import csv
import importlib.resources
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import ConfigError

ACTIVITIES = ("fuel", "tonne_km", "electricity")
BOUNDARIES = ("TTW", "WTT", "WTW", "generation")
COLUMNS = ("name", "activity", "key", "boundary", "unit", "kg_co2e_per_unit", "source", "year", "url", "note", "gas")
# What a factor counts: CO2e (CO2, CH4 and N2O at their GWP), or CO2 alone (China's grid factors, IPCC's
# combustion defaults). An optional column; a table without it counts CO2e.
GASES = ("CO2e", "CO2")


@dataclass(frozen=True, slots=True)
class Factor:
    """One row of the factor table: kg CO2e per unit of activity, with where it comes from."""

    name: str
    activity: str  # fuel | tonne_km | electricity
    key: str  # fuel type, vehicle class or grid region
    boundary: str  # TTW | WTT | WTW | generation
    unit: str  # L | tonne.km | kWh
    kg_co2e_per_unit: float
    source: str
    year: int
    url: str = ""
    note: str = ""
    gas: str = "CO2e"

    def describe(self) -> dict[str, object]:
        """What a record says about the factor it used."""
        return {
            "name": self.name,
            "boundary": self.boundary,
            "gas": self.gas,
            "kg_co2e_per_unit": self.kg_co2e_per_unit,
            "unit": self.unit,
            "source": self.source,
            "year": self.year,
        }


class FactorTable:
    """The emission factors by name; `find` picks one by activity, key and boundary."""

    def __init__(self, factors: list[Factor], origin: str = "") -> None:
        self.origin = origin
        self._by_name = {f.name: f for f in factors}

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str) -> Factor:
        """The row called `name`; KeyError naming the table and the known rows otherwise."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"{self.origin}: no emission factor named {name!r}; expected one of {', '.join(self._by_name)}"
            ) from None

    def find(self, activity: str, key: str, boundary: str) -> Factor | None:
        for f in self._by_name.values():
            if f.activity == activity and f.key == key and f.boundary == boundary:
                return f
        return None

    def keys(self, activity: str) -> list[str]:
        return sorted({f.key for f in self._by_name.values() if f.activity == activity})


def default_factors_path() -> Path:
    """The table shipped with edge-agent (config/emission_factors.csv, installed as package data)."""
    return Path(str(importlib.resources.files("edge_agent.resources.config") / "emission_factors.csv"))


def load_factors(path: str | os.PathLike[str] | None = None) -> FactorTable:
    """Read and check a factor table; raise ConfigError with one line per bad cell (file:line: column: ...)."""
    p = Path(path) if path is not None else default_factors_path()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{p}: file not found (expected a CSV emission factor table)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{p}: cannot read: {exc}"]) from None
    return parse_factors(text, str(p))


def parse_factors(text: str, origin: str = "factors") -> FactorTable:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS[:8] if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError([f"{origin}: line 1: expected columns {', '.join(COLUMNS)}, missing {', '.join(missing)}"])
    problems: list[str] = []
    factors: list[Factor] = []
    seen: set[str] = set()
    for row in reader:
        where = f"{origin}: line {reader.line_num}"
        name = (row.get("name") or "").strip()
        if not name or name in seen:
            problems.append(f"{where}: name: expected a unique row name, got {name!r}")
            continue
        seen.add(name)
        activity, boundary = (row.get("activity") or "").strip(), (row.get("boundary") or "").strip()
        if activity not in ACTIVITIES:
            problems.append(f"{where}: activity: expected one of {', '.join(ACTIVITIES)}, got {activity!r}")
        if boundary not in BOUNDARIES:
            problems.append(f"{where}: boundary: expected one of {', '.join(BOUNDARIES)}, got {boundary!r}")
        raw_value, raw_year = (row.get("kg_co2e_per_unit") or "").strip(), (row.get("year") or "").strip()
        try:
            value = float(raw_value)
            if not math.isfinite(value) or value < 0:
                raise ValueError
        except ValueError:
            problems.append(f"{where}: kg_co2e_per_unit: expected a number >= 0, got {raw_value!r}")
            value = math.nan
        try:
            year = int(raw_year)
        except ValueError:
            problems.append(f"{where}: year: expected a year such as 2025, got {raw_year!r}")
            year = 0
        gas = (row.get("gas") or "").strip() or "CO2e"
        if gas not in GASES:
            problems.append(f"{where}: gas: expected {' or '.join(GASES)} (what the factor counts), got {gas!r}")
        source = (row.get("source") or "").strip()
        if not source:
            problems.append(f"{where}: source: expected where the number comes from, got nothing")
        factors.append(
            Factor(
                name=name,
                activity=activity,
                key=(row.get("key") or "").strip(),
                boundary=boundary,
                unit=(row.get("unit") or "").strip(),
                kg_co2e_per_unit=value,
                source=source,
                year=year,
                url=(row.get("url") or "").strip(),
                note=(row.get("note") or "").strip(),
                gas=gas,
            )
        )
    if problems:
        raise ConfigError(problems)
    return FactorTable(factors, origin)


def check_grid_factor(table: FactorTable, name: str, key: str = "telematics.emissions.grid_factor") -> Factor:
    """The named electricity row; ConfigError naming the key and the table's kWh rows otherwise."""
    try:
        factor = table.get(name)
    except KeyError:
        factor = None
    if factor is None or factor.activity != "electricity" or factor.unit != "kWh":
        rows = ", ".join(n for n in table.names() if table.get(n).activity == "electricity")
        raise ConfigError([f"{table.origin}: {key}: expected an electricity (kWh) row, got {name!r} (rows: {rows})"])
    return factor


def tonne_km_classes(table: FactorTable) -> list[str]:
    """Vehicle classes with a tonne-km row at a boundary `co2_kg` can report (TTW or WTW; WTT alone gives none)."""
    return [k for k in table.keys("tonne_km") if table.find("tonne_km", k, "TTW") or table.find("tonne_km", k, "WTW")]


def check_vehicle_class(table: FactorTable, name: str, key: str = "telematics.vehicle_class") -> str:
    """The class when the table has a tonne-km TTW or WTW row for it; ConfigError naming the key and the classes."""
    classes = tonne_km_classes(table)
    if name in classes:
        return name
    problem = (
        f"{table.origin}: {key}: expected a vehicle class with a tonne-km TTW or WTW row, got {name!r} "
        f"(classes: {', '.join(classes) or 'none'})"
    )
    if name in table.keys("tonne_km"):  # a WTT row alone: the upstream part, no trip CO2 from it
        problem += (
            f"; {name!r} has only well-to-tank rows: add its TTW or WTW tonne-km row, with its source, to a"
            " table of your own (telematics.emissions.factors_file)"
        )
    raise ConfigError([problem])


@dataclass(frozen=True, slots=True)
class Emission:
    """CO2e of one trip, both boundaries where the table allows, and which factors gave them."""

    method: str  # "fuel" | "electricity" | "tonne_km" | "none"
    activity: float  # litres or tonne-km
    activity_unit: str
    co2_ttw_kg: float | None
    co2_wtw_kg: float | None
    ttw: Factor | None
    wtw: tuple[Factor, ...]  # one WTW row, or the TTW + WTT rows it was summed from

    def co2_kg(self, boundary: str) -> tuple[float | None, str]:
        """(kg, boundary actually used): WTW falls back to TTW when the table has no upstream row."""
        if boundary == "WTW" and self.co2_wtw_kg is not None:
            return self.co2_wtw_kg, "WTW"
        return self.co2_ttw_kg, "TTW" if self.co2_ttw_kg is not None else "none"

    def gas(self, boundary: str) -> str | None:
        """What `co2_kg(boundary)` counts: CO2e, CO2 (a factor of CO2 alone), or "CO2 + CO2e" (a sum of both)."""
        used = self.co2_kg(boundary)[1]
        if used == "TTW" and self.ttw is None:  # an electric vehicle's 0 at the wheel, from no factor: no gas at all
            return "CO2e"
        factors = self.wtw if used == "WTW" else (self.ttw,) if used == "TTW" and self.ttw else ()
        gases = sorted({f.gas for f in factors})
        return " + ".join(gases) if gases else None


def _both(table: FactorTable, activity: str, key: str) -> tuple[Factor | None, tuple[Factor, ...]]:
    ttw = table.find(activity, key, "TTW")
    wtw = table.find(activity, key, "WTW")
    if wtw is not None:
        return ttw, (wtw,)
    wtt = table.find(activity, key, "WTT")
    if ttw is not None and wtt is not None:
        return ttw, (ttw, wtt)
    return ttw, ()


def _kg(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def trip_co2(em: Emission, boundary: str) -> dict[str, Any]:
    """A trip body's CO2 keys: co2_kg at `boundary` (WTW falls back to TTW), the boundary it is at, the gas it
    counts, and both boundaries' kg, each to 10 g. The truck pipeline's trips and central's simulated ones."""
    co2, used = em.co2_kg(boundary)
    return {
        "co2_kg": _kg(co2),
        "co2_boundary": used,
        "co2_gas": em.gas(boundary),
        "co2_ttw_kg": _kg(em.co2_ttw_kg),
        "co2_wtw_kg": _kg(em.co2_wtw_kg),
    }


def emission_block(em: Emission) -> dict[str, Any]:
    """A trip body's `emission`: the method, the activity and every factor that gave its CO2 (TTW, then WTW's)."""
    return {
        "method": em.method,
        "activity": round(em.activity, 3),
        "activity_unit": em.activity_unit,
        "factors": [f.describe() for f in ((em.ttw,) if em.ttw else ()) + em.wtw],
    }


FUEL_KEYS = {"diesel": "diesel", "petrol": "petrol", "cng": "cng", "lng": "lng"}
FUEL_UNITS = {"diesel": "L", "petrol": "L", "cng": "kg", "lng": "kg"}


def estimate_emissions(
    table: FactorTable,
    *,
    fuel_used_l: float | None,
    fuel_type: str,
    distance_km: float,
    load_kg: float | None,
    vehicle_class: str,
    fuel_used_kg: float | None = None,
    energy_kwh: float | None = None,
    grid_factor: str | None = None,
) -> Emission:
    """Fuel- or energy-based when the amount is known (preferred by GLEC / ISO 14083), else tonne-km x factor.

    Liquid fuels are in litres, CNG and LNG in kg; a battery-electric vehicle's kWh take the named grid
    factor: nothing leaves its tailpipe (TTW 0), the grid's generation is its well-to-wheel.
    """
    if fuel_type == "electricity":
        if energy_kwh is not None and grid_factor is not None:
            grid = table.get(grid_factor)
            return Emission("electricity", energy_kwh, "kWh", 0.0, energy_kwh * grid.kg_co2e_per_unit, None, (grid,))
        return Emission("none", 0.0, "", None, None, None, ())
    amount = fuel_used_kg if FUEL_UNITS.get(fuel_type) == "kg" else fuel_used_l
    if amount is not None:
        ttw, wtw = _both(table, "fuel", FUEL_KEYS.get(fuel_type, fuel_type))
        if ttw is not None or wtw:
            return Emission(
                "fuel",
                amount,
                FUEL_UNITS.get(fuel_type, "L"),
                amount * ttw.kg_co2e_per_unit if ttw else None,
                amount * sum(f.kg_co2e_per_unit for f in wtw) if wtw else None,
                ttw,
                wtw,
            )
    if load_kg is not None and load_kg > 0:
        tkm = distance_km * load_kg / 1000.0
        ttw, wtw = _both(table, "tonne_km", vehicle_class)
        if ttw is not None or wtw:
            return Emission(
                "tonne_km",
                tkm,
                "tonne.km",
                tkm * ttw.kg_co2e_per_unit if ttw else None,
                tkm * sum(f.kg_co2e_per_unit for f in wtw) if wtw else None,
                ttw,
                wtw,
            )
    return Emission("none", 0.0, "", None, None, None, ())
