"""The truck pipeline without I/O: readings in, (kind, body) records out: trip, telemetry and event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from edge_agent.drivers.readings import ActiveFaults, Fix, FuelLevel, FuelRate, VehicleSpeed, VehicleValue, Weighing
from edge_agent.emissions import FactorTable, emission_block, estimate_emissions, trip_co2
from edge_agent.pipelines.truck.clean import DriftGate, FixFilter, FixLimits, FuelEvent, FuelTracker, LoadTracker
from edge_agent.pipelines.truck.config import TelematicsConfig
from edge_agent.pipelines.truck.counters import CounterTrack, SpeedTrack
from edge_agent.pipelines.truck.geo import distance_m, place_name, route_words
from edge_agent.pipelines.truck.trips import Trip, TripDetector
from edge_agent.schema import format_ts

Record = tuple[str, dict[str, Any]]


def _ts(t: float) -> str:
    return format_ts(datetime.fromtimestamp(t, UTC))


def _r(v: float | None, nd: int) -> float | None:
    return None if v is None else round(v, nd)


class Deadband:
    """Telemetry downsampling: a position at least every interval_s while moving, on turns, on stop and start."""

    def __init__(self, interval_s: float, heading_change_deg: float, parked_interval_s: float) -> None:
        self.interval_s = interval_s
        self.heading_change_deg = heading_change_deg
        self.parked_interval_s = parked_interval_s
        self._last_t: float | None = None
        self._last_course: float | None = None
        self._was_moving: bool | None = None

    def reason(self, t: float, course_deg: float | None, moving: bool) -> str | None:
        """Why this fix should be sent, or None to skip it."""
        why = None
        if self._last_t is None:
            why = "first"
        elif moving != self._was_moving:
            why = "start" if moving else "stop"
        elif moving:
            if t - self._last_t >= self.interval_s:
                why = "interval"
            elif course_deg is not None and self._last_course is not None:
                turn = abs((course_deg - self._last_course + 180.0) % 360.0 - 180.0)
                if turn >= self.heading_change_deg:
                    why = "heading"
        elif self.parked_interval_s > 0 and t - self._last_t >= self.parked_interval_s:
            why = "parked"
        self._was_moving = moving
        if why is not None:
            self._last_t = t
            if course_deg is not None:
                self._last_course = course_deg
        return why


# Counter quantities the trip body uses, in order of preference for each amount.
FUEL_COUNTERS = (("total_fuel_hr_l", "j1939_total_fuel_hr"), ("total_fuel_l", "j1939_total_fuel"))
GAS_COUNTERS = (("total_gas_kg", "j1939_total_gas"),)
DISTANCE_COUNTERS = (("total_distance_hr_km", "odometer_hr"), ("total_distance_km", "odometer"))
ENERGY_COUNTERS = (("energy_used_kwh", "energy_counter"),)
COUNTERS = tuple(q for group in (FUEL_COUNTERS, GAS_COUNTERS, DISTANCE_COUNTERS, ENERGY_COUNTERS) for q, _ in group)


class TruckPipeline:
    """clean -> trips -> emissions, plus telemetry and events. Pure: feed readings, get records back."""

    def __init__(self, cfg: TelematicsConfig, factors: FactorTable, transport_id: str) -> None:
        self.cfg = cfg
        self.factors = factors
        self.transport_id = transport_id
        c = cfg.cleaning
        self.filter = FixFilter(FixLimits.from_config(c))
        self.gate = DriftGate(c.stationary_speed_kmh, c.drift_radius_m)
        self.trips = TripDetector(cfg.trips)
        self.fuel = FuelTracker(c)
        self.load = LoadTracker(c.load_change_min_kg)
        # Cumulative counters from the vehicle bus (J1939 LFC/HRLFC, VD/VDHR, GFC, a site's EV map).
        self.counters: dict[str, CounterTrack] = {q: CounterTrack() for q in COUNTERS}
        self.vehicle_speed = SpeedTrack()
        self.faults: dict[int, tuple[tuple[int, int, int], ...]] = {}
        t = cfg.telemetry
        self.deadband = Deadband(t.interval_s, t.heading_change_deg, t.parked_interval_s)
        self.moving = False
        self.last_fix: Fix | None = None
        self.fixes_in = 0
        self.fixes_valid = 0
        self.levels_unusable = 0
        self.counts: dict[str, int] = {"trip": 0, "telemetry": 0, "event": 0}
        self._trip_snapshot: tuple[int, dict[str, int], int] | None = None

    # -- inputs -------------------------------------------------------------
    def push_fix(self, fix: Fix) -> list[Record]:
        self.fixes_in += 1
        self.fixes_valid += fix.valid
        prev = self.filter.last
        if self.filter.check(fix) is not None:
            return []
        speed = fix.speed_kmh
        if speed is None:
            if prev is None:
                speed = 0.0
            else:
                dt = (fix.t_utc - prev.t_utc).total_seconds()
                speed = distance_m(prev.lat, prev.lon, fix.lat, fix.lon) / dt * 3.6 if dt > 0 else 0.0
        tc = self.cfg.trips
        if speed >= tc.start_speed_kmh:
            self.moving = True
        elif speed < tc.stop_speed_kmh:
            self.moving = False
        added = self.gate.step(fix, self.vehicle_speed.at(fix.t_utc.timestamp()))
        was_in_trip = self.trips.in_trip
        out: list[Record] = []
        trip = self.trips.push(fix, added, speed)
        if trip is not None:
            out.append(self._emit("trip", self.trip_body(trip)))
        if self.trips.in_trip and (not was_in_trip or trip is not None):
            self._snapshot()
        self.last_fix = fix
        if self.cfg.telemetry.enabled:
            why = self.deadband.reason(fix.t_utc.timestamp(), fix.course_deg, self.moving)
            if why is not None:
                out.append(self._emit("telemetry", self.telemetry_body(fix, speed, why)))
        return out

    def push_fuel_rate(self, r: FuelRate) -> list[Record]:
        self.fuel.push_rate(r.t_utc.timestamp(), r.rate_lph)
        return []

    def push_fuel_level(self, r: FuelLevel) -> list[Record]:
        level_l = r.level_l
        if level_l is None and r.level_pct is not None and self.cfg.emissions.tank_l is not None:
            level_l = r.level_pct / 100.0 * self.cfg.emissions.tank_l
        if level_l is None:
            self.levels_unusable += 1  # a percentage without tank_l: cannot be litres
            return []
        ev = self.fuel.push_level(r.t_utc.timestamp(), level_l, self.moving)
        return [self._emit("event", self.fuel_event_body(ev))] if ev is not None else []

    def push_vehicle_speed(self, r: VehicleSpeed) -> list[Record]:
        """The vehicle's own speed (CAN/OBD): what the GPS distance is held to where it is fresh."""
        self.vehicle_speed.push(r.t_utc.timestamp(), r.speed_kmh)
        return []

    def push_vehicle_value(self, r: VehicleValue) -> list[Record]:
        """A counter from the vehicle bus (fuel used, odometer, energy); other values are not kept."""
        track = self.counters.get(r.quantity)
        if track is not None:
            track.push(r.t_utc.timestamp(), r.value)
        return []

    def push_faults(self, r: ActiveFaults) -> list[Record]:
        """An event when an ECU's active fault codes change (J1939 DM1)."""
        if self.faults.get(r.source_address, ()) == r.dtcs:
            return []
        self.faults[r.source_address] = r.dtcs
        body = self._event_base(r.t_utc.timestamp(), "faults")
        body.update(
            source_address=r.source_address,
            dtcs=[{"spn": spn, "fmi": fmi, "occurrences": oc} for spn, fmi, oc in r.dtcs],
            amber_warning=r.amber_warning,
            red_stop=r.red_stop,
            mil=r.mil,
        )
        return [self._emit("event", body)]

    def _counter_delta(self, group: tuple[tuple[str, str], ...], t0: float, t1: float) -> tuple[float | None, str]:
        for quantity, source in group:
            d = self.counters[quantity].delta(t0, t1)
            if d is not None:
                return d, source
        return None, "none"

    def push_weighing(self, w: Weighing) -> list[Record]:
        change = self.load.push(w.t_utc.timestamp(), w.load_kg, w.stable)
        if change is None:
            return []
        before, after = change
        body = self._event_base(w.t_utc.timestamp(), "load_change")
        body.update(load_before_kg=_r(before, 1), load_after_kg=_r(after, 1), delta_kg=_r(after - before, 1))
        return [self._emit("event", body)]

    def push_ignition(self, on: bool) -> list[Record]:
        was_in_trip = self.trips.in_trip
        trip = self.trips.push_ignition(on)
        if self.trips.in_trip and not was_in_trip:
            self._snapshot()
        return [self._emit("trip", self.trip_body(trip))] if trip is not None else []

    def finish(self) -> list[Record]:
        """End of data: close the open trip, if it qualifies."""
        trip = self.trips.finish()
        return [self._emit("trip", self.trip_body(trip))] if trip is not None else []

    # -- bodies ---------------------------------------------------------------
    def trip_body(self, trip: Trip) -> dict[str, Any]:
        cfg = self.cfg
        t0, t1 = trip.start.t_utc.timestamp(), trip.end.t_utc.timestamp()
        # Fuel: the vehicle's own total-fuel counter (0.001 L or 0.5 L resolution) before the rate
        # integral, before the tank level; gas engines count kg, electric vans kWh.
        fuel_l, fuel_source = self._counter_delta(FUEL_COUNTERS, t0, t1)
        fuel_kg, energy_kwh = None, None
        if cfg.fuel_type in ("cng", "lng"):
            fuel_l = None
            fuel_kg, fuel_source = self._counter_delta(GAS_COUNTERS, t0, t1)
        elif cfg.fuel_type == "electricity":
            fuel_l = None
            energy_kwh, fuel_source = self._counter_delta(ENERGY_COUNTERS, t0, t1)
        else:
            if fuel_l is None:
                fuel_l, fuel_source = self.fuel.rate_used_l(t0, t1), "fuel_rate"
            if fuel_l is None:
                fuel_l, fuel_source = self.fuel.level_used_l(t0, t1), "fuel_level"
            if fuel_l is None:
                fuel_source = "none"
        load_avg, load_peak = self.load.during(t0, t1)
        load_source = "scale" if load_avg is not None else "none"
        if load_avg is None and cfg.emissions.default_load_kg > 0:
            load_avg, load_peak, load_source = cfg.emissions.default_load_kg, cfg.emissions.default_load_kg, "config"
        gps_km = trip.distance_m / 1000.0
        odometer_km, distance_source = self._counter_delta(DISTANCE_COUNTERS, t0, t1)
        distance_km = odometer_km if odometer_km is not None else gps_km
        if odometer_km is None:
            distance_source = "gps"
        em = estimate_emissions(
            self.factors,
            fuel_used_l=fuel_l,
            fuel_type=cfg.fuel_type,
            distance_km=distance_km,
            load_kg=load_avg,
            vehicle_class=cfg.vehicle_class,
            fuel_used_kg=fuel_kg,
            energy_kwh=energy_kwh,
            grid_factor=cfg.emissions.grid_factor if cfg.fuel_type == "electricity" else None,
        )
        events = self.fuel.events_between(t0, t1)
        start_place = place_name(trip.start.lat, trip.start.lon, cfg.geofences)
        end_place = place_name(trip.end.lat, trip.end.lon, cfg.geofences)
        used0, rej0, drift0 = self._trip_snapshot or (0, {}, 0)
        rejected = {k: v - rej0.get(k, 0) for k, v in self.filter.rejected.items() if v - rej0.get(k, 0) > 0}
        self._trip_snapshot = None
        duration_s = trip.duration_s
        return {
            "timestamp": format_ts(trip.end.t_utc),
            "transport_id": self.transport_id,
            "route": route_words(cfg.route_format, start_place, end_place),
            "distance_km": round(distance_km, 3),
            "fuel_used_l": _r(fuel_l, 2),
            **trip_co2(em, cfg.emissions.report_boundary),
            "start": {
                "t": format_ts(trip.start.t_utc),
                "lat": round(trip.start.lat, 6),
                "lon": round(trip.start.lon, 6),
                "place": start_place,
            },
            "end": {
                "t": format_ts(trip.end.t_utc),
                "lat": round(trip.end.lat, 6),
                "lon": round(trip.end.lon, 6),
                "place": end_place,
            },
            "duration_s": round(duration_s, 1),
            "idle_s": round(trip.idle_s, 1),
            "avg_speed_kmh": round(distance_km / (duration_s / 3600.0), 1) if duration_s > 0 else 0.0,
            "max_speed_kmh": round(trip.max_speed_kmh, 1),
            "fuel_source": fuel_source,
            "fuel_used_kg": _r(fuel_kg, 2),
            "energy_kwh": _r(energy_kwh, 2),
            "grid_factor": em.wtw[0].describe() if em.method == "electricity" else None,
            "distance_source": distance_source,
            "refuels_l": round(sum(e.amount_l for e in events if e.kind == "refuel"), 2),
            "drains_l": round(sum(e.amount_l for e in events if e.kind == "drain"), 2),
            "load_avg_kg": _r(load_avg, 1),
            "load_peak_kg": _r(load_peak, 1),
            "load_source": load_source,
            "emission": emission_block(em),
            "quality": {
                "fixes_used": self.filter.used - used0,
                "fixes_rejected": sum(rejected.values()),
                "rejected": rejected,
                "gaps": trip.gaps,
                "gap_s": round(trip.gap_s, 1),
                "drift_suppressed": self.gate.suppressed - drift0,
                "gps_distance_km": round(gps_km, 3),
                "end_reason": trip.end_reason,
            },
        }

    def telemetry_body(self, fix: Fix, speed_kmh: float, reason: str) -> dict[str, Any]:
        return {
            "timestamp": format_ts(fix.t_utc),
            "transport_id": self.transport_id,
            "lat": round(fix.lat, 6),
            "lon": round(fix.lon, 6),
            "speed_kmh": round(speed_kmh, 1),
            "course_deg": _r(fix.course_deg, 1),
            "hdop": fix.hdop,
            "satellites": fix.satellites,
            "odometer_km": round(self.gate.total_m / 1000.0, 3),
            "reason": reason,
        }

    def fuel_event_body(self, ev: FuelEvent) -> dict[str, Any]:
        body = self._event_base(ev.t_end, ev.kind)
        body.update(
            amount_l=round(ev.amount_l, 2),
            level_before_l=round(ev.level_before_l, 2),
            level_after_l=round(ev.level_after_l, 2),
            started=_ts(ev.t_start),
        )
        return body

    def _event_base(self, t: float, event: str) -> dict[str, Any]:
        body: dict[str, Any] = {"timestamp": _ts(t), "transport_id": self.transport_id, "event": event}
        fix = self.last_fix
        if fix is not None:
            body.update(
                lat=round(fix.lat, 6), lon=round(fix.lon, 6), place=place_name(fix.lat, fix.lon, self.cfg.geofences)
            )
        return body

    def summary(self) -> dict[str, Any]:
        return {
            "fixes": self.fixes_in,
            "fixes_valid": self.fixes_valid,
            "fixes_used": self.filter.used,
            "fixes_rejected": self.filter.rejected_total,
            "rejected": dict(self.filter.rejected),
            "drift_suppressed": self.gate.suppressed,
            "distance_km": round(self.gate.total_m / 1000.0, 3),
            # What the speeds (GPS Doppler or CAN/OBD) integrate to, and the position distance they refused.
            "speed_distance_km": round(self.gate.speed_m / 1000.0, 3),
            "distance_clipped_km": round(self.gate.clipped_m / 1000.0, 3),
            "steps_without_speed": self.gate.unbounded,
            "trips": self.counts["trip"],
            "trips_discarded": self.trips.discarded,
            "telemetry": self.counts["telemetry"],
            "events": self.counts["event"],
        }

    def _snapshot(self) -> None:
        self._trip_snapshot = (self.filter.used, dict(self.filter.rejected), self.gate.suppressed)

    def _emit(self, kind: str, body: dict[str, Any]) -> Record:
        self.counts[kind] += 1
        return kind, body
