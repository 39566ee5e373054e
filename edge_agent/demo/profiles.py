"""What `edge-agent demo` simulates for each profile: which twins, and the config that points at them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.settings import set_value

# A delivery run out of a Beijing depot towards Tianjin, sped up 30x: parked, a drive, a stop
# to unload, the drive on, parked at the sorting centre.
TRUCK_SPEEDUP = 30.0
TRUCK_START = (39.9042, 116.4074)
TRUCK_HEADING_DEG = 120.0


def truck_legs() -> list[Any]:
    from edge_agent.drivers.nmea.twin import Leg

    return [
        Leg(120, 0.0, TRUCK_HEADING_DEG),
        Leg(900, 72.0, TRUCK_HEADING_DEG),
        Leg(420, 0.0, TRUCK_HEADING_DEG),
        Leg(900, 72.0, TRUCK_HEADING_DEG),
        Leg(100000, 0.0, TRUCK_HEADING_DEG),
    ]


def _end_of(legs: list[Any]) -> tuple[float, float]:
    from geographiclib.geodesic import Geodesic

    lat, lon = TRUCK_START
    for leg in legs:
        d = Geodesic.WGS84.Direct(lat, lon, leg.heading_deg, leg.speed_kmh / 3.6 * leg.duration_s)
        lat, lon = d["lat2"], d["lon2"]
    return lat, lon


def setup_truck(cfg_path: Path, work: Path, twins: Any, bus: str = "obd") -> None:
    """GPS plus either an OBD-II adapter and an axle scale (a van), or a J1939 bus (a truck over 3.5 t)."""
    from edge_agent.drivers.elm327.twin import Elm327Twin
    from edge_agent.drivers.j1939.twin import J1939Twin
    from edge_agent.drivers.j1939.twin import Leg as CanLeg
    from edge_agent.drivers.nmea.twin import NmeaTwin
    from edge_agent.drivers.scale.twin import ScaleTwin

    legs = truck_legs()
    if bus == "j1939":
        # The same route on the truck's CAN bus: speed, total fuel used, odometer, weight, VIN, a DM1.
        vehicle = can = twins.add(
            J1939Twin(
                link=work / "can",
                route=tuple(CanLeg(leg.duration_s, leg.speed_kmh) for leg in legs),
                time_scale=TRUCK_SPEEDUP,
            )
        )
        devices = (
            f'[telematics.can]\nkind = "j1939"\ninterface = "slcan"\nchannel = "{can.path}"\n'
            "sleep_after_open_s = 0.0\n\n"
        )
    else:
        vehicle = obd = twins.add(Elm327Twin(link=work / "obd", time_scale=TRUCK_SPEEDUP))
        scale = twins.add(ScaleTwin(link=work / "axle", fmt="and", time_scale=TRUCK_SPEEDUP))
        devices = (
            f'[telematics.fuel]\nkind = "elm327"\nport = "{obd.path}"\n\n'
            f'[telematics.weight]\nkind = "scale"\nport = "{scale.path}"\nprotocol = "continuous"\n\n'
        )
    # The route starts when the vehicle bus has answered the agent, so every trip has its fuel readings.
    gps = twins.add(
        NmeaTwin(
            link=work / "gps",
            legs=legs,
            start_lat=TRUCK_START[0],
            start_lon=TRUCK_START[1],
            start_t=datetime.now(UTC),
            speedup=TRUCK_SPEEDUP,
            start_after=vehicle.answering,
        )
    )
    set_value(cfg_path, "telematics.transport_id", '"京A12345"')
    set_value(cfg_path, "telematics.gps.port", f'"{gps.path}"')
    mid_lat, mid_lon = _end_of(legs[:2])
    end_lat, end_lon = _end_of(legs[:4])
    with cfg_path.open("a", encoding="utf-8") as f:
        f.write(
            "\n# ---- added by `edge-agent demo`: the twins' pseudo-terminals and the run's geofences\n"
            + devices
            + "[telematics.trips]\nmin_trip_s = 120.0\nmin_parking_s = 240.0\n\n"
            # the demo's time runs TRUCK_SPEEDUP times faster: one OBD poll a second is 30 s of the truck's
            + "[telematics.cleaning]\nfuel_rate_max_gap_s = 300.0\n\n"
            f'[[telematics.geofences]]\nname = "北京仓库"\nlat = {TRUCK_START[0]}\nlon = {TRUCK_START[1]}\n'
            "radius_m = 500.0\n\n"
            f'[[telematics.geofences]]\nname = "廊坊中转站"\nlat = {mid_lat:.6f}\nlon = {mid_lon:.6f}\n'
            "radius_m = 500.0\n\n"
            f'[[telematics.geofences]]\nname = "天津分拣中心"\nlat = {end_lat:.6f}\nlon = {end_lon:.6f}\n'
            "radius_m = 500.0\n"
        )


# The kWh meter's counter runs this many times faster than time, so a minute's demo shows energy and CO2.
SENSORS_SPEEDUP = 600.0


def setup_sensors(cfg_path: Path, work: Path, twins: Any) -> None:
    """One RS-485 line with two meters on it: a kWh meter on the incomer and a cold room's thermometer."""
    from edge_agent.drivers.modbus.twin import ModbusTwin, sdm120_scenario, xy_md02_scenario

    line = twins.add(
        ModbusTwin(
            link=work / "rs485",
            unit_id=1,
            scenario=sdm120_scenario(time_scale=SENSORS_SPEEDUP),
            others={2: xy_md02_scenario(drift_c_per_s=0.02)},
        )
    )
    # A Beijing warehouse: North China's grid factor (it counts CO2 alone; the records say so).
    set_value(cfg_path, "sensors.grid.factor", '"grid_cn_north_2022"')
    with cfg_path.open("a", encoding="utf-8") as f:
        f.write(
            "\n# ---- added by `edge-agent demo`: two meters on the twin's RS-485 line (one pseudo-terminal)\n"
            f'[[sensors.meters]]\nkind = "modbus"\nname = "main-board"\nport = "{line.path}"\n'
            'map = "eastron-sdm120"\nbaud = 9600\nunit_id = 1\npoll_interval_s = 2.0\n\n'
            f'[[sensors.meters]]\nkind = "modbus"\nname = "cold-room-1"\nport = "{line.path}"\n'
            'map = "xy-md02"\nunit_id = 2\npoll_interval_s = 5.0\n'
        )


def setup_bench(cfg_path: Path, work: Path, twins: Any) -> None:
    from edge_agent.demo.bench import setup_bench as impl

    impl(cfg_path, work, twins)
