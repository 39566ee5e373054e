"""The sensor-point service: meters polled in driver threads, sampled with a deadband into `sensor` records."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_agent.drivers.base import DriverRunner
from edge_agent.drivers.modbus.config import ModbusMeterConfig
from edge_agent.drivers.readings import MeterReading
from edge_agent.drivers.registry import make_driver
from edge_agent.pipelines.sensors.config import SensorsConfig, lookup_grid_factor
from edge_agent.schema import format_ts
from edge_agent.service import Heartbeat, ServiceContext

if TYPE_CHECKING:
    from edge_agent.emissions import Factor

log = logging.getLogger(__name__)

QUEUE_MAX = 256  # polls waiting for the sampler; it is far faster than any meter
BODY_VERSION = 2  # 2: energy.co2e_kg became co2_kg with energy.gas (China's grid factors count CO2 alone)


# ---------------------------------------------------------------- pure sampling


@dataclass(frozen=True, slots=True)
class SampleSettings:
    """When a meter's values become a record: beyond a deadband, or at least every max_interval_s."""

    deadbands: Mapping[str, float]  # register name -> absolute change that counts
    default_deadband: float
    max_interval_s: float
    min_interval_s: float = 0.0


@dataclass(frozen=True, slots=True)
class LastSent:
    """What the last record of one meter said, and when (monotonic)."""

    t_mono: float
    values: Mapping[str, float]
    energy_kwh: float | None = None


def settings_for(meter: ModbusMeterConfig, cfg: SensorsConfig) -> SampleSettings:
    deadbands = {r.name: r.deadband for r in meter.all_registers if r.deadband is not None}
    return SampleSettings(deadbands, cfg.default_deadband, cfg.max_interval_s, cfg.min_interval_s)


def send_reason(last: LastSent | None, reading: MeterReading, s: SampleSettings) -> tuple[str, list[str]] | None:
    """("first" | "change" | "heartbeat", names that moved) when the reading should be sent, else None."""
    if last is None:
        return "first", sorted(reading.values)
    elapsed_s = reading.t_mono - last.t_mono
    if elapsed_s < s.min_interval_s:
        return None
    changed = sorted(
        name
        for name, v in reading.values.items()
        if name not in last.values or abs(v - last.values[name]) > s.deadbands.get(name, s.default_deadband)
    )
    if changed:
        return "change", changed
    if elapsed_s >= s.max_interval_s:
        return "heartbeat", []
    return None


def energy_part(kwh_total: float, last_kwh: float | None, factor: Factor, register: str) -> dict[str, Any]:
    """kWh since the previous record and its emissions (grid factor: CO2e, or CO2 as the factor says)."""
    delta_kwh: float | None = None
    reset = False
    if last_kwh is not None:
        if kwh_total < last_kwh:
            reset = True  # meter replaced or counter cleared: this interval's use is unknown
        else:
            delta_kwh = round(kwh_total - last_kwh, 6)
    return {
        "register": register,
        "kwh_total": kwh_total,
        "kwh_delta": delta_kwh,
        "co2_kg": None if delta_kwh is None else round(delta_kwh * factor.kg_co2e_per_unit, 6),
        "gas": factor.gas,
        "counter_reset": reset,
        "factor": factor.describe(),
    }


def sensor_body(
    reading: MeterReading,
    reason: str,
    changed: list[str],
    meter: ModbusMeterConfig,
    energy: dict[str, Any] | None,
) -> dict[str, Any]:
    """The body of one `sensor` record (see docs/records-sensors.md)."""
    body: dict[str, Any] = {
        "v": BODY_VERSION,
        "meter": reading.meter,
        "model": meter.model_name,
        "unit_id": meter.unit_id,
        "t": format_ts(reading.t_utc),
        "reason": reason,
        "changed": changed,
        "values": dict(sorted(reading.values.items())),
        "units": {k: reading.units.get(k, "") for k in sorted(reading.values)},
    }
    if energy is not None:
        body["energy"] = energy
    return body


@dataclass
class MeterSampler:
    """The deadband state of one meter: turns its readings into record bodies."""

    meter: ModbusMeterConfig
    settings: SampleSettings
    factor: Factor | None
    last: LastSent | None = None
    sent: int = 0
    seen: int = 0

    def offer(self, reading: MeterReading) -> dict[str, Any] | None:
        self.seen += 1
        decision = send_reason(self.last, reading, self.settings)
        if decision is None:
            return None
        reason, changed = decision
        energy = None
        kwh = reading.values.get(self.meter.energy_register or "")
        last_kwh = self.last.energy_kwh if self.last is not None else None
        if kwh is not None and self.factor is not None and self.meter.energy_register is not None:
            energy = energy_part(kwh, last_kwh, self.factor, self.meter.energy_register)
        merged = {**(self.last.values if self.last is not None else {}), **reading.values}
        self.last = LastSent(reading.t_mono, merged, kwh if kwh is not None else last_kwh)
        self.sent += 1
        return sensor_body(reading, reason, changed, self.meter, energy)


# ---------------------------------------------------------------- the service


class SensorsService:
    """Service protocol implementation for the sensors profile (see edge_agent/service.py)."""

    name = "sensors"

    def __init__(self) -> None:
        self._ctx: ServiceContext | None = None
        self._queue: queue.Queue[MeterReading] = queue.Queue(QUEUE_MAX)
        self._stop = threading.Event()
        self._runners: dict[str, DriverRunner[MeterReading]] = {}
        self._samplers: dict[str, MeterSampler] = {}
        self._worker: threading.Thread | None = None
        self._hb = Heartbeat()
        self.records = 0

    # -- Service protocol ---------------------------------------------------
    def start(self, ctx: ServiceContext) -> None:
        cfg = ctx.config.sensors
        self._ctx = ctx
        factor = None
        if any(m.energy_register for m in cfg.meters):
            factor = lookup_grid_factor(cfg.grid.factors_file, cfg.grid.factor)
        if not cfg.meters:
            log.warning("sensors: no [[sensors.meters]] configured; nothing to sample")
        for m in cfg.meters:
            self._samplers[m.name] = MeterSampler(m, settings_for(m, cfg), factor)
            self._runners[m.name] = DriverRunner(make_driver(m), self._put, self._stop)
        self._worker = threading.Thread(target=self._run, name="sensors-sampler", daemon=True)
        self._worker.start()
        for r in self._runners.values():
            r.start()
        log.info("sensors: sampling %d meter(s)", len(self._runners))

    def stop(self) -> None:
        self._stop.set()
        for r in self._runners.values():
            r.join(2.0)
        if self._worker is not None:
            self._worker.join(3.0)

    def heartbeat(self) -> float:
        # A runner backing off from a missing meter waits up to a minute on purpose: only
        # connected runners (and the sampler) count as stages that must keep moving.
        beats: list[float] = [self._hb.t] + [r.heartbeat for r in self._runners.values() if r.connected]
        return min(beats)

    def status(self) -> dict[str, Any]:
        meters = {}
        for name, r in self._runners.items():
            s = self._samplers[name]
            meters[name] = {
                "connected": r.connected,
                "polls_ok": r.frames_ok,
                "polls_bad": r.frames_bad,
                "reconnects": r.reconnects,
                "recovering": r.recovering,
                "last_error": r.last_error,
                "records": s.sent,
            }
        return {"records": self.records, "queued": self._queue.qsize(), "meters": meters}

    # -- internals ------------------------------------------------------------
    def _put(self, reading: MeterReading) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(reading, timeout=0.5)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        ctx = self._ctx
        assert ctx is not None  # noqa: S101 - start() set it
        while not self._stop.is_set():
            if ctx.stop.is_set():
                self._stop.set()
                break
            self._hb.beat()
            try:
                reading = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._handle(reading)
        # Flush what the drivers handed over before they stopped.
        while True:
            try:
                self._handle(self._queue.get_nowait())
            except queue.Empty:
                break

    def _handle(self, reading: MeterReading) -> None:
        ctx = self._ctx
        sampler = self._samplers.get(reading.meter)
        if ctx is None or sampler is None:
            return
        body = sampler.offer(reading)
        if body is None:
            return
        ctx.emit("sensor", body)
        self.records += 1
        log.debug("sensors: %s sent (%s)", reading.meter, body["reason"])
