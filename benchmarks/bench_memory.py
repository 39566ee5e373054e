"""Resident memory of the running agent per profile, and the start-up cost of the CLI.

Run on one core:  taskset -c 0 .venv/bin/python benchmarks/bench_memory.py
For each profile (truck, bench, sensors) it runs `edge-agent demo --profile P` (twins, mosquitto, the agent as its own
process), samples the agent process's RSS every 0.5 s and prints idle (median of the last half)
and peak. The side-by-side row is a bare Python process holding a paho MQTT client: the floor
any Python agent starts from.

Then it times `edge-agent status` and `edge-agent config check` on a fresh truck config (wall
time, median of --runs, and each process's peak RSS), beside `python -c pass` and a Python that
imports paho and pydantic: what any Python CLI of this kind pays before doing anything.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil


def agent_rss(
    profile: str, duration_s: float, *, extra: list[str] | None = None, work: str | None = None
) -> tuple[float, float]:
    with contextlib.ExitStack() as stack:
        if work is None:
            work = stack.enter_context(tempfile.TemporaryDirectory())
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
                *(extra or []),
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


# ---------------------------------------------------------------- the operator station's share (issue 10)


def _open_page(state_dir: str, stop: threading.Event) -> None:
    """What a kiosk browser does to the station: one open event stream, the page and its state now and then."""
    import http.client
    import json
    import urllib.parse

    runtime = os.path.join(state_dir, "runtime.json")
    url = None
    while url is None and not stop.wait(0.2):
        try:
            with open(runtime, encoding="utf-8") as f:
                url = json.load(f).get("station_url")
        except (OSError, ValueError):
            continue
    if url is None:
        return
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname or "127.0.0.1", int(u.port or 80)
    events = http.client.HTTPConnection(host, port, timeout=30)
    events.request("GET", "/events")
    stream = events.getresponse()
    cookie = (stream.getheader("set-cookie") or "").split(";")[0]

    def drain() -> None:  # read what the server pushes, as the browser's EventSource does
        with contextlib.suppress(OSError, ValueError):
            while not stop.is_set() and stream.read1(4096):
                pass

    threading.Thread(target=drain, daemon=True).start()
    while not stop.wait(1.0):
        try:
            for path in ("/", "/api/state"):
                c = http.client.HTTPConnection(host, port, timeout=10)
                c.request("GET", path, headers={"Cookie": cookie})
                c.getresponse().read()
                c.close()
        except OSError:  # the demo is stopping the agent
            break
    events.close()


def station_rss(duration_s: float, rounds: int) -> list[tuple[str, float, float]]:
    """The bench profile with the station off, then on with a page open, alternating; medians over `rounds`.

    The OCR engine's own RSS moves by tens of MB from run to run, so one run of each says little.
    """
    runs: dict[str, list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for label, extra in (("bench, station off", ["--no-station"]), ("bench, station on, one page open", [])):
            with tempfile.TemporaryDirectory() as work:
                stop = threading.Event()
                page = threading.Thread(target=_open_page, args=(os.path.join(work, "state"), stop), daemon=True)
                if not extra:
                    page.start()
                runs.setdefault(label, []).append(agent_rss("bench", duration_s, extra=extra, work=work))
                stop.set()
                if page.is_alive():
                    page.join(5)
    return [
        (label, statistics.median(i for i, _ in got), statistics.median(p for _, p in got))
        for label, got in runs.items()
    ]


STATION_ALONE = """
import os, sys, threading, time, tempfile, http.client, pathlib
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
from edge_agent.spine.chain import ChainWriter
from edge_agent.spine.clock import Clock
from edge_agent.spine.keys import generate_key
from edge_agent.spine.outbox import Outbox
work = pathlib.Path(tempfile.mkdtemp())
outbox, _ = Outbox.open_checked(work / "o.db")
hook = []
w = ChainWriter(outbox, device="d", key=generate_key(work / "k"), clock=Clock(), max_bytes=1 << 26,
                on_commit=lambda s: [h(s) for h in hook])
w.start()
body = {"fields": {"order_no": "A1"}, "confidence": {}, "review_reasons": [], "human_reviewed": False}
for _ in range(50):
    w.emit("return_inspection", body)
w.flush()
time.sleep(1)
before = rss()
if sys.argv[1] == "on":
    from edge_agent.station.config import StationConfig
    from edge_agent.station.feed import Levels
    from edge_agent.station.server import Station, StationDeps
    stop = threading.Event()
    import socket
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    st = Station(StationDeps(StationConfig(port=port), "d", "bench", work / "o.db", Levels({}), None,
                             lambda: {"broker": {"connected": True}, "pipeline": {}}, stop))
    st.start()
    hook.append(st.notify)
    ev = http.client.HTTPConnection("127.0.0.1", st.port, timeout=30)
    ev.request("GET", "/events")
    resp = ev.getresponse()
    threading.Thread(target=lambda: [None for _ in iter(lambda: resp.read1(4096), b"")], daemon=True).start()
    for i in range(200):
        w.emit("return_inspection", body)
        if i % 20 == 0:
            for path in ("/", "/api/state"):
                c = http.client.HTTPConnection("127.0.0.1", st.port, timeout=10)
                c.request("GET", path, headers={"Cookie": (resp.getheader("set-cookie") or "").split(";")[0]})
                c.getresponse().read()
                c.close()
    w.flush()
    time.sleep(2)
print(round(before, 1), round(rss(), 1))
"""


def station_alone() -> tuple[float, float]:
    """RSS of a process holding the spine, before and after starting the station with a page open (MB)."""
    out = {}
    for mode in ("off", "on"):
        r = subprocess.run([sys.executable, "-c", STATION_ALONE, mode], capture_output=True, text=True, check=True)
        before, after = (float(x) for x in r.stdout.split())
        out[mode] = after - before
    return out["off"], out["on"]


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


def timed_run(argv: list[str], runs: int, env: dict[str, str]) -> tuple[float, float]:
    """Median wall seconds over `runs` runs of argv, and the largest peak RSS (MB) of one run."""
    walls: list[float] = []
    peak_mb = 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        _, _, usage = os.wait4(proc.pid, 0)  # this child's own rusage (ru_maxrss in KiB on Linux)
        walls.append(time.perf_counter() - t0)
        proc.returncode = 0
        peak_mb = max(peak_mb, usage.ru_maxrss / 1024)
    return statistics.median(walls), peak_mb


def cli_start(runs: int) -> list[tuple[str, float, float]]:
    with tempfile.TemporaryDirectory() as work:
        env = dict(os.environ)
        cfg = os.path.join(work, "etc", "config.toml")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "init",
                "--profile",
                "truck",
                "--device-id",
                "bench-1",
                "--site",
                "lab",
                "--dir",
                os.path.join(work, "etc"),
                "--state-dir",
                os.path.join(work, "state"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        env["EDGE_AGENT_CONFIG"] = cfg
        rows = []
        for label, argv in (
            ("python -c pass (interpreter floor)", [sys.executable, "-c", "pass"]),
            ("python importing paho + pydantic", [sys.executable, "-c", "import paho.mqtt.client, pydantic"]),
            ("edge-agent config check", [sys.executable, "-m", "edge_agent.cli", "config", "check"]),
            ("edge-agent status", [sys.executable, "-m", "edge_agent.cli", "status"]),
        ):
            wall, peak = timed_run(argv, runs, env)
            rows.append((label, wall, peak))
        return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=40.0)
    ap.add_argument("--runs", type=int, default=7, help="runs per CLI command")
    ap.add_argument("--cli-only", action="store_true", help="skip the demo profiles")
    ap.add_argument("--station-only", action="store_true", help="only the operator station's share of the bench")
    ap.add_argument("--profiles", default="truck,bench,sensors", help="demo profiles (bench adds the station)")
    args = ap.parse_args()
    if args.station_only:
        return print_station(args.duration)
    print("| command | median wall | peak RSS | goal |")
    print("|---|---|---|---|")
    for label, wall, peak in cli_start(args.runs):
        goal = "< 0.25 s" if label.startswith("edge-agent") else "-"
        print(f"| `{label}` | {wall:.3f} s | {peak:.0f} MB | {goal} |")
    print()
    if args.cli_only:
        return 0
    rows = []
    profiles = [p for p in args.profiles.split(",") if p]
    for profile in profiles:
        idle, peak = agent_rss(profile, args.duration)
        rows.append((profile, idle, peak))
    floor = bare_paho_rss()
    print("| agent process | idle RSS | peak RSS | goal |")
    print("|---|---|---|---|")
    goals = {"truck": "< 60 MB", "bench": "< 400 MB with models loaded", "sensors": "< 60 MB"}
    for profile, idle, peak in rows:
        print(f"| {profile} profile on the demo twins | {idle:.0f} MB | {peak:.0f} MB | {goals[profile]} |")
    print(f"| bare Python + paho client (the floor) | {floor:.0f} MB | - | - |")
    print()
    return print_station(args.duration) if "bench" in profiles else 0


def print_station(duration_s: float, rounds: int = 3) -> int:
    off, on = station_alone()
    print("| the station alone (spine process, 200 records pushed to one open page) | RSS growth |")
    print("|---|---|")
    print(f"| station off | +{off:.1f} MB |")
    print(f"| station on: imports, server thread, feed, one event stream | +{on:.1f} MB (goal <= 30 MB) |")
    print()
    rows = station_rss(duration_s, rounds)
    print(f"medians of {rounds} alternating runs of the bench demo ({duration_s:.0f} s each)")
    print("| bench agent process | idle RSS | peak RSS | station's share |")
    print("|---|---|---|---|")
    base_idle, base_peak = rows[0][1], rows[0][2]
    for label, idle, peak in rows:
        share = (
            "-"
            if label.endswith("off")
            else f"{idle - base_idle:+.0f} MB idle, {peak - base_peak:+.0f} MB peak (goal <= 30 MB)"
        )
        print(f"| {label} | {idle:.0f} MB | {peak:.0f} MB | {share} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
