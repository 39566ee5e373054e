"""A serial scale on a pty: streams continuous weight lines or answers MT-SICS S/SI, live or replayed."""

from __future__ import annotations

import itertools
import logging
import os
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_agent.drivers.ptytwin import PtyTwin

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScaleSegment:
    """Over `duration_s` the load moves linearly from the previous segment's load to `load_kg`."""

    duration_s: float
    load_kg: float
    stable: bool


@dataclass(frozen=True, slots=True)
class ScaleScenario:
    """Load over time, as segments; after the last one the load stays where it ended."""

    segments: tuple[ScaleSegment, ...]
    start_kg: float = 0.0

    def at(self, t_s: float) -> tuple[float, bool]:
        prev = self.start_kg
        for seg in self.segments:
            if t_s < seg.duration_s:
                frac = t_s / seg.duration_s if seg.duration_s > 0 else 1.0
                return prev + (seg.load_kg - prev) * frac, seg.stable
            t_s -= seg.duration_s
            prev = seg.load_kg
        last = self.segments[-1] if self.segments else ScaleSegment(0.0, self.start_kg, True)
        return last.load_kg, True

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.segments)


def load_drop_scenario(loaded_kg: float = 1250.0, after_drop_kg: float = 400.0) -> ScaleScenario:
    """An axle-load unit on a truck: empty, loading, loaded and stable, a drop at a stop, stable again."""
    return ScaleScenario(
        (
            ScaleSegment(2.0, 0.0, True),
            ScaleSegment(3.0, loaded_kg, False),  # forklift loading: the reading moves
            ScaleSegment(5.0, loaded_kg, True),
            ScaleSegment(1.5, after_drop_kg, False),  # a pallet goes off at a delivery stop
            ScaleSegment(5.0, after_drop_kg, True),
        )
    )


Format = Literal["and", "kern", "mt-sics"]


def format_line(load_kg: float, stable: bool, fmt: Format) -> bytes:
    """The bytes a scale sends for one reading (written from the manuals, independent of the driver)."""
    if fmt == "and":
        return ("ST" if stable else "US").encode() + b",GS," + f"{load_kg:+09.2f}kg\r\n".encode()
    if fmt == "kern":
        return f"{load_kg * 1000:+08.2f} G {'S' if stable else 'U'}\r\n".encode()
    return f"S {'S' if stable else 'D'} {load_kg:>10.2f} kg\r\n".encode()


class ScaleTwin(PtyTwin):
    """A scale on a pseudo-terminal.

    `fmt="and"` or `"kern"` streams continuous lines every `interval_s`; `fmt="mt-sics"` answers
    the MT-SICS commands S, SI, I4, Z, T and `ES` to anything else. The load follows `scenario`
    (scenario time = wall time * `time_scale`), or `replay` streams a recorded byte file verbatim,
    line by line, in a loop.
    """

    name = "scale"

    def __init__(
        self,
        link: str | os.PathLike[str] | None = None,
        *,
        fmt: Format = "and",
        scenario: ScaleScenario | None = None,
        replay: str | os.PathLike[str] | None = None,
        interval_s: float = 0.1,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__(link)
        self.fmt: Format = fmt
        self.scenario = scenario or load_drop_scenario()
        self.replay_lines = _split_lines(Path(replay).read_bytes()) if replay is not None else None
        self.interval_s = interval_s
        self.time_scale = time_scale
        self.lines_sent = 0
        self._inject: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._t0 = time.monotonic()
        self._tare_kg = 0.0

    def inject(self, data: bytes) -> None:
        """Put raw bytes (noise, a truncated line) on the line between two regular lines."""
        self._inject.put(data)

    def now_s(self) -> float:
        return (time.monotonic() - self._t0) * self.time_scale

    def serve(self) -> None:
        self._t0 = time.monotonic()
        if self.fmt == "mt-sics":
            self._serve_commands()
        else:
            self._serve_stream()

    def _flush_injected(self) -> None:
        while True:
            try:
                data = self._inject.get_nowait()
            except queue.Empty:
                return
            self.write(data)

    def _serve_stream(self) -> None:
        replay: Iterator[bytes] | None = itertools.cycle(self.replay_lines) if self.replay_lines else None
        while not self.stop_event.is_set():
            if not self.wait_plugged(0.2):
                continue
            self._flush_injected()
            if replay is not None:
                line = next(replay)
            else:
                load_kg, stable = self.scenario.at(self.now_s())
                line = format_line(load_kg, stable, self.fmt)
            if self.write(line):
                self.lines_sent += 1
            self.stop_event.wait(self.interval_s)

    def _serve_commands(self) -> None:
        while not self.stop_event.is_set():
            req = self.read_request(0.2, terminator=b"\n")
            if req is None:
                continue
            self._flush_injected()
            cmd = req.strip(b"\r\n ").upper()
            load_kg, stable = self.scenario.at(self.now_s())
            net_kg = load_kg - self._tare_kg
            if cmd == b"SI":
                reply = format_line(net_kg, stable, "mt-sics")
            elif cmd == b"S":
                # A real balance waits for stability up to its timeout, then answers S I.
                reply = format_line(net_kg, True, "mt-sics") if stable else b"S I\r\n"
            elif cmd == b"I4":
                reply = b'I4 A "0000000001"\r\n'
            elif cmd == b"Z":
                reply = b"Z A\r\n" if stable else b"Z I\r\n"
                if stable:
                    self._tare_kg = load_kg
            elif cmd == b"T":
                if stable:
                    self._tare_kg = load_kg
                    reply = f"T S {load_kg:>10.2f} kg\r\n".encode()
                else:
                    reply = b"T I\r\n"
            else:
                reply = b"ES\r\n"
            if self.write(reply):
                self.lines_sent += 1


def _split_lines(data: bytes) -> list[bytes]:
    """Cut a recording after each LF, keeping the bytes exactly (a trailing partial line stays too)."""
    lines = [chunk + b"\n" for chunk in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return [line for line in lines if line]
