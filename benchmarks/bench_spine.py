"""Spine benchmark: durable append rate, backlog drain to a local mosquitto, end-to-end rate, idle memory.

Run on one core, as the device has few:  taskset -c 0 .venv/bin/python benchmarks/bench_spine.py
Prints a Markdown table; each row has the alternative a user would pick beside it, measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.settings import parse_config
from edge_agent.spine.chain import ChainWriter
from edge_agent.spine.clock import Clock, format_ts
from edge_agent.spine.keys import generate_key
from edge_agent.spine.outbox import Outbox
from edge_agent.spine.records import encode, make_record
from edge_agent.spine.sync import MqttSync

BODY = {"lat": 39.904211, "lon": 116.407395, "speed_kmh": 42.5, "heading_deg": 87.0, "fix": "3d", "sats": 11}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    def __init__(self, d: Path) -> None:
        self.port = free_port()
        conf = d / "m.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_inflight_messages 0\nmax_queued_messages 0\n"
        )
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        # The broker runs on the other core: it stands for the central side, not the device.
        self.proc = subprocess.Popen(
            ["taskset", "-c", "1", exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.1):
                return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def bench_append(d: Path, n: int) -> tuple[float, float]:
    key = generate_key(d / "k1")
    ob, _ = Outbox.open_checked(d / "append.db")
    w = ChainWriter(ob, device="bench", key=key, clock=Clock(), max_bytes=1 << 40, batch_max=512)
    w.start()
    t = time.perf_counter()
    for i in range(n):
        w.emit("telemetry", {**BODY, "i": i})
    w.flush(600)
    ours = n / (time.perf_counter() - t)
    w.stop()
    # The alternative: the same signed, chained record, one transaction (and fsync) per record.
    ob2, _ = Outbox.open_checked(d / "naive.db")
    m = min(n, 3000)
    t = time.perf_counter()
    for i in range(m):
        ob2.append([("telemetry", {**BODY, "i": i})], device="bench", key=key, clock=Clock(), max_bytes=1 << 40)
    naive = m / (time.perf_counter() - t)
    return ours, naive


def bench_drain(d: Path, n: int, broker: Mosquitto) -> tuple[float, float]:
    cfg = parse_config(
        {
            "profile": "sensors",
            "device": {"id": "bench", "site": "lab"},
            "state_dir": str(d / "drain"),
            "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}"},
        }
    )
    key = generate_key(cfg.key_path)
    ob, _ = Outbox.open_checked(cfg.db_path)
    for start in range(0, n, 1000):
        ob.append(
            [("telemetry", {**BODY, "i": i}) for i in range(start, min(n, start + 1000))],
            device="bench",
            key=key,
            clock=Clock(),
            max_bytes=1 << 40,
        )
    payloads = [data for _, _, data in ob.undelivered(0, n)]
    sync = MqttSync(cfg, cfg.db_path)
    t = time.perf_counter()
    sync.start()
    while ob.stats().depth > 0:
        time.sleep(0.02)
    ours = time.perf_counter() - t
    sync.stop()
    # The alternative: bare paho, QoS 1, same payloads and in-flight window, nothing persisted.
    acked = threading.Semaphore(0)
    done = [0]
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(cfg.mqtt.inflight_max)
    c.max_queued_messages_set(0)

    def on_pub(*_a: object) -> None:
        done[0] += 1
        acked.release()

    c.on_publish = on_pub
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    t = time.perf_counter()
    for p in payloads:
        c.publish("bench/bare", p, qos=1)
    while done[0] < n:
        time.sleep(0.02)
    bare = time.perf_counter() - t
    c.disconnect()
    c.loop_stop()
    return ours, bare


def bench_end_to_end(d: Path, n: int, broker: Mosquitto) -> float:
    cfg = parse_config(
        {
            "profile": "sensors",
            "device": {"id": "e2e", "site": "lab"},
            "state_dir": str(d / "e2e"),
            "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}"},
        }
    )
    key = generate_key(cfg.key_path)
    ob, _ = Outbox.open_checked(cfg.db_path)
    sync = MqttSync(cfg, cfg.db_path)
    w = ChainWriter(ob, device="e2e", key=key, clock=Clock(), max_bytes=1 << 40, on_commit=sync.notify)
    w.start()
    sync.start()
    while not sync.connected.is_set():
        time.sleep(0.01)
    t = time.perf_counter()
    for i in range(n):
        w.emit("telemetry", {**BODY, "i": i})
    while sync.delivered < n:
        time.sleep(0.01)
    rate = n / (time.perf_counter() - t)
    sync.stop()
    w.stop()
    return rate


def make_record_rate(d: Path, n: int) -> float:
    key = generate_key(d / "k3")
    clock = Clock()
    prev = "0" * 64
    t = time.perf_counter()
    for i in range(n):
        now, st = clock.now()
        rec = make_record(
            device="x", seq=i + 1, ts=format_ts(now), clock=st, kind="telemetry", body=BODY, prev=prev, key=key
        )
        encode(rec)
        prev = rec["hash"]
    return n / (time.perf_counter() - t)


def idle_rss_mb(profile_cmd: list[str], settle_s: float) -> float | None:
    """Resident memory of a running agent after it settles (VmRSS from /proc)."""
    proc = subprocess.Popen(profile_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(settle_s)
        if proc.poll() is not None:
            return None
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=20000, help="records for the append and end-to-end rows")
    ap.add_argument("--backlog", type=int, default=50000, help="backlog size for the drain row")
    args = ap.parse_args()
    print(
        f"cpu affinity: {sorted(os.sched_getaffinity(0))}  (run with taskset -c 0 for the device figure)",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        sign_rate = make_record_rate(d, 5000)
        ours, naive = bench_append(d, args.records)
        broker = Mosquitto(d)
        try:
            drain, bare = bench_drain(d, args.backlog, broker)
            e2e = bench_end_to_end(d, args.records, broker)
        finally:
            broker.stop()
    print("| measure | edge-agent | alternative, same run |")
    print("|---|---|---|")
    print(f"| build + sign + encode a record (no I/O) | {sign_rate:,.0f} records/s | - |")
    print(
        f"| append durably (signed, chained, group commit, synchronous=FULL) | {ours:,.0f} records/s | "
        f"{naive:,.0f} records/s with one commit per record |"
    )
    print(
        f"| drain a {args.backlog:,}-record backlog to local mosquitto (QoS 1, marked on PUBACK) | {drain:.1f} s "
        f"({args.backlog / drain:,.0f}/s) | {bare:.1f} s with bare paho QoS 1, nothing persisted |"
    )
    print(f"| end to end: emit -> committed -> PUBACK | {e2e:,.0f} records/s | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
