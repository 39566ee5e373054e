"""An Omnicomm LLS fuel-level sensor on a pty: answers single-read requests from a level scenario."""

from __future__ import annotations

import contextlib
import math
import os
import queue
import time
from dataclasses import dataclass

from edge_agent.drivers.ptytwin import PtyTwin


@dataclass(frozen=True, slots=True)
class LlsSegment:
    """Over `duration_s` the level moves linearly to `level_raw`; `moving` adds fuel slosh."""

    duration_s: float
    level_raw: float
    moving: bool = False


@dataclass(frozen=True, slots=True)
class LlsScenario:
    """Raw level over time; after the last segment the level stays where it ended."""

    segments: tuple[LlsSegment, ...]
    start_raw: float = 2000.0
    temperature_c: int = 21
    slosh_raw: float = 15.0  # amplitude of the ripple while driving

    def at(self, t_s: float) -> int:
        prev = self.start_raw
        for seg in self.segments:
            if t_s < seg.duration_s:
                level = prev + (seg.level_raw - prev) * (t_s / seg.duration_s)
                if seg.moving:
                    level += self.slosh_raw * math.sin(t_s * 2.1)
                return max(0, min(0xFFFF, round(level)))
            t_s -= seg.duration_s
            prev = seg.level_raw
        return max(0, min(0xFFFF, round(prev)))


def refuel_scenario() -> LlsScenario:
    """A truck drives (level falls), stops and refuels (level rises fast), then drives on."""
    return LlsScenario(
        (
            LlsSegment(20.0, 1800.0, moving=True),
            LlsSegment(3.0, 1800.0),  # parked at the pump
            LlsSegment(8.0, 3900.0),  # refuelling
            LlsSegment(3.0, 3900.0),
            LlsSegment(20.0, 3700.0, moving=True),
        )
    )


def crc8_dallas(data: bytes) -> int:
    """CRC8 Dallas/Maxim, bit by bit from the polynomial x^8+x^5+x^4+1 (kept apart from the driver's table)."""
    crc = 0
    for byte in data:
        for bit in range(8):
            mix = (crc ^ (byte >> bit)) & 1
            crc >>= 1
            if mix:
                crc ^= 0b1000_1100
    return crc


class LlsTwin(PtyTwin):
    """An LLS sensor at `address` answering `31 AA 06 CC` with `3E AA 06 TT LL LL FF FF CC`.

    Requests to `address` or the broadcast address 0xFF get an answer; a bad CRC or another
    address gets silence, as on a real bus. `echo=True` hands each request back first, as a
    half-duplex RS-485 adapter without echo suppression does. `silent=True` stops answering.
    """

    name = "lls"

    def __init__(
        self,
        link: str | os.PathLike[str] | None = None,
        *,
        address: int = 1,
        scenario: LlsScenario | None = None,
        time_scale: float = 1.0,
        echo: bool = False,
    ) -> None:
        super().__init__(link)
        self.address = address
        self.scenario = scenario or refuel_scenario()
        self.time_scale = time_scale
        self.echo = echo
        self.silent = False
        self.requests = 0
        self.answers = 0
        self._inject: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._t0 = time.monotonic()

    def inject(self, data: bytes) -> None:
        """Send these bytes instead of the next answer's start (noise, a corrupted frame)."""
        self._inject.put(data)

    def now_s(self) -> float:
        return (time.monotonic() - self._t0) * self.time_scale

    def answer(self, t_s: float) -> bytes:
        level = self.scenario.at(t_s)
        temp = self.scenario.temperature_c & 0xFF
        frequency = max(0, 30000 - level * 3)  # the generator slows as the probe's capacitance rises
        body = bytes([0x3E, self.address, 0x06, temp, level & 0xFF, level >> 8, frequency & 0xFF, frequency >> 8])
        return body + bytes([crc8_dallas(body)])

    def serve(self) -> None:
        self._t0 = time.monotonic()
        buf = bytearray()
        while not self.stop_event.is_set():
            if not self.wait_plugged(0.2):
                buf.clear()
                continue
            buf += self.read_available(0.1)
            while len(buf) >= 4:
                start = buf.find(0x31)
                if start < 0:
                    buf.clear()
                    break
                del buf[:start]
                if len(buf) < 4:
                    break
                req = bytes(buf[:4])
                if crc8_dallas(req[:3]) != req[3] or req[2] != 0x06:
                    del buf[:1]
                    continue
                del buf[:4]
                self.requests += 1
                if req[1] not in (self.address, 0xFF) or self.silent:
                    continue
                if self.echo:
                    self.write(req)
                with contextlib.suppress(queue.Empty):
                    self.write(self._inject.get_nowait())
                if self.write(self.answer(self.now_s())):
                    self.answers += 1
