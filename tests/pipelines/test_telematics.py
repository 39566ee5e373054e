"""Truck pipeline: cleaning, trips, fuel, load, CO2 against hand-computed values; factor table; replay CLI."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.drivers.readings import Fix, FuelLevel, FuelRate, Weighing
from edge_agent.emissions import estimate_emissions, load_factors, parse_factors
from edge_agent.errors import ConfigError
from edge_agent.pipelines.truck.clean import FixFilter, FixLimits
from edge_agent.pipelines.truck.config import Geofence, TelematicsConfig
from edge_agent.pipelines.truck.geo import distance_m
from edge_agent.pipelines.truck.pipeline import Record, TruckPipeline

DATA = Path(__file__).parents[1] / "data" / "nmea"
A_WGS84_M = 6_378_137.0  # along the equator a geodesic is an arc of this radius: distance = a * dlon
T0 = datetime(2025, 5, 6, 1, 0, 0, tzinfo=UTC)
X0_M = 100_000.0  # start 100 km east of 0,0 (which the cleaner rejects as a "no position" zero)


def _fix(t_s: float, x_m: float, speed_kmh: float, **kw: Any) -> Fix:
    """A fix on the equator, x_m metres east of the start (X0_M east of 0 E)."""
    args: dict[str, Any] = {
        "valid": True,
        "fix_quality": 1,
        "satellites": 9,
        "hdop": 0.9,
        "altitude_m": 10.0,
        "course_deg": 90.0,
        "raw": "",
    }
    args.update(kw)
    return Fix(
        t_utc=T0 + timedelta(seconds=t_s),
        lat=args.pop("lat", 0.0),
        lon=math.degrees((X0_M + x_m) / A_WGS84_M),
        speed_kmh=speed_kmh,
        **args,
    )


def _cfg(**kw: Any) -> TelematicsConfig:
    base: dict[str, Any] = {
        "transport_id": "京A12345",
        "geofences": [
            {"name": "北京仓库", "lat": 0.0, "lon": math.degrees(X0_M / A_WGS84_M), "radius_m": 500},
            {"name": "天津分拣中心", "lat": 0.0, "lon": math.degrees((X0_M + 72_000) / A_WGS84_M), "radius_m": 500},
        ],
    }
    base.update(kw)
    return TelematicsConfig.model_validate(base)


def _drive() -> list[tuple[float, float, float]]:
    """(t_s, x_m, speed_kmh) at 1 Hz: parked 120 s, 36 km at 72 km/h, 180 s stop, 36 km, parked 600 s."""
    out, x = [], 0.0
    plan = [(120, 0.0), (1800, 72.0), (180, 0.0), (1800, 72.0), (600, 0.0)]
    t = 0
    for dur, v in plan:
        for _ in range(dur):
            out.append((float(t), x, v))
            t += 1
            x += v / 3.6
    out.append((float(t), x, 0.0))
    return out


def _run(pipe: TruckPipeline, readings: list[tuple[float, int, Any]]) -> list[Record]:
    recs: list[Record] = []
    for _, _, r in sorted(readings, key=lambda x: (x[0], x[1])):
        if isinstance(r, Fix):
            recs += pipe.push_fix(r)
        elif isinstance(r, FuelRate):
            recs += pipe.push_fuel_rate(r)
        elif isinstance(r, FuelLevel):
            recs += pipe.push_fuel_level(r)
        else:
            recs += pipe.push_weighing(r)
    return recs + pipe.finish()


def _scenario(rate: bool, levels: bool, weights: bool = False) -> list[tuple[float, int, Any]]:
    rnd, rnd_w = random.Random(7), random.Random(8)
    readings: list[tuple[float, int, Any]] = []
    level_l = 300.0
    for t, x, v in _drive():
        readings.append((t, 0, _fix(t, x, v)))
        ts = T0 + timedelta(seconds=t)
        if rate:
            readings.append((t, 1, FuelRate(0.0, ts, 21.6 if v > 0 else 0.0, "pid5e", "")))
        if 1920 + 60 <= t < 1920 + 120:
            level_l += 100.0 / 60  # refuel: 100 L in one minute, in the middle of the 180 s stop
        elif v > 0:
            level_l -= 0.3 * v / 3.6 / 1000  # 0.3 L/km
        if levels and int(t) % 5 == 0:
            slosh = rnd.uniform(-2.0, 2.0) if v > 0 else 0.0
            readings.append((t, 2, FuelLevel(0.0, ts, None, level_l + slosh, "lls", "")))
        if weights and int(t) % 10 == 0:
            kg = 8000.0 if t < 1920 + 60 else 5000.0  # a load drop at the stop
            stable = v == 0
            load_kg = kg + (0 if stable else rnd_w.uniform(-900, 900))
            readings.append((t, 3, Weighing(0.0, ts, load_kg, stable, True, "")))
    return readings


# ---------------------------------------------------------------- the hand-computed trip


def test_pipeline__trip_with_stop_and_refuel_from_fuel_rate() -> None:
    pipe = TruckPipeline(_cfg(), load_factors(), "京A12345")
    recs = _run(pipe, _scenario(rate=True, levels=True))
    trips = [b for k, b in recs if k == "trip"]
    assert len(trips) == 1
    trip = trips[0]
    # 2 x 1800 s at 72 km/h = 72 km along the equator; the 180 s stop is idling inside the trip.
    assert trip["distance_km"] == pytest.approx(72.0, abs=0.001)
    assert trip["route"] == "从北京仓库到天津分拣中心"
    assert trip["start"]["t"] == "2025-05-06T01:01:59.000Z"  # the last parked fix before motion
    assert trip["end"]["t"] == "2025-05-06T02:05:00.000Z"  # where it stopped: 120 + 1800 + 180 + 1800 s
    assert trip["duration_s"] == pytest.approx(3781, abs=1)
    assert trip["idle_s"] == pytest.approx(180, abs=2)
    # 21.6 L/h for one hour of driving; the trapezoid loses at most half a second at each edge.
    assert trip["fuel_source"] == "fuel_rate"
    assert trip["fuel_used_l"] == pytest.approx(21.6, abs=0.02)
    # DEFRA 2025 diesel (average biofuel blend): WTW 3.18183, TTW 2.57082 kg CO2e/L.
    assert trip["co2_boundary"] == "WTW"
    assert trip["co2_kg"] == pytest.approx(21.6 * 3.18183, abs=0.07)
    assert trip["co2_ttw_kg"] == pytest.approx(21.6 * 2.57082, abs=0.06)
    assert [f["name"] for f in trip["emission"]["factors"]] == ["diesel_b7_ttw", "diesel_b7_wtw"]
    assert trip["refuels_l"] == pytest.approx(100.0, abs=1.5)
    assert trip["quality"]["fixes_rejected"] == 0 and trip["quality"]["gaps"] == 0
    events = [b for k, b in recs if k == "event"]
    assert [e["event"] for e in events] == ["refuel"]
    assert events[0]["amount_l"] == pytest.approx(100.0, abs=1.5)
    assert events[0]["place"].startswith("0.000,")  # the stop is in no geofence


def test_pipeline__fuel_from_level_drop_corrected_for_refuel() -> None:
    pipe = TruckPipeline(_cfg(), load_factors(), "京A12345")
    trip = next(b for k, b in _run(pipe, _scenario(rate=False, levels=True, weights=True)) if k == "trip")
    # 300 L - 10.8 L + 100 L - 10.8 L: the drop (level before - after) is -78.4 L; +100 L refuel = 21.6 L.
    assert trip["fuel_source"] == "fuel_level"
    # Error budget: a median of 15 samples of +-2 L slosh leaves ~0.3 L (1 sigma) at each end of the
    # trip and of the refuel, and lags ~35 s (0.2 L at 0.006 L/s): 1 L covers 3 sigma.
    assert trip["fuel_used_l"] == pytest.approx(21.6, abs=1.0)
    assert trip["refuels_l"] == pytest.approx(100.0, abs=1.0)
    assert trip["co2_kg"] == pytest.approx(trip["fuel_used_l"] * 3.18183, abs=0.01)
    # Stable weighings only: 8000 kg for the first half (incl. 60 s of the stop), 5000 kg after.
    assert trip["load_peak_kg"] == 8000.0
    expected_avg = (8000 * (1980 - 119) + 5000 * (3900 - 1980)) / (3900 - 119)
    assert trip["load_avg_kg"] == pytest.approx(expected_avg, rel=0.01)


def test_pipeline__tonne_km_when_fuel_unknown() -> None:
    cfg = _cfg(vehicle_class="rigid_26_32t", emissions={"default_load_kg": 10_000})
    pipe = TruckPipeline(cfg, load_factors(), "t")
    trip = next(b for k, b in _run(pipe, _scenario(rate=False, levels=False)) if k == "trip")
    # 72 km x 10 t = 720 tonne-km x 0.09516 kg/tkm (GLEC v2.0 rigid 26-32 t, TTW; no WTW row).
    assert trip["fuel_used_l"] is None and trip["emission"]["method"] == "tonne_km"
    assert trip["co2_kg"] == pytest.approx(720 * 0.09516, abs=0.01) and trip["co2_boundary"] == "TTW"


@pytest.mark.parametrize(
    ("vehicle_class", "ttw", "wtw"),
    [
        # DESNZ 2025 HGV (all diesel), average laden: articulated >33 t 0.07703 + WTT 0.01799; rigid >17 t
        # 0.17146 + WTT 0.03736 (the UK fleet's average loads, one source for both classes).
        ("artic_34_40t", 0.07703, 0.09502),
        ("rigid_gt17t", 0.17146, 0.20882),
    ],
)
def test_pipeline__tonne_km_for_a_desnz_class_reports_wtw(vehicle_class: str, ttw: float, wtw: float) -> None:
    cfg = _cfg(vehicle_class=vehicle_class, emissions={"default_load_kg": 10_000})
    pipe = TruckPipeline(cfg, load_factors(), "t")
    trip = next(b for k, b in _run(pipe, _scenario(rate=False, levels=False)) if k == "trip")
    # 720 tonne-km
    assert trip["emission"]["method"] == "tonne_km" and trip["co2_boundary"] == "WTW"
    assert trip["co2_kg"] == pytest.approx(720 * wtw, abs=0.01)
    assert trip["co2_ttw_kg"] == pytest.approx(720 * ttw, abs=0.01)
    assert [f["name"] for f in trip["emission"]["factors"]] == [f"{vehicle_class}_ttw", f"{vehicle_class}_wtw"]


def test_shipped_factors__every_tonne_km_class_gives_a_trip_co2() -> None:
    from edge_agent.emissions import tonne_km_classes

    table = load_factors()
    assert tonne_km_classes(table) == table.keys("tonne_km") == ["artic_34_40t", "rigid_26_32t", "rigid_gt17t"]


def test_pipeline__a_fuel_level_that_does_not_fall_is_unknown_fuel_not_zero() -> None:
    """A sensor too coarse for the trip (or only slosh) shows no drop: the CO2 comes from tonne-km, not 0."""
    cfg = _cfg(vehicle_class="rigid_26_32t", emissions={"default_load_kg": 10_000})
    pipe = TruckPipeline(cfg, load_factors(), "t")
    readings = [r for r in _scenario(rate=False, levels=True) if not isinstance(r[2], FuelLevel)]
    readings += [(t, 2, FuelLevel(0.0, T0 + timedelta(seconds=t), None, 300.0, "lls", "")) for t in range(0, 4500, 5)]
    trip = next(b for k, b in _run(pipe, readings) if k == "trip")
    assert trip["fuel_used_l"] is None and trip["fuel_source"] == "none"
    assert trip["emission"]["method"] == "tonne_km" and trip["co2_kg"] == pytest.approx(720 * 0.09516, abs=0.01)


def test_pipeline__fuel_rate_that_starts_late_in_a_trip_is_not_the_trips_fuel() -> None:
    """An adapter that answered only for the second half (it connected late) would report half the fuel."""
    cfg = _cfg(vehicle_class="rigid_26_32t", emissions={"default_load_kg": 10_000})
    pipe = TruckPipeline(cfg, load_factors(), "t")
    late = [r for r in _scenario(rate=True, levels=False) if not (isinstance(r[2], FuelRate) and r[0] < 2000)]
    trip = next(b for k, b in _run(pipe, late) if k == "trip")
    assert trip["fuel_used_l"] is None and trip["emission"]["method"] == "tonne_km"


def test_pipeline__parked_truck_gains_no_kilometres_from_drift() -> None:
    rnd = random.Random(3)
    pipe = TruckPipeline(_cfg(), load_factors(), "t")
    recs: list[Record] = []
    naive_m, prev = 0.0, None  # what a plain sum over the same fixes would say
    for t in range(3600):
        jitter = [rnd.gauss(0, 6.0) for _ in range(2)]
        fix = _fix(t, 1000.0 + jitter[0], rnd.uniform(0, 2.5), lat=jitter[1] / 111_000)
        if prev is not None:
            naive_m += distance_m(prev.lat, prev.lon, fix.lat, fix.lon)
        prev = fix
        recs += pipe.push_fix(fix)
    recs += pipe.finish()
    assert naive_m > 25_000  # an hour of 6 m jitter: tens of kilometres in a naive sum
    assert pipe.summary()["distance_km"] < 0.05
    assert not [r for r in recs if r[0] == "trip"]
    assert pipe.gate.suppressed > 3500


def test_pipeline__gap_ends_trip_and_short_hops_are_not_trips() -> None:
    pipe = TruckPipeline(_cfg(), load_factors(), "t")
    recs: list[Record] = []
    for t in range(0, 600):
        recs += pipe.push_fix(_fix(t, t * 20.0, 72.0))
    recs += pipe.push_fix(_fix(600 + 7200, 600 * 20.0, 0.0))  # two hours of no data
    trips = [b for k, b in recs if k == "trip"]
    assert len(trips) == 1 and trips[0]["quality"]["end_reason"] == "no_data"
    assert trips[0]["distance_km"] == pytest.approx(599 * 20 / 1000, abs=0.001)
    pipe2 = TruckPipeline(_cfg(), load_factors(), "t")
    hop = [r for t in range(60) for r in pipe2.push_fix(_fix(t, t * 5.0, 18.0))]
    hop += [r for t in range(60, 700) for r in pipe2.push_fix(_fix(t, 300.0, 0.0))]
    assert not [r for r in hop if r[0] == "trip"] and pipe2.trips.discarded == 1


def test_pipeline__telemetry_deadband() -> None:
    pipe = TruckPipeline(_cfg(telemetry={"interval_s": 60, "heading_change_deg": 30}), load_factors(), "t")
    recs: list[Record] = []
    for t in range(600):
        recs += pipe.push_fix(_fix(t, t * 20.0, 72.0, course_deg=90.0 if t < 330 else 135.0))
    for t in range(600, 700):
        recs += pipe.push_fix(_fix(t, 600 * 20.0, 0.0))
    reasons = [b["reason"] for k, b in recs if k == "telemetry"]
    assert reasons[0] == "first" and reasons.count("heading") == 1 and reasons[-1] == "stop"
    # 60..300 s, then the turn at 330 s restarts the clock: 390..570 s.
    assert reasons.count("interval") == 9


# ---------------------------------------------------------------- cleaning rules


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"valid": False}, "invalid"),
        ({"hdop": 9.9}, "hdop"),
        ({"satellites": 3}, "satellites"),
    ],
)
def test_fix_filter__rejects_with_reason(kw: dict[str, Any], reason: str) -> None:
    f = FixFilter(FixLimits())
    assert f.check(_fix(0, 0.0, 0.0)) is None
    assert f.check(_fix(1, 10.0, 30.0, **kw)) == reason
    assert f.rejected == {reason: 1}


def test_fix_filter__rejects_zero_island_and_impossible_jump_then_reanchors() -> None:
    f = FixFilter(FixLimits(max_speed_kmh=160))
    assert f.check(_fix(0, 1000.0, 0.0)) is None
    assert f.check(_fix(1, -X0_M, 0.0)) == "zero"
    assert f.check(_fix(2, 1000.0 + 5000, 0.0)) == "jump"  # 5 km in 2 s
    assert f.check(_fix(3, 1020.0, 36.0)) is None
    assert f.check(_fix(3, 1020.0, 36.0)) == "time"
    # The last good fix was itself the outlier: after 3 consistent "jumps", start again.
    reasons = [f.check(_fix(4 + i, 90_000.0 + 20 * i, 72.0)) for i in range(5)]
    assert reasons == ["jump", "jump", "jump", None, None]


# ---------------------------------------------------------------- factor table


def test_emission_factor_table__every_row_cited_and_wtw_is_ttw_plus_wtt() -> None:
    table = load_factors()
    for name in table.names():
        f = table.get(name)
        assert f.source and f.year >= 2019 and f.boundary and f.unit
    ttw, wtt, wtw = (table.get(f"diesel_b7_{b}").kg_co2e_per_unit for b in ("ttw", "wtt", "wtw"))
    # DESNZ 2025 flat file: WTT- fuels, Diesel (average biofuel blend), litres, ID 11_101_1011_8_1 (not Gas oil)
    assert (ttw, wtt, wtw) == (2.57082, 0.61101, 3.18183) and ttw + wtt == pytest.approx(wtw, abs=1e-9)
    assert table.get("grid_cn_2022").unit == "kWh" and table.get("grid_uk_2025").kg_co2e_per_unit == 0.177


def test_emission_factor_table__bad_rows_are_named() -> None:
    header = "name,activity,key,boundary,unit,kg_co2e_per_unit,source,year,url,note\n"
    with pytest.raises(ConfigError, match=r"f\.csv: line 2: kg_co2e_per_unit: expected a number >= 0, got 'lots'"):
        parse_factors(header + "x,fuel,diesel,TTW,L,lots,DEFRA,2025,,\n", "f.csv")
    with pytest.raises(ConfigError, match=r"line 2: boundary: expected one of TTW, WTT, WTW, generation"):
        parse_factors(header + "x,fuel,diesel,tank,L,1.0,DEFRA,2025,,\n", "f.csv")
    with pytest.raises(KeyError, match="no emission factor named 'nope'"):
        load_factors().get("nope")


def test_estimate_emissions__wtw_summed_from_ttw_and_wtt_when_no_wtw_row() -> None:
    header = "name,activity,key,boundary,unit,kg_co2e_per_unit,source,year,url,note\n"
    table = parse_factors(header + "a,fuel,diesel,TTW,L,2.5,s,2025,,\nb,fuel,diesel,WTT,L,0.5,s,2025,,\n")
    em = estimate_emissions(table, fuel_used_l=10, fuel_type="diesel", distance_km=1, load_kg=None, vehicle_class="x")
    assert (em.co2_ttw_kg, em.co2_wtw_kg) == (25.0, 30.0) and [f.name for f in em.wtw] == ["a", "b"]
    assert em.gas("WTW") == em.gas("TTW") == "CO2e"  # a table without the gas column counts CO2e


def test_emission_factor_table__what_each_factor_counts_is_said() -> None:
    """China's grid factors and IPCC's combustion defaults count CO2 alone; a record must not call them CO2e."""
    table = load_factors()
    co2_only = sorted(n for n in table.names() if table.get(n).gas == "CO2")
    assert co2_only == sorted(
        ["cng_ttw", "lng_ttw", "petrol_ttw"] + [n for n in table.names() if n.startswith("grid_cn")]
    )
    assert table.get("grid_cn_2022").describe()["gas"] == "CO2"
    petrol = estimate_emissions(
        table, fuel_used_l=40, fuel_type="petrol", distance_km=300, load_kg=None, vehicle_class="rigid_26_32t"
    )
    assert (petrol.gas("TTW"), petrol.gas("WTW")) == ("CO2", "CO2 + CO2e")  # IPCC TTW + DESNZ WTT
    diesel = estimate_emissions(
        table, fuel_used_l=40, fuel_type="diesel", distance_km=300, load_kg=None, vehicle_class="rigid_26_32t"
    )
    assert diesel.gas("WTW") == "CO2e"
    header = "name,activity,key,boundary,unit,kg_co2e_per_unit,source,year,url,note,gas\n"
    with pytest.raises(
        ConfigError, match=r"f\.csv: line 2: gas: expected CO2e or CO2 \(what the factor counts\), got 'CH4'"
    ):
        parse_factors(header + "x,fuel,diesel,TTW,L,1.0,DEFRA,2025,,,CH4\n", "f.csv")


# ---------------------------------------------------------------- config and CLI


def test_telematics_config__geofence_errors_name_the_key() -> None:
    from edge_agent.settings import parse_config

    with pytest.raises(ConfigError, match=r"telematics\.geofences\.0\.lat: expected a latitude"):
        parse_config(
            {
                "profile": "truck",
                "device": {"id": "t", "site": "s"},
                "telematics": {"geofences": [{"name": "仓库", "lat": 123, "lon": 0}]},
            }
        )
    assert Geofence(name="x", lat=1, lon=2).radius_m == 300.0


def test_truck_toml_section__validates_with_defaults() -> None:
    import tomllib

    from edge_agent.settings import parse_config

    text = (Path(__file__).parents[2] / "config" / "truck.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    cfg = parse_config({"profile": "truck", "device": {"id": "t", "site": "s"}, **data})
    assert cfg.telematics.gps is not None and cfg.telematics.cleaning.max_hdop == 5.0


TRUCK_TOML = 'profile = "truck"\n[device]\nid = "t1"\nsite = "s"\n[telematics]\n'


def test_config__vehicle_class_needs_a_tonne_km_ttw_or_wtw_row(tmp_path: Path) -> None:
    """A class the table cannot turn into trip CO2 is refused at load, naming the file, key and valid classes."""
    from edge_agent.settings import load_config

    cfg = tmp_path / "config.toml"
    cfg.write_text(TRUCK_TOML, encoding="utf-8")
    assert load_config(cfg).telematics.vehicle_class == "rigid_26_32t"  # the default has a row
    cfg.write_text(TRUCK_TOML + 'vehicle_class = "nonsense"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(cfg)
    [line] = exc.value.problems
    assert line.startswith(f"{cfg}: ") and "telematics.vehicle_class: expected a vehicle class with a tonne-km" in line
    assert "got 'nonsense' (classes: " in line and "rigid_26_32t" in line
    # A battery-electric van's CO2 comes from its kWh only: the class is not read, so not checked.
    cfg.write_text(TRUCK_TOML + 'vehicle_class = "nonsense"\nfuel_type = "electricity"\n', encoding="utf-8")
    assert load_config(cfg).telematics.fuel_type == "electricity"


def test_config__a_class_with_only_a_wtt_row_is_refused_with_the_remedy(tmp_path: Path) -> None:
    table = tmp_path / "factors.csv"
    table.write_text(
        "name,activity,key,boundary,unit,kg_co2e_per_unit,source,year,url,note\n"
        "van_ttw,tonne_km,van,TTW,tonne.km,0.5,test source,2025,,\n"
        "artic_wtt,tonne_km,artic,WTT,tonne.km,0.02,test source,2025,,\n",
        encoding="utf-8",
    )
    from edge_agent.settings import load_config

    cfg = tmp_path / "config.toml"
    body = f'vehicle_class = "artic"\n[telematics.emissions]\nfactors_file = "{table}"\n'
    cfg.write_text(TRUCK_TOML + body, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"got 'artic' \(classes: van\); 'artic' has only well-to-tank rows: add"):
        load_config(cfg)
    cfg.write_text(TRUCK_TOML + body.replace('"artic"', '"van"'), encoding="utf-8")
    assert load_config(cfg).telematics.vehicle_class == "van"


def test_cli_config_set__refuses_a_vehicle_class_without_factors(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(TRUCK_TOML, encoding="utf-8")
    cli = [sys.executable, "-m", "edge_agent.cli", "config"]
    r = subprocess.run(
        [*cli, "set", "-c", str(cfg), "telematics.vehicle_class", "nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2 and "telematics.vehicle_class: expected a vehicle class" in r.stderr
    assert cfg.read_text(encoding="utf-8") == TRUCK_TOML
    cfg.write_text(TRUCK_TOML + 'vehicle_class = "nonsense"\n', encoding="utf-8")  # edited by hand
    r = subprocess.run([*cli, "check", "-c", str(cfg)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "got 'nonsense'" in r.stdout + r.stderr


def _replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "telematics", "replay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_replay__json_summary_on_every_real_log_and_broken_ones(tmp_path: Path) -> None:
    broken = tmp_path / "broken.log"
    good = (DATA / "nl2008u.log").read_bytes()
    broken.write_bytes(b"\x00\xff\xfe" * 50 + good[: len(good) // 2] + b"$GPRMC,1234\n$$$*ZZ\n" + bytes(range(256)))
    logs = [*sorted(DATA.glob("*.log")), broken]
    # One process for all: the CLI entry point is what a user runs.
    code = (
        "import sys, argparse\n"
        "from edge_agent.cli.truck import register\n"
        "p = argparse.ArgumentParser(); register(p.add_subparsers())\n"
        "for log in sys.argv[1:]:\n"
        "    a = p.parse_args(['telematics', 'replay', '--json', log])\n"
        "    rc = a.func(a)\n"
        "    print(json.dumps({'type': 'rc', 'rc': rc}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json\n" + code, *map(str, logs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    objs = [json.loads(line) for line in out.splitlines()]
    summaries = [o for o in objs if o["type"] == "summary"]
    assert [o["rc"] for o in objs if o["type"] == "rc"] == [0] * len(logs)
    assert len(summaries) == len(logs)
    for s in summaries:
        for key in ("sentences", "bad_checksum", "fixes_valid", "fixes_rejected", "distance_km"):
            assert key in s
    by_log = {Path(s["log"]).name: s for s in summaries}
    assert by_log["firefly-II.log"]["bad_checksum"] == 23
    assert by_log["broken.log"]["bad_frames"] >= 2


def test_cli_replay__articulated_truck_with_a_default_load_gets_co2(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        TRUCK_TOML + 'vehicle_class = "artic_34_40t"\n[telematics.emissions]\ndefault_load_kg = 10000\n',
        encoding="utf-8",
    )
    r = _replay("--config", str(cfg), "--json", str(DATA / "nl2008u.log"))
    assert r.returncode == 0, r.stderr
    trips = [o for o in map(json.loads, r.stdout.splitlines()) if o.get("type") == "trip"]
    assert trips and all(t["emission"]["method"] == "tonne_km" and t["co2_boundary"] == "WTW" for t in trips)
    for t in trips:
        assert t["co2_kg"] == pytest.approx(t["emission"]["activity"] * 0.09502, abs=0.01)


def test_cli_replay__human_output_and_missing_file() -> None:
    r = _replay(str(DATA / "bu353s4.log"))
    assert r.returncode == 0 and "bad_checksum" in r.stdout and "sentence types" in r.stdout
    r = _replay("/nonexistent/x.log")
    assert r.returncode == 1 and "cannot read" in r.stderr
