"""The J1939 driver: listens on the bus through python-can (SocketCAN or slcan) and hands on typed readings.

Listen-only by default (slcan `L`; for SocketCAN the interface is brought up with `listen-only on`,
see the README): the driver sends nothing unless `request_pgns` is set. Every frame is counted per
PGN and source address (what `doctor` and `sensors list` show); frames whose PGN has SPNs with a
quantity in the table become readings, at most one per quantity per `emit_interval_s`, from the first
source address that gave a valid value (two ECUs sending the same PGN are not mixed).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from datetime import UTC, datetime
from typing import Any

from edge_agent.drivers.base import DeviceUnavailable, DriverError, FrameError
from edge_agent.drivers.j1939.config import J1939Config
from edge_agent.drivers.j1939.protocol import (
    PGN_DM1,
    PGN_TP_CM,
    PGN_TP_DT,
    PGN_VI,
    Spn,
    SpnTable,
    TransportAssembler,
    decode_dm1,
    decode_spn,
    decode_vin,
    encode_request,
    load_table,
    parse_can_id,
)
from edge_agent.drivers.readings import (
    ActiveFaults,
    FuelLevel,
    FuelRate,
    VehicleId,
    VehicleSpeed,
    VehicleValue,
    Weighing,
)

log = logging.getLogger(__name__)

J1939Reading = VehicleSpeed | FuelRate | FuelLevel | Weighing | VehicleValue | VehicleId | ActiveFaults
# What a request asks for when requests are on: the VIN, total fuel used, engine hours (on-request PGNs).
REQUESTED_PGNS = (PGN_VI, 65257, 65253)
_RECV_SLICE_S = 0.2


class _Raw:
    """A frame as candump writes it, formatted only when a reading keeps it."""

    __slots__ = ("arbitration_id", "data", "tp_bytes")

    def __init__(self, arbitration_id: int, data: bytes, tp_bytes: int = 0) -> None:
        self.arbitration_id, self.data, self.tp_bytes = arbitration_id, data, tp_bytes

    def __str__(self) -> str:
        text = f"{self.arbitration_id:08X}#{self.data.hex().upper()}"
        return f"{text} (TP {self.tp_bytes} bytes)" if self.tp_bytes else text


class J1939Driver:
    """One J1939 bus; read() returns one reading, or None when nothing usable arrived in time."""

    def __init__(self, cfg: J1939Config) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._bus: Any = None
        self._table: SpnTable | None = None
        self._tp = TransportAssembler()
        self._pending: deque[J1939Reading] = deque()
        self._last_emit: dict[str, float] = {}
        self._source_for: dict[str, int] = {}
        self._last_frame_mono = 0.0
        self._next_request = 0.0
        self._faults: dict[int, tuple[tuple[int, int, int], ...]] = {}
        self.pgns_seen: Counter[int] = Counter()
        self.sources_seen: Counter[int] = Counter()
        self.frames = 0
        self.non_j1939 = 0
        self.vin: str | None = None

    @property
    def table(self) -> SpnTable:
        if self._table is None:
            try:
                self._table = load_table(self.cfg.spn_map)
            except ValueError as exc:
                raise DriverError(str(exc)) from None
        return self._table

    # -- lifecycle ---------------------------------------------------------
    def open(self) -> None:
        self.close()
        _ = self.table  # a broken site CAN map is reported before the bus is touched
        import can

        try:
            if self.cfg.interface == "slcan":
                self._bus = can.Bus(
                    interface="slcan",
                    channel=self.cfg.channel,
                    bitrate=self.cfg.bitrate,
                    listen_only=self.cfg.listen_only,
                    sleep_after_open=self.cfg.sleep_after_open_s,
                )
            else:
                # SocketCAN: bitrate and listen-only belong to the interface (ip link set can0 type can
                # bitrate 250000 listen-only on); python-can only reads it.
                self._bus = can.Bus(interface="socketcan", channel=self.cfg.channel)
        except (can.CanError, OSError, ValueError, ImportError) as exc:
            raise DeviceUnavailable(f"{self.cfg.channel}: cannot open the CAN interface: {exc}") from None
        self._tp = TransportAssembler()
        self._pending.clear()
        self._last_frame_mono = time.monotonic()
        self._next_request = 0.0
        log.info(
            "%s: listening on %s (%s, %d bit/s%s)",
            self.name,
            self.cfg.channel,
            self.cfg.interface,
            self.cfg.bitrate,
            ", listen-only" if self.cfg.listen_only else "",
        )

    def close(self) -> None:
        bus, self._bus = self._bus, None
        if bus is None:
            return
        try:
            bus.shutdown()
        except Exception as exc:  # noqa: BLE001 - python-can raises its own and the OS's errors on a gone adapter
            log.debug("%s: shutdown failed: %s", self.name, exc)

    # -- reading -------------------------------------------------------------
    def read(self, timeout_s: float) -> J1939Reading | None:
        if self._bus is None:
            raise DeviceUnavailable(f"{self.cfg.channel}: not open")
        deadline = time.monotonic() + min(timeout_s, 1.0)
        while True:
            if self._pending:
                return self._pending.popleft()
            now = time.monotonic()
            if self.cfg.request_pgns and now >= self._next_request:
                self._send_requests()
                self._next_request = now + self.cfg.request_interval_s
            if now >= deadline:
                return None
            msg = self._recv(min(deadline - now, _RECV_SLICE_S))
            if msg is None:
                quiet_s = time.monotonic() - self._last_frame_mono
                if quiet_s > self.cfg.silence_timeout_s:
                    raise DeviceUnavailable(f"{self.cfg.channel}: no CAN frame for {quiet_s:.0f} s (ignition off?)")
                continue
            self._last_frame_mono = time.monotonic()
            if not msg.is_extended_id or msg.is_remote_frame:
                self.frames += 1
                self.non_j1939 += 1  # an 11-bit frame: not J1939 (a car's OBD bus, or a body bus)
                continue
            self.handle_frame(msg.arbitration_id, bytes(msg.data), time.monotonic())

    def _recv(self, timeout_s: float) -> Any:
        import can

        try:
            return self._bus.recv(timeout_s)
        except (can.CanError, OSError, ValueError, TypeError) as exc:
            raise DeviceUnavailable(f"{self.cfg.channel}: read failed: {exc}") from None

    def _send_requests(self) -> None:
        import can

        for pgn in REQUESTED_PGNS:
            arbitration_id, data = encode_request(pgn, self.cfg.source_address)
            try:
                self._bus.send(can.Message(arbitration_id=arbitration_id, data=data, is_extended_id=True), timeout=0.2)
            except (can.CanError, OSError) as exc:
                log.debug("%s: request for PGN %d not sent: %s", self.name, pgn, exc)

    # -- decoding (no I/O: the probe and tests feed frames here too) ------------
    def handle_frame(self, arbitration_id: int, data: bytes, t_mono: float) -> None:
        """Count one 29-bit frame and queue the readings it yields; FrameError for a malformed one."""
        self.frames += 1
        cid = parse_can_id(arbitration_id)
        self.pgns_seen[cid.pgn] += 1
        self.sources_seen[cid.source] += 1
        raw = _Raw(arbitration_id, data)
        if cid.pgn in (PGN_TP_CM, PGN_TP_DT):
            done = self._tp.feed(cid, data, t_mono)
            if done is not None:
                self.pgns_seen[done.pgn] += 1
                tp_raw = _Raw(arbitration_id, data, len(done.payload))
                self._message(done.pgn, done.source, done.payload, t_mono, tp_raw)
            return
        self._message(cid.pgn, cid.source, data, t_mono, raw)

    def _message(self, pgn: int, source: int, payload: bytes, t_mono: float, raw: _Raw) -> None:
        if pgn == PGN_VI:
            vin = decode_vin(payload)
            if vin != self.vin:
                self.vin = vin
                self._pending.append(VehicleId(t_mono, datetime.now(UTC), vin, f"j1939:VI/SA{source}", str(raw)))
            return
        if pgn == PGN_DM1:
            dm1 = decode_dm1(payload)
            dtcs = tuple((d.spn, d.fmi, d.occurrences) for d in dm1.dtcs)
            if self._faults.get(source) != dtcs:
                self._faults[source] = dtcs
                self._pending.append(
                    ActiveFaults(
                        t_mono,
                        datetime.now(UTC),
                        source,
                        dm1.amber_warning == 1,
                        dm1.red_stop == 1,
                        dm1.mil == 1,
                        dtcs,
                        str(raw),
                    )
                )
            return
        for spn in self.table.spns(pgn):
            if spn.quantity:
                self._quantity(spn, source, payload, t_mono, raw)

    def _quantity(self, spn: Spn, source: int, payload: bytes, t_mono: float, raw: _Raw) -> None:
        chosen = self._source_for.get(spn.quantity)
        if chosen is not None and chosen != source:
            return
        last = self._last_emit.get(spn.quantity)
        if last is not None and t_mono - last < self.cfg.emit_interval_s:
            return  # EEC1 at 50 Hz: most frames end here, before any decoding
        value = decode_spn(payload, spn)
        if value is None:
            return
        self._source_for.setdefault(spn.quantity, source)
        self._last_emit[spn.quantity] = t_mono
        self._pending.append(self._reading(spn, source, value, t_mono, datetime.now(UTC), str(raw)))

    @staticmethod
    def _reading(  # noqa: PLR0917 - one frame's facts, passed on as they are
        spn: Spn, source: int, value: float, t_mono: float, t_utc: datetime, raw: str
    ) -> J1939Reading:
        q = spn.quantity
        if q == "speed_kmh":
            return VehicleSpeed(t_mono=t_mono, t_utc=t_utc, speed_kmh=value, raw=raw)
        if q == "fuel_rate_lph":
            return FuelRate(t_mono=t_mono, t_utc=t_utc, rate_lph=value, source="j1939_lfe", raw=raw)
        if q == "fuel_level_pct":
            return FuelLevel(t_mono=t_mono, t_utc=t_utc, level_pct=value, level_l=None, source="j1939", raw=raw)
        if q == "cargo_weight_kg":
            return Weighing(t_mono=t_mono, t_utc=t_utc, load_kg=value, stable=True, gross=False, raw=raw)
        return VehicleValue(
            t_mono=t_mono,
            t_utc=t_utc,
            quantity=q,
            value=value,
            unit=spn.unit,
            resolution=spn.resolution,
            source=f"j1939:{spn.acronym}/SA{source}",
            raw=raw,
        )

    def describe_bus(self) -> str:
        """PGNs and source addresses heard, and the VIN: for `doctor` and `sensors list`."""
        if not self.frames:
            return "no CAN frame heard"
        top = ", ".join(f"{self.table.acronym(p)}({p})" for p, _ in self.pgns_seen.most_common(8))
        sources = ", ".join(str(s) for s in sorted(self.sources_seen))
        vin = f"; VIN {self.vin}" if self.vin else ""
        extra = f"; {self.non_j1939} non-J1939 (11-bit) frames" if self.non_j1939 else ""
        return f"{self.frames} frames, {len(self.pgns_seen)} PGNs ({top}) from source addresses {sources}{vin}{extra}"


__all__ = ["REQUESTED_PGNS", "FrameError", "J1939Config", "J1939Driver", "J1939Reading"]
