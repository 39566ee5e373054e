"""An ELM327 v1.5 OBD-II adapter on a pty, with a vehicle behind it: a scenario drive or a carOBD replay."""

from __future__ import annotations

import csv
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge_agent.drivers.ptytwin import PtyTwin

# Twin-side fuel constants (stoichiometric AFR, g/L), written down apart from the driver's table.
TWIN_FUEL = {"petrol": (14.7, 745.0), "diesel": (14.5, 832.0)}

# Service 01 PIDs a real Toyota Etios 2014 answered in the carOBD raw capture (firmware/raw-can.txt).
ETIOS_PIDS = frozenset(
    {
        0x04,
        0x05,
        0x06,
        0x07,
        0x0C,
        0x0D,
        0x0E,
        0x0F,
        0x11,
        0x15,
        0x1F,
        0x21,
        0x2E,
        0x2F,
        0x30,
        0x31,
        0x33,
        0x3C,
        0x42,
        0x44,
        0x45,
        0x47,
        0x49,
        0x4A,
        0x4C,
    }
)


@dataclass(frozen=True, slots=True)
class ObdState:
    """What the vehicle's ECU would report at one instant."""

    speed_kmh: float
    level_pct: float
    fuel_rate_lph: float | None = None
    maf_g_s: float | None = None


class VehicleSource(Protocol):
    """A vehicle: which service 01 PIDs its ECU answers, and their values over time."""

    @property
    def supported(self) -> frozenset[int]: ...

    def at(self, t_s: float) -> ObdState: ...


@dataclass(frozen=True, slots=True)
class DriveSegment:
    """Over `duration_s` speed and tank level move linearly to these values; engine on or off."""

    duration_s: float
    speed_kmh: float
    level_pct: float
    engine_on: bool = True


@dataclass(frozen=True, slots=True)
class DriveScenario:
    """A synthetic drive. Fuel rate follows speed; MAF is what that fuel burns at the fuel's AFR."""

    segments: tuple[DriveSegment, ...]
    start_level_pct: float = 60.0
    start_speed_kmh: float = 0.0
    fuel: str = "diesel"
    has_pid5e: bool = True
    has_maf: bool = True
    idle_lph: float = 1.8
    lph_per_kmh: float = 0.22

    @property
    def supported(self) -> frozenset[int]:
        pids = {0x04, 0x05, 0x0C, 0x0D, 0x2F}
        if self.has_pid5e:
            pids.add(0x5E)
        if self.has_maf:
            pids.add(0x10)
        return frozenset(pids)

    def at(self, t_s: float) -> ObdState:
        speed, level, engine = self.start_speed_kmh, self.start_level_pct, True
        for seg in self.segments:
            if t_s < seg.duration_s:
                frac = t_s / seg.duration_s
                speed, level = speed + (seg.speed_kmh - speed) * frac, level + (seg.level_pct - level) * frac
                engine = seg.engine_on
                break
            t_s -= seg.duration_s
            speed, level, engine = seg.speed_kmh, seg.level_pct, seg.engine_on
        rate = self.idle_lph + self.lph_per_kmh * speed if engine else 0.0
        afr, density = TWIN_FUEL[self.fuel]
        maf = rate * density / 3600.0 * afr
        return ObdState(speed, level, rate if self.has_pid5e else None, maf if self.has_maf else None)


def drive_scenario(*, has_pid5e: bool = True, has_maf: bool = True, fuel: str = "diesel") -> DriveScenario:
    """Depot idle, a drive, a stop with the engine off and a refuel, then on again (about 3 minutes)."""
    return DriveScenario(
        (
            DriveSegment(10.0, 0.0, 59.9),  # idling at the depot
            DriveSegment(20.0, 50.0, 59.4),
            DriveSegment(40.0, 50.0, 58.0),
            DriveSegment(10.0, 0.0, 57.8),
            DriveSegment(15.0, 0.0, 57.8, engine_on=False),  # stop, engine off
            DriveSegment(20.0, 0.0, 95.0, engine_on=False),  # refuel
            DriveSegment(10.0, 0.0, 94.9),
            DriveSegment(20.0, 60.0, 94.3),
            DriveSegment(40.0, 60.0, 92.6),
        ),
        fuel=fuel,
        has_pid5e=has_pid5e,
        has_maf=has_maf,
    )


class CarObdReplay:
    """Replays a carOBD CSV (1 Hz rows of decoded PIDs from a Toyota Etios 2014), looping.

    The Etios answers neither PID 5E nor 10 (it meters air by manifold pressure). With
    `estimate_maf=True` the twin also answers PID 10 with a speed-density estimate from RPM,
    MAP and intake air temperature (displacement `displacement_l`, volumetric efficiency `ve`):
    an estimate for demos, not recorded data.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, estimate_maf: bool = False, displacement_l: float = 1.5, ve: float = 0.85
    ) -> None:
        with Path(path).open(newline="") as f:
            reader = csv.reader(f)
            header = [h.strip().split(" ")[0] for h in next(reader)]
            col = {name: i for i, name in enumerate(header)}
            self.rows: list[tuple[float, float, float, float, float]] = []
            for row in reader:
                cells = [c.strip() for c in row]
                if len(cells) < len(header):
                    continue
                self.rows.append(
                    tuple(
                        float(cells[col[k]])
                        for k in (  # type: ignore[arg-type]
                            "VEHICLE_SPEED",
                            "FUEL_TANK",
                            "ENGINE_RPM",
                            "INTAKE_MANIFOLD_PRESSURE",
                            "INTAKE_AIR_TEMP",
                        )
                    )
                )
        if not self.rows:
            raise ValueError(f"{path}: no carOBD rows")
        self.estimate_maf = estimate_maf
        self.displacement_l = displacement_l
        self.ve = ve

    @property
    def supported(self) -> frozenset[int]:
        return ETIOS_PIDS | {0x10} if self.estimate_maf else ETIOS_PIDS

    def at(self, t_s: float) -> ObdState:
        speed, level, rpm, map_kpa, iat_c = self.rows[int(t_s) % len(self.rows)]
        maf = None
        if self.estimate_maf:
            air_density_kg_m3 = map_kpa * 1000.0 / (287.05 * (iat_c + 273.15))
            maf = air_density_kg_m3 * self.displacement_l / 1000.0 * rpm / 120.0 * self.ve * 1000.0
        return ObdState(speed, level, None, maf)


class Elm327Twin(PtyTwin):
    """An ELM327 v1.5 on a pseudo-terminal.

    Echo on until ATE0, `>` after every answer, `SEARCHING...` before the first OBD answer after
    a reset or ATSP0, `NO DATA` for PIDs the vehicle lacks, `?` for what it does not understand,
    `UNABLE TO CONNECT` when `bus_up` is False. `inject(raw)` replaces the next OBD answer with raw
    bytes; `mute=True` makes it answer nothing at all.
    """

    name = "elm327"

    def __init__(
        self,
        link: str | os.PathLike[str] | None = None,
        *,
        scenario: VehicleSource | None = None,
        time_scale: float = 1.0,
        second_ecu: frozenset[int] | None = None,
        stale_at_open: bytes = b"",
    ) -> None:
        super().__init__(link)
        # A second ECU (7E9, e.g. a transmission or hybrid controller) answering functional requests
        # too, with its own support bitmap: the PIDs listed here, which it answers from the same vehicle.
        self.second_ecu = second_ecu
        # What an adapter left mid-session by another program still has on the line: sent before
        # the answer to the first request (stale prompts, half an answer, noise).
        self.stale_at_open = stale_at_open
        self.vehicle: VehicleSource = scenario or drive_scenario()
        self.time_scale = time_scale
        self.bus_up = True
        self.mute = False
        self.requests: list[str] = []
        self._inject: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.answering = threading.Event()  # set once the host has been sent its first vehicle reading
        self._t0 = time.monotonic()
        self._reset_state()

    def _reset_state(self) -> None:
        self.request_header = "7DF"
        self.echo = True
        self.linefeeds = False
        self.spaces = True
        self.headers = False
        self.searching = True
        self._last = ""

    def inject(self, raw: bytes) -> None:
        self._inject.put(raw)

    def now_s(self) -> float:
        return (time.monotonic() - self._t0) * self.time_scale

    def serve(self) -> None:
        self._t0 = time.monotonic()
        while not self.stop_event.is_set():
            req = self.read_request(0.2, terminator=b"\r")
            if req is None:
                continue
            text = req.decode("ascii", "replace")
            if self.mute:
                continue
            if self.echo:
                self.write(req)
            command = text.strip().replace(" ", "").upper() or self._last
            self.requests.append(command)
            self._last = command
            reply = self._obd(command) if not command.startswith("AT") else self._at(command)
            if self.stale_at_open:
                reply, self.stale_at_open = self.stale_at_open + reply, b""
            self.write(reply)
            if not command.startswith("AT"):
                self.answering.set()

    # -- answers -------------------------------------------------------------
    def _lines(self, *lines: str) -> bytes:
        eol = "\r\n" if self.linefeeds else "\r"
        return ("".join(line + eol for line in lines) + eol + ">").encode("ascii")

    def _at(self, cmd: str) -> bytes:
        body = cmd[2:]
        fixed = {
            "I": "ELM327 v1.5",
            "@1": "OBDII to RS232 Interpreter",
            "RV": "13.9V" if self.bus_up else "12.4V",
            "DP": "AUTO, ISO 15765-4 (CAN 11/500)",
            "D": "OK",
        }
        flags = {"E": "echo", "L": "linefeeds", "S": "spaces", "H": "headers"}
        answer = fixed.get(body, "?")
        if body in ("Z", "WS"):
            self._reset_state()
            return b"\r\r" + self._lines("ELM327 v1.5")
        if len(body) == 2 and body[0] in flags and body[1] in "01":
            setattr(self, flags[body[0]], body[1] == "1")
            answer = "OK"
        elif body[:2] in ("SP", "TP") and len(body) == 3 and body[2] in "0123456789ABC":
            self.searching = True
            answer = "OK"
        elif body[:2] in ("ST", "AT") and 3 <= len(body) <= 4:
            answer = "OK"
        elif body[:2] == "SH" and len(body) == 5 and all(c in "0123456789ABCDEF" for c in body[2:]):
            self.request_header = body[2:]  # ISO 15765-4: 7DF all ECUs, 7E0+n the ECU answering on 7E8+n
            answer = "OK"
        return self._lines(answer)

    def _obd(self, cmd: str) -> bytes:
        if len(cmd) not in (4, 5) or any(c not in "0123456789ABCDEF" for c in cmd):
            return self._lines("?")
        try:
            return self._inject.get_nowait()
        except queue.Empty:
            pass
        prefix = ["SEARCHING..."] if self.searching else []
        if not self.bus_up:
            return self._lines(*prefix, "UNABLE TO CONNECT")
        self.searching = False
        mode, pid = int(cmd[:2], 16), int(cmd[2:4], 16)
        if mode != 0x01:
            return self._lines(*prefix, "NO DATA")
        answers = []
        if self.request_header in ("7DF", "7E0"):
            answers.append(("7E8", self._pid_bytes(pid, self.vehicle.supported)))
        if self.second_ecu is not None and self.request_header in ("7DF", "7E1"):
            answers.append(("7E9", self._pid_bytes(pid, self.second_ecu)))
        sep = " " if self.spaces else ""
        lines = []
        for header, data in answers:
            if data is None:
                continue
            payload = bytes([0x41, pid]) + data
            line = sep.join(f"{b:02X}" for b in payload)
            if self.headers:
                line = sep.join((header, f"{len(payload):02X}", line))
            lines.append(line + (" " if self.spaces else ""))
        return self._lines(*prefix, *(lines or ["NO DATA"]))

    def _pid_bytes(self, pid: int, supported: frozenset[int]) -> bytes | None:
        if pid in (0x00, 0x20, 0x40):
            bits = 0
            for i in range(1, 33):
                p = pid + i
                # PIDs 20 and 40 mean "the next range has supported PIDs".
                flagged = p in supported or (p in (0x20, 0x40) and any(q > p for q in supported))
                if flagged:
                    bits |= 1 << (32 - i)
            return bits.to_bytes(4, "big")
        if pid not in supported:
            return None
        state = self.vehicle.at(self.now_s())
        # (value, scale to the raw integer, byte count) per SAE J1979 for the PIDs modelled here.
        encodings: dict[int, tuple[float | None, float, int]] = {
            0x0D: (state.speed_kmh, 1.0, 1),
            0x2F: (state.level_pct, 255 / 100, 1),
            0x5E: (state.fuel_rate_lph, 20.0, 2),
            0x10: (state.maf_g_s, 100.0, 2),
            0x0C: (800.0, 4.0, 2),  # idle rpm
            0x04: (31.4, 255 / 100, 1),  # engine load %
            0x05: (40.0 + 40, 1.0, 1),  # coolant 80 degC, offset 40
        }
        value, scale, size = encodings.get(pid, (None, 1.0, 1))
        if value is None:
            return None  # a PID the vehicle has but this twin does not model
        raw = max(0, min((1 << (8 * size)) - 1, round(value * scale)))
        return raw.to_bytes(size, "big")
