"""Resident memory of the running agent per profile, on the demo's twins and local broker.

Run on one core:  taskset -c 0 .venv/bin/python benchmarks/bench_memory.py
For each profile it runs `edge-agent demo --profile P` (twins, mosquitto, the agent as its own
process), samples the agent process's RSS every 0.5 s and prints idle (median of the last half)
and peak. The side-by-side row is a bare Python process holding a paho MQTT client: the floor
any Python agent starts from.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import psutil


def agent_rss(profile: str, duration_s: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as work:
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "demo",
                "--profile",
                profile,
                "--duration",
                str(duration_s),
                "--json",
                "--dir",
                work,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        samples: list[float] = []
        peak = 0.0
        parent = psutil.Process(demo.pid)
        while demo.poll() is None:
            for child in parent.children():
                try:
                    if "run" in child.cmdline():
                        info = child.memory_info()
                        samples.append(info.rss / 1048576)
                        peak = max(peak, info.rss / 1048576)
                except psutil.Error:
                    pass
            time.sleep(0.5)
        idle = statistics.median(samples[len(samples) // 2 :]) if samples else float("nan")
        return idle, peak


def bare_paho_rss() -> float:
    code = (
        "import time, paho.mqtt.client as m; from paho.mqtt.enums import CallbackAPIVersion as V;"
        "c = m.Client(V.VERSION2); time.sleep(3)"
    )
    p = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(2)
    rss = psutil.Process(p.pid).memory_info().rss / 1048576
    p.wait()
    return rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=40.0)
    args = ap.parse_args()
    rows = []
    for profile in ("truck", "bench"):
        idle, peak = agent_rss(profile, args.duration)
        rows.append((profile, idle, peak))
    floor = bare_paho_rss()
    print("| agent process | idle RSS | peak RSS | goal |")
    print("|---|---|---|---|")
    goals = {"truck": "< 100 MB", "bench": "< 400 MB with models loaded"}
    for profile, idle, peak in rows:
        print(f"| {profile} profile on the demo twins | {idle:.0f} MB | {peak:.0f} MB | {goals[profile]} |")
    print(f"| bare Python + paho client (the floor) | {floor:.0f} MB | - | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
