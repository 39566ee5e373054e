"""NMEA parsing and truck pipeline throughput on one core: edge-agent's decoder next to plain pynmea2.

Run: taskset -c 0 python benchmarks/bench_nmea.py [LOG_DIR]
"""

from __future__ import annotations

import contextlib
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pynmea2

from edge_agent.drivers.base import FrameError
from edge_agent.drivers.nmea.driver import NmeaDecoder
from edge_agent.drivers.readings import Fix
from edge_agent.emissions import load_factors
from edge_agent.pipelines.truck.config import TelematicsConfig
from edge_agent.pipelines.truck.pipeline import TruckPipeline

LOG_DIR = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "tests" / "data" / "nmea"


def _lines() -> list[str]:
    out: list[str] = []
    for p in sorted(LOG_DIR.glob("*.log")):
        out += [ln for ln in p.read_bytes().decode("ascii", "replace").splitlines() if ln and not ln.startswith("#")]
    return out


def _best(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    lines = _lines()

    def ours() -> None:
        dec = NmeaDecoder()
        for ln in lines:
            with contextlib.suppress(FrameError):
                dec.feed_line(ln)
        dec.flush()

    def plain() -> None:
        for ln in lines:
            with contextlib.suppress(pynmea2.ParseError, ValueError, AttributeError, TypeError):
                pynmea2.parse(ln, check=True)

    t_ours, t_plain = _best(ours), _best(plain)
    print(f"{len(lines)} sentences from {LOG_DIR}")
    print(f"{'what':<52} {'sentences/s':>12} {'us/sentence':>12}")
    print(
        f"{'edge-agent NmeaDecoder (checksum, parse, epochs)':<52} {len(lines) / t_ours:>12,.0f} "
        f"{t_ours / len(lines) * 1e6:>12.1f}"
    )
    print(
        f"{'plain pynmea2.parse(check=True), no assembly':<52} {len(lines) / t_plain:>12,.0f} "
        f"{t_plain / len(lines) * 1e6:>12.1f}"
    )

    # End to end: fixes through clean -> drift -> trips -> telemetry -> records.
    n = 36_000
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    fixes = [
        Fix(
            t0 + timedelta(seconds=i),
            30.0,
            120.0 + i * 2e-4 * (i % 600 < 500),
            72.0 if i % 600 < 500 else 0.0,
            90.0,
            True,
            1,
            9,
            0.9,
            10.0,
            "",
        )
        for i in range(n)
    ]
    records = 0

    def pipe() -> None:
        nonlocal records
        p = TruckPipeline(TelematicsConfig(), load_factors(), "bench")
        records = sum(len(p.push_fix(f)) for f in fixes) + len(p.finish())

    t_pipe = _best(pipe, 3)
    print(
        f"{'pipeline: fixes -> records (clean, trips, telemetry)':<52} {n / t_pipe:>12,.0f} "
        f"{t_pipe / n * 1e6:>12.1f}   ({records} records from {n} fixes)"
    )


if __name__ == "__main__":
    main()
