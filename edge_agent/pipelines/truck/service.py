"""The truck service: GPS, fuel and weight drivers in their threads, one pipeline thread emitting records."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

from edge_agent.drivers.base import DriverRunner
from edge_agent.drivers.nmea.driver import NmeaDriver
from edge_agent.drivers.readings import (
    ActiveFaults,
    Fix,
    FuelLevel,
    FuelRate,
    VehicleId,
    VehicleSpeed,
    VehicleValue,
    Weighing,
)
from edge_agent.drivers.registry import make_driver
from edge_agent.emissions import check_grid_factor, check_vehicle_class, load_factors
from edge_agent.pipelines.truck.pipeline import TruckPipeline
from edge_agent.service import Heartbeat, ServiceContext

log = logging.getLogger(__name__)

QUEUE_MAX = 2000  # about half an hour of 1 Hz fixes: the pipeline is far faster than that
# The Pi has no real-time clock: GPS time is the one it can trust. A fix dated before this is
# a receiver still on its power-up default (mtk-3301 starts at 1980-01-05), not a time to set.
MIN_GPS_YEAR = 2020


class TelematicsService:
    """Service protocol implementation for the truck profile (see edge_agent/service.py)."""

    name = "telematics"

    def __init__(self) -> None:
        self._ctx: ServiceContext | None = None
        self._pipeline: TruckPipeline | None = None
        self._queue: queue.Queue[Any] = queue.Queue(QUEUE_MAX)
        self._stop = threading.Event()
        self._runners: list[DriverRunner[Any]] = []
        self._gps: NmeaDriver | None = None
        self._worker: threading.Thread | None = None
        self._hb = Heartbeat()
        self.records = 0
        self.vin: str | None = None

    # -- Service protocol ---------------------------------------------------
    def start(self, ctx: ServiceContext) -> None:
        cfg = ctx.config.telematics
        factors = load_factors(cfg.emissions.factors_file)  # ConfigError: unrecoverable setup
        if cfg.fuel_type == "electricity":
            check_grid_factor(factors, cfg.emissions.grid_factor)  # read here, not in a validator
        else:
            check_vehicle_class(factors, cfg.vehicle_class)
        self._ctx = ctx
        self._pipeline = TruckPipeline(cfg, factors, cfg.transport_id or ctx.config.device.id)
        if cfg.gps is not None:
            self._gps = NmeaDriver(cfg.gps)
            self._runners.append(DriverRunner(self._gps, self._on_fix, self._stop))
        else:
            log.warning("telematics: no [telematics.gps] configured; no trips will be cut")
        for side in (cfg.fuel, cfg.weight, cfg.can):
            if side is not None:
                self._runners.append(DriverRunner(make_driver(side), self._on_side, self._stop))
        self._worker = threading.Thread(target=self._run, name="telematics", daemon=True)
        self._worker.start()
        for r in self._runners:
            r.start()

    def stop(self) -> None:
        self._stop.set()
        for r in self._runners:
            r.join(2.0)
        if self._worker is not None:
            self._worker.join(3.0)
        self._drain()
        if self._pipeline is not None and self._ctx is not None:
            for kind, body in self._pipeline.finish():
                self._ctx.emit(kind, body)
                self.records += 1

    def heartbeat(self) -> float:
        return self._hb.t

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "drivers": {
                r.driver.name: {
                    "connected": r.connected,
                    "frames_ok": r.frames_ok,
                    "frames_bad": r.frames_bad,
                    "reconnects": r.reconnects,
                    "recovering": r.recovering,
                    "last_error": r.last_error,
                }
                for r in self._runners
            },
            "queue": self._queue.qsize(),
            "vin": self.vin,
            "records": self.records,
        }
        if self._gps is not None:
            st = self._gps.stats
            out["gps"] = {
                "sentences": st.sentences,
                "bad_checksum": st.bad_checksum,
                "bad_frames": st.bad_frames,
                "baud": self._gps.baud,
            }
        if self._pipeline is not None:
            out["pipeline"] = self._pipeline.summary()
        return out

    # -- driver callbacks (driver threads) -----------------------------------
    def _on_fix(self, fix: Fix) -> None:
        if fix.valid and fix.t_utc.year >= MIN_GPS_YEAR and self._ctx is not None:
            self._ctx.clock.observe_gps(fix.t_utc)
        self._put(fix)

    def _on_side(self, reading: Any) -> None:
        # Fuel and weight drivers stamp readings with the system clock; put them on GPS time.
        skew_s = self._ctx.clock.gps_skew_s if self._ctx is not None else None
        if skew_s is not None and abs(skew_s) > 1.0 and hasattr(reading, "t_utc"):
            reading = replace(reading, t_utc=reading.t_utc + timedelta(seconds=skew_s))
        self._put(reading)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)  # back-pressure on the driver thread, never a drop
                return
            except queue.Full:
                continue

    # -- the pipeline thread --------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._hb.beat()
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._handle(item)

    def _drain(self) -> None:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                self._handle(self._queue.get_nowait())
            except queue.Empty:
                return

    def _handle(self, item: Any) -> None:
        p, ctx = self._pipeline, self._ctx
        if p is None or ctx is None:
            return
        if isinstance(item, Fix):
            recs = p.push_fix(item)
        elif isinstance(item, FuelRate):
            recs = p.push_fuel_rate(item)
        elif isinstance(item, FuelLevel):
            recs = p.push_fuel_level(item)
        elif isinstance(item, Weighing):
            recs = p.push_weighing(item)
        elif isinstance(item, VehicleSpeed):
            recs = p.push_vehicle_speed(item)  # bounds the GPS distance where it is fresh
        elif isinstance(item, VehicleValue):
            recs = p.push_vehicle_value(item)
        elif isinstance(item, ActiveFaults):
            recs = p.push_faults(item)
        elif isinstance(item, VehicleId):
            self.vin = item.vin  # shown in status, never put in a record (a VIN can identify a person's van)
            recs = []
        else:
            log.debug("telematics: ignoring reading of type %s", type(item).__name__)
            recs = []
        for kind, body in recs:
            ctx.emit(kind, body)
            self.records += 1
