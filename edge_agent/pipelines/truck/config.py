"""The [telematics] config section: GPS, fuel and weight sources; cleaning, trip, telemetry and CO2 settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.drivers.elm327.config import Elm327Config
from edge_agent.drivers.j1939.config import J1939Config
from edge_agent.drivers.lls.config import LlsConfig
from edge_agent.drivers.nmea.config import NmeaConfig
from edge_agent.drivers.scale.config import ScaleConfig
from edge_agent.schema import Expect


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CleaningConfig(_Section):
    """Which fixes and readings count; see edge_agent/pipelines/truck/clean.py for the why of each rule."""

    max_hdop: Annotated[float, Field(gt=0, le=99.99), Expect("an HDOP > 0, e.g. 5")] = 5.0
    min_satellites: Annotated[int, Field(ge=0, le=64), Expect("a number of satellites 0-64")] = 4
    # Fastest a truck can really go; a jump implying more is a multipath or cold-start outlier.
    max_speed_kmh: Annotated[float, Field(gt=0, le=1000), Expect("a speed in km/h > 0")] = 160.0
    # Below this reported speed, moves within drift_radius_m of the parked position are GPS noise.
    stationary_speed_kmh: Annotated[float, Field(ge=0, le=50), Expect("a speed in km/h 0-50")] = 3.0
    drift_radius_m: Annotated[float, Field(ge=0, le=500), Expect("a distance in metres 0-500")] = 25.0
    # Fuel level: median over this many samples takes out the slosh of a moving tank.
    fuel_median_samples: Annotated[int, Field(ge=1, le=301), Expect("an odd number of samples 1-301")] = 15
    refuel_min_l: Annotated[float, Field(gt=0), Expect("litres > 0")] = 10.0
    drain_min_l: Annotated[float, Field(gt=0), Expect("litres > 0")] = 8.0
    # A level change counts as one event when it happens within this long (filling a tank takes minutes).
    fuel_event_window_s: Annotated[float, Field(gt=0, le=7200), Expect("a number of seconds > 0")] = 600.0
    # Fuel-rate samples further apart than this are not integrated across (engine off, adapter gone).
    fuel_rate_max_gap_s: Annotated[float, Field(gt=0, le=600), Expect("a number of seconds > 0")] = 30.0
    # Stable scale readings closer together than this in kg count as the same load.
    load_change_min_kg: Annotated[float, Field(ge=0), Expect("a mass in kg >= 0")] = 50.0


class TripConfig(_Section):
    """Trip cutting, after Traccar's trip rules (speed threshold, minimal trip/parking durations)."""

    # Use ignition when a source provides it; else motion (speed with hysteresis).
    use_ignition: Annotated[bool, Expect("true or false")] = True
    start_speed_kmh: Annotated[float, Field(gt=0, le=100), Expect("a speed in km/h > 0")] = 6.0
    stop_speed_kmh: Annotated[float, Field(ge=0, le=100), Expect("a speed in km/h >= 0")] = 3.0
    min_trip_s: Annotated[float, Field(ge=0), Expect("a number of seconds >= 0")] = 300.0
    min_trip_km: Annotated[float, Field(ge=0), Expect("a distance in km >= 0")] = 0.5
    min_parking_s: Annotated[float, Field(ge=0), Expect("a number of seconds >= 0")] = 300.0
    # No fix for this long ends a trip at its last fix (Traccar: minimalNoDataDuration).
    max_gap_s: Annotated[float, Field(gt=0), Expect("a number of seconds > 0")] = 3600.0
    # A hole between two used fixes longer than this is counted as a gap in the trip's quality block.
    gap_s: Annotated[float, Field(gt=0), Expect("a number of seconds > 0")] = 30.0


class TelemetryConfig(_Section):
    """Downsampled positions: at least every interval_s while moving, on heading change, on stop."""

    enabled: Annotated[bool, Expect("true or false")] = True
    interval_s: Annotated[float, Field(gt=0), Expect("a number of seconds > 0")] = 60.0
    heading_change_deg: Annotated[float, Field(gt=0, le=180), Expect("degrees 0-180")] = 30.0
    # While parked, one position this often (0: none until the truck moves).
    parked_interval_s: Annotated[float, Field(ge=0), Expect("a number of seconds >= 0")] = 1800.0


class EmissionConfig(_Section):
    """Which factors turn litres or tonne-km into CO2e; the table is config/emission_factors.csv."""

    # None: the table shipped with edge-agent.
    factors_file: Annotated[Path | None, Expect("a path to a CSV emission factor table")] = None
    # The boundary `co2_kg` reports (both are in the record): GLEC / ISO 14083 report well-to-wheel.
    report_boundary: Annotated[Literal["WTW", "TTW"], Expect('"WTW" or "TTW"')] = "WTW"
    # Litres of fuel in a full tank, to turn a percentage level (OBD PID 0x2F) into litres.
    tank_l: Annotated[float | None, Field(gt=0, le=5000), Expect("litres > 0")] = None
    # For fuel_type = "electricity": the electricity row of the factor table for where the van charges
    # (grid_cn_east_2022, grid_uk_2025, ...). Checked against the table when the service starts.
    grid_factor: Annotated[
        str,
        Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$"),
        Expect('the name of an electricity (kWh) row, e.g. "grid_cn_2022"'),
    ] = "grid_cn_2022"
    # When no scale is fitted: the load assumed for tonne-km (0: unknown -> vehicle-km factor only).
    default_load_kg: Annotated[float, Field(ge=0, le=100_000), Expect("a mass in kg 0-100000")] = 0.0


class Geofence(_Section):
    """A named circle that gives places their words in a route ("从北京仓库到天津分拣中心")."""

    name: Annotated[str, Field(min_length=1, max_length=64), Expect("a place name, 1-64 characters")]
    lat: Annotated[float, Field(ge=-90, le=90), Expect("a latitude in degrees -90..90")]
    lon: Annotated[float, Field(ge=-180, le=180), Expect("a longitude in degrees -180..180")]
    radius_m: Annotated[float, Field(gt=0, le=100_000), Expect("a radius in metres > 0")] = 300.0


class TelematicsConfig(_Section):
    """The truck pipeline: where readings come from and how they become trips, telemetry and events."""

    # The fleet's id for this vehicle (a plate number or fleet number); empty: the device id.
    transport_id: Annotated[str, Field(max_length=64), Expect("a vehicle id, up to 64 characters")] = ""
    # The tonne-km factor's class when a trip's fuel is unknown: a `key` of the factor table with a tonne-km
    # TTW or WTW row (checked when the config is loaded; not used for fuel_type = "electricity").
    vehicle_class: Annotated[
        str,
        Field(pattern=r"^[a-z0-9_]{1,64}$"),
        Expect("a vehicle class key of the factor table, e.g. rigid_26_32t"),
    ] = "rigid_26_32t"
    # What the vehicle runs on: litres of diesel or petrol, kg of CNG or LNG, or kWh for a battery-electric van.
    fuel_type: Annotated[
        Literal["diesel", "petrol", "cng", "lng", "electricity"],
        Expect('"diesel", "petrol", "cng", "lng" or "electricity"'),
    ] = "diesel"
    gps: NmeaConfig | None = None
    fuel: Annotated[Elm327Config | LlsConfig, Field(discriminator="kind")] | None = None
    weight: ScaleConfig | None = None
    # A J1939 CAN bus (trucks over 3.5 t): speed, fuel used, distance, level, weight, VIN, faults.
    can: J1939Config | None = None
    cleaning: CleaningConfig = Field(default_factory=CleaningConfig)
    trips: TripConfig = Field(default_factory=TripConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    emissions: EmissionConfig = Field(default_factory=EmissionConfig)
    geofences: list[Geofence] = Field(default_factory=list)
    # {start} and {end} are geofence names, or "lat,lon" to 3 decimals outside every geofence.
    route_format: Annotated[str, Field(min_length=1, max_length=200), Expect("a text with {start} and {end}")] = (
        "从{start}到{end}"
    )

    def check_references(self, source: str) -> list[str]:
        """Problems with what this section names outside the config: the factor table, the grid row, the class.

        Read when the config is loaded (so `config check` reports them), not in a validator.
        """
        from edge_agent.emissions import check_grid_factor, check_vehicle_class, load_factors
        from edge_agent.errors import ConfigError

        try:
            table = load_factors(self.emissions.factors_file)
            if self.fuel_type == "electricity":
                check_grid_factor(table, self.emissions.grid_factor)
            else:
                check_vehicle_class(table, self.vehicle_class)
        except ConfigError as exc:
            return [p if p.startswith(f"{source}:") else f"{source}: {p}" for p in exc.problems]
        return []
