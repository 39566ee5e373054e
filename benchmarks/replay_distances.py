"""Distance per NMEA log: edge-agent's replay next to a plain pynmea2 + geodesic sum, and what each rule did.

The plain sum is what a user would write first: every RMC with status A, geodesic distance between
consecutive ones. "positions km" is the cleaned, drift-gated sum of positions alone (the replay before
the speed bound); "ours km" is that sum held to the integral of the receiver's speed over ground plus
the fixes' stated accuracy ("speed km"); "clipped" is what the bound refused.
Run: python benchmarks/replay_distances.py [LOG_DIR]
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pynmea2
from geographiclib.geodesic import Geodesic

from edge_agent.drivers.nmea.driver import decode_lines
from edge_agent.emissions import load_factors
from edge_agent.pipelines.truck.config import TelematicsConfig
from edge_agent.pipelines.truck.pipeline import TruckPipeline

LOG_DIR = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "tests" / "data" / "nmea"


def plain_km(lines: list[str]) -> tuple[float, int]:
    total, prev, n = 0.0, None, 0
    for ln in lines:
        if "RMC" not in ln[:7]:
            continue
        with contextlib.suppress(pynmea2.ParseError, ValueError, AttributeError, TypeError):
            m = pynmea2.parse(ln, check=True)
            if m.status != "A":
                continue
            pt = (m.latitude, m.longitude)
            n += 1
            if prev is not None:
                total += Geodesic.WGS84.Inverse(*prev, *pt)["s12"]
            prev = pt
    return total / 1000.0, n


def main() -> None:
    print(
        f"{'log':<36} {'plain km':>9} {'positions km':>12} {'ours km':>9} {'speed km':>9} {'clipped':>8} "
        f"{'no speed':>8}  {'used/rejected':>13}  {'drift-gated':>11}"
    )
    for p in sorted(LOG_DIR.glob("*.log")):
        lines = [ln for ln in p.read_bytes().decode("ascii", "replace").splitlines() if not ln.startswith("#")]
        plain, _n_rmc = plain_km(lines)
        pipe = TruckPipeline(TelematicsConfig(), load_factors(), "replay")
        for fix in decode_lines(lines):
            pipe.push_fix(fix)
        s = pipe.summary()
        ours = s["distance_km"]
        positions = ours + s["distance_clipped_km"]
        rej = ",".join(f"{k}:{v}" for k, v in sorted(s["rejected"].items()))
        print(
            f"{p.name:<36} {plain:>9.3f} {positions:>12.3f} {ours:>9.3f} {s['speed_distance_km']:>9.3f} "
            f"{s['distance_clipped_km']:>8.3f} {s['steps_without_speed']:>8}  "
            f"{s['fixes_used']:>5}/{s['fixes_rejected']:<7} {s['drift_suppressed']:>11}  {rej}"
        )


if __name__ == "__main__":
    main()
