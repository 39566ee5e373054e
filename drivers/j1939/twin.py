"""A truck's J1939 bus behind an slcan USB adapter, on a pty: a route driven at the real broadcast rates.

Speaks the Lawicel slcan text protocol the way CANable/USBtin firmware does: `S0`-`S8` set the bitrate,
`O` opens the channel, `L` opens it listen-only, `C` closes it, `V` and `N` answer version and
serial number, each command is acknowledged with CR and refused with BEL (0x07). Received frames
go to the host as `Tiiiiiiiildd..` lines. A frame the host transmits (`T...`) is refused with BEL
while listen-only; otherwise it is put on the "bus", and a Request (PGN 59904) is answered.

Broadcast periods (SAE J1939-71 transmission rates): EEC1 20 ms (engine speed dependent, 10-20 ms),
CCVS and LFE 100 ms, the fuel level, distances, total fuel used, vehicle weight and DM1 1 s, engine hours
and the VIN on request (here: every 5 s as well, as many engines do). The VIN (17 characters + '*')
and a DM1 with two faults need the BAM transport protocol. All encoding is written here, apart from
the driver's table, so a misreading of the standard cannot hide in both.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.drivers.ptytwin import PtyTwin

DEFAULT_VIN = "LFWSRXSJ9M1A00417"  # 17 characters, a made-up FAW-style VIN (WMI LFW)
ENGINE = 0x00  # source address of engine #1
ACCEL_S = 30.0  # seconds a leg takes to reach its speed
BAM_GAP_S = 0.05  # J1939-21 5.10.3: BAM data packets 50-200 ms apart


@dataclass(frozen=True, slots=True)
class Leg:
    """Drive at `speed_kmh` (after a linear change from the previous leg) for duration_s; fuel burns with speed."""

    duration_s: float
    speed_kmh: float


@dataclass(frozen=True, slots=True)
class BusState:
    speed_kmh: float
    distance_km: float
    fuel_used_l: float
    fuel_rate_lph: float
    engine_rpm: float
    engine_hours_h: float


def default_route() -> tuple[Leg, ...]:
    """Depot idle, a city leg, a highway leg, a stop: about 3 minutes of truck time."""
    return (Leg(10, 0), Leg(20, 50), Leg(60, 50), Leg(20, 80), Leg(40, 80), Leg(20, 0), Leg(10, 0))


class J1939Twin(PtyTwin):
    """An slcan adapter on a truck's J1939 bus. `time_scale` runs the route faster than real time."""

    name = "j1939"

    def __init__(
        self,
        link: str | os.PathLike[str] | None = None,
        *,
        route: tuple[Leg, ...] | None = None,
        time_scale: float = 1.0,
        vin: str = DEFAULT_VIN,
        dtcs: tuple[tuple[int, int, int], ...] = ((100, 1, 3), (3226, 2, 1)),
        start_fuel_used_l: float = 123456.5,
        start_distance_km: float = 854934.0,
        cargo_kg: float = 7400.0,
        fuel_level_pct: float = 62.0,
        idle_lph: float = 2.4,
        lph_per_kmh: float = 0.28,
    ) -> None:
        super().__init__(link)
        self.route = route or default_route()
        self.time_scale = time_scale
        self.vin = vin
        self.dtcs = dtcs
        self.start_fuel_used_l = start_fuel_used_l
        self.start_distance_km = start_distance_km
        self.cargo_kg = cargo_kg
        self.fuel_level_pct = fuel_level_pct
        self.idle_lph = idle_lph
        self.lph_per_kmh = lph_per_kmh
        self.open_mode: str | None = None  # "O" normal, "L" listen-only, None closed
        self.bitrate_cmd: str | None = None
        self.commands: list[str] = []
        self.sent_by_host: list[str] = []
        self.refused: list[str] = []
        self.frames_out = 0
        self._later: deque[tuple[float, int, bytes]] = deque()
        self._tp_free_at: dict[int, float] = {}
        self._t0 = time.monotonic()
        self.answering = threading.Event()  # set when the host first opens the bus (the truck's clock starts)

    # -- the simulated truck -----------------------------------------------------
    def truck_s(self) -> float:
        return (time.monotonic() - self._t0) * self.time_scale

    def state(self, t_s: float) -> BusState:
        """Speed, and distance and fuel integrated exactly over the legs.

        Each leg changes speed linearly over its first ACCEL_S seconds (a truck's 0-72 km/h takes
        about that), then holds it.
        """
        speed, dist_km, fuel_l, prev = 0.0, 0.0, 0.0, 0.0
        left = t_s
        for leg in self.route:
            ramp_s = min(ACCEL_S, leg.duration_s)
            for seg_s, v0, v1 in (
                (ramp_s, prev, leg.speed_kmh),
                (leg.duration_s - ramp_s, leg.speed_kmh, leg.speed_kmh),
            ):
                dt = min(left, seg_s)
                if dt <= 0:
                    continue
                v_end = v0 + (v1 - v0) * (dt / seg_s)
                mean = (v0 + v_end) / 2
                dist_km += mean * dt / 3600
                fuel_l += (self.idle_lph + self.lph_per_kmh * mean) * dt / 3600
                speed = v_end
                left -= dt
            prev = leg.speed_kmh
            if left <= 0:
                break
        else:  # after the route: parked, engine idling
            fuel_l += self.idle_lph * left / 3600
            speed = 0.0
        rate = self.idle_lph + self.lph_per_kmh * speed
        return BusState(speed, dist_km, fuel_l, rate, 650.0 + 18.0 * speed, 12345.6 + t_s / 3600)

    # -- slcan -----------------------------------------------------------------
    def serve(self) -> None:
        self._t0 = time.monotonic()
        schedule: list[tuple[float, Callable[[BusState], list[tuple[int, bytes]]]]] = [
            (0.020, self._eec1),
            (0.100, self._ccvs),
            (0.100, self._lfe),
            (1.000, self._one_hz),
            (5.000, self._five_s),
        ]
        due = [0.0] * len(schedule)
        buf = bytearray()
        while not self.stop_event.is_set():
            got = self.read_available(0.005)
            if got:
                buf += got
                while b"\r" in buf:
                    line, _, rest = bytes(buf).partition(b"\r")
                    buf = bytearray(rest)
                    self._command(line.decode("ascii", "replace"))
            if self.open_mode is None:
                continue
            # Frames go out at the real broadcast rates whatever time_scale is: only the truck's
            # clock (its speed, distance, fuel) runs faster.
            now_s = time.monotonic() - self._t0
            for i, (period_s, build) in enumerate(schedule):
                if now_s >= due[i]:
                    due[i] = now_s + period_s
                    self._send(build(self.state(self.truck_s())))
            while self._later and self._later[0][0] <= time.monotonic():
                _, can_id, data = self._later.popleft()
                self._put(can_id, data)

    def _command(self, line: str) -> None:
        self.commands.append(line)
        ok, bell = b"\r", b"\x07"
        if not line:
            self.write(ok)
        elif line[0] == "S" and len(line) == 2 and line[1] in "012345678":
            self.bitrate_cmd = line
            self.write(ok if self.open_mode is None else bell)
        elif line in ("O", "L"):
            if self.bitrate_cmd is None or self.open_mode is not None:
                self.write(bell)
            else:
                self.open_mode = line
                self.write(ok)
                if not self.answering.is_set():
                    # The route starts when the host first listens, as the GPS twin's does.
                    self._t0 = time.monotonic()
                    self.answering.set()
        elif line == "C":
            self.open_mode = None
            self.write(ok)
        elif line == "V":
            self.write(b"V1013\r")
        elif line == "N":
            self.write(b"NA123\r")
        elif line[0] in "tT":
            if self.open_mode != "O":
                self.refused.append(line)
                self.write(bell)
                return
            self.sent_by_host.append(line)
            self.write(b"Z\r" if line[0] == "T" else b"z\r")
            self._answer_request(line)
        else:
            self.write(bell)

    def _answer_request(self, line: str) -> None:
        if line[0] != "T" or len(line) < 16:
            return
        can_id = int(line[1:9], 16)
        if (can_id >> 16) & 0xFF != 0xEA:  # not a Request (PF 234)
            return
        requested = int.from_bytes(bytes.fromhex(line[10:16]), "little")
        st = self.state(self.truck_s())
        answers: dict[int, Callable[[BusState], list[tuple[int, bytes]]]] = {
            65260: self._vin_frames,
            65257: lambda s: [self._lfc(s)],
            65253: lambda s: [self._hours(s)],
        }
        answer = answers.get(requested)
        self._send(answer(st) if answer is not None else [])

    def _send(self, frames: list[tuple[int, bytes]]) -> None:
        """Put frames on the bus; a BAM's packets 50 ms apart, and one BAM at a time per sender (J1939-21)."""
        now = time.monotonic()
        start = now
        dt_packets = 0
        for can_id, data in frames:
            pf, source = (can_id >> 16) & 0xFF, can_id & 0xFF
            if pf == 0xEC and data[:1] == bytes([32]):  # a BAM announcement: wait for the sender's last BAM
                start = max(now, self._tp_free_at.get(source, 0.0))
                dt_packets = 0
                self._later.append((start, can_id, data))
            elif pf == 0xEB:
                dt_packets += 1
                self._later.append((start + BAM_GAP_S * dt_packets, can_id, data))
                self._tp_free_at[source] = start + BAM_GAP_S * (dt_packets + 1)
            else:
                self._put(can_id, data)
        self._later = deque(sorted(self._later))

    def _put(self, can_id: int, data: bytes) -> None:
        self.frames_out += 1
        self.write(f"T{can_id:08X}{len(data)}{data.hex().upper()}\r".encode("ascii"))

    # -- messages (J1939-71 scaling, written out here) ---------------------------
    @staticmethod
    def _id(priority: int, pgn: int, source: int) -> int:
        return priority << 26 | pgn << 8 | source

    def _eec1(self, st: BusState) -> list[tuple[int, bytes]]:
        rpm = round(st.engine_rpm * 8)  # 0.125 rpm/bit
        return [(self._id(3, 61444, ENGINE), bytes([0xF0, 0x7D, 0x87]) + struct.pack("<H", rpm) + b"\x00\xf0\x87")]

    def _ccvs(self, st: BusState) -> list[tuple[int, bytes]]:
        kmh = round(st.speed_kmh * 256)  # 1/256 km/h per bit
        return [(self._id(6, 65265, ENGINE), b"\xf7" + struct.pack("<H", kmh) + b"\x1f\xff\xff\xff\xff")]

    def _lfe(self, st: BusState) -> list[tuple[int, bytes]]:
        rate = round(st.fuel_rate_lph * 20)  # 0.05 L/h per bit
        return [(self._id(6, 65266, ENGINE), struct.pack("<H", rate) + b"\xff\xff\xff\xff\x32\xff")]

    def _lfc(self, st: BusState) -> tuple[int, bytes]:
        total = round((self.start_fuel_used_l + st.fuel_used_l) * 2)  # 0.5 L per bit
        return self._id(6, 65257, ENGINE), struct.pack("<II", round(st.fuel_used_l * 2), total)

    def _hours(self, st: BusState) -> tuple[int, bytes]:
        return self._id(6, 65253, ENGINE), struct.pack("<II", round(st.engine_hours_h * 20), 0xFFFFFFFF)

    def _one_hz(self, st: BusState) -> list[tuple[int, bytes]]:
        hr_total = round((self.start_fuel_used_l + st.fuel_used_l) * 1000)  # 0.001 L per bit
        dist = round((self.start_distance_km + st.distance_km) * 8)  # 0.125 km per bit
        dist_hr = round((self.start_distance_km + st.distance_km) * 200)  # 5 m per bit
        level = round(self.fuel_level_pct / 0.4)
        frames = [
            self._lfc(st),
            (self._id(6, 64777, ENGINE), struct.pack("<II", round(st.fuel_used_l * 1000), hr_total)),
            (self._id(6, 65248, ENGINE), struct.pack("<II", round(st.distance_km * 8), dist)),
            (self._id(6, 65217, ENGINE), struct.pack("<II", dist_hr, round(st.distance_km * 200))),
            (self._id(6, 65276, 0x17), bytes([0xFF, level, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])),
            (
                self._id(6, 65258, 0x0B),
                bytes([0x12]) + struct.pack("<HHH", round(4200 / 0.5), 0xFFFF, round(self.cargo_kg / 2)) + b"\xff",
            ),
        ]
        return frames + self._dm1_frames()

    def _five_s(self, st: BusState) -> list[tuple[int, bytes]]:
        return [self._hours(st), *self._vin_frames(st)]

    def _vin_frames(self, _st: BusState) -> list[tuple[int, bytes]]:
        return self._bam(65260, ENGINE, (self.vin + "*").encode("ascii"))

    def _dm1_frames(self) -> list[tuple[int, bytes]]:
        lamps = bytes([0x04 if self.dtcs else 0x00, 0xFF])  # amber warning lamp on while faults are active
        body = b"".join(
            struct.pack("<H", spn & 0xFFFF) + bytes([(spn >> 16 & 0x7) << 5 | fmi & 0x1F, oc & 0x7F])
            for spn, fmi, oc in self.dtcs
        ) or bytes(4)
        payload = lamps + body
        if len(payload) <= 8:
            return [(self._id(6, 65226, ENGINE), payload + b"\xff" * (8 - len(payload)))]
        return self._bam(65226, ENGINE, payload)

    def _bam(self, pgn: int, source: int, payload: bytes) -> list[tuple[int, bytes]]:
        """J1939-21 BAM: TP.CM (control 32, size, packets, 0xFF, PGN) then numbered TP.DT packets padded 0xFF."""
        packets = (len(payload) + 6) // 7
        cm = bytes([32]) + struct.pack("<H", len(payload)) + bytes([packets, 0xFF]) + pgn.to_bytes(3, "little")
        frames = [(self._id(7, 0xECFF, source), cm)]
        for i in range(packets):
            chunk = payload[i * 7 : i * 7 + 7]
            frames.append((self._id(7, 0xEBFF, source), bytes([i + 1]) + chunk + b"\xff" * (7 - len(chunk))))
        return frames
