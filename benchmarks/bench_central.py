"""Central ingest benchmark: verified+committed records/s into PostgreSQL against bare paho and raw Ed25519,
two workers against one, and a fleet soak (p99 ingest lag, worker RSS over time, nothing lost).

Run:  .venv/bin/python benchmarks/bench_central.py [--records 60000] [--soak-devices 2000] [--soak-duration 600]
      .venv/bin/python benchmarks/bench_central.py --quick          (a short run while developing)
Each worker is pinned to one core with `taskset` (worker 1 on core 0, worker 2 on core 1, or as --cores
says); mosquitto, PostgreSQL and the publisher float. PostgreSQL runs with its durable defaults (fsync,
synchronous_commit).
Sections are functions in SECTIONS, so others can add theirs (--only NAME runs one).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edge_agent.central.db import open_db  # noqa: E402
from edge_agent.central.simulate import build_fleet, register_fleet, step  # noqa: E402
from tests.central.pg import Postgres  # noqa: E402

PY = sys.executable
CORES = sorted(os.sched_getaffinity(0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(core: int, args: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *args] if shutil.which("taskset") and core in CORES else args


class Mosquitto:
    """mosquitto without per-message logging, unbounded queues and in-flight window (the worker sets its own)."""

    def __init__(self, d: Path) -> None:
        self.port = free_port()
        conf = d / "m.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_inflight_messages 0\nmax_queued_messages 0\nlog_type error\n"
        )
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.1):
                return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# ---------------------------------------------------------------- the stream


def make_stream(devices: int, per_device: int, seed: str) -> tuple[list[Any], list[tuple[str, bytes]]]:
    """Real signed chains (the spine's code) for `devices` x `per_device` records, interleaved as a fleet sends."""
    fleet = build_fleet(devices, seed=seed)
    msgs: list[tuple[str, bytes]] = []
    for _ in range(per_device):
        now = datetime.now(UTC)
        for d in fleet:
            msgs.extend((o.topic, o.payload) for o in step(d, "edge", now))
    return fleet, msgs


def publish_all(url_port: int, msgs: list[tuple[str, bytes]]) -> float:
    """Publish at QoS 1 from this process as fast as the broker takes them; returns the seconds taken."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(5000)
    c.max_queued_messages_set(0)
    acked = [0]
    done = threading.Event()

    def on_pub(*_a: Any) -> None:
        acked[0] += 1
        if acked[0] >= len(msgs):
            done.set()

    c.on_publish = on_pub
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    t0 = time.perf_counter()
    for topic, payload in msgs:
        c.publish(topic, payload, qos=1)
    done.wait(600)
    dt = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return dt


def register(dsn: str, fleet: list[Any]) -> None:
    db = open_db(dsn)
    try:
        register_fleet(db, fleet)
    finally:
        db.close()


def wait_stored(dsn: str, n: int, timeout_s: float) -> int:
    db = open_db(dsn, migrate=False)
    try:
        deadline = time.monotonic() + timeout_s
        got = 0
        while time.monotonic() < deadline:
            got = int(db.query("SELECT COUNT(*) FROM records")[0][0])
            if got >= n:
                return got
            time.sleep(0.2)
        return got
    finally:
        db.close()


def commit_span_s(dsn: str) -> tuple[float, float]:
    """First and last commit time (ingested_at) of the stored records."""
    db = open_db(dsn, migrate=False)
    try:
        lo, hi = db.query("SELECT MIN(ingested_at), MAX(ingested_at) FROM records")[0]
        return float(lo), float(hi)
    finally:
        db.close()


def launch_worker(url: str, dsn: str, core: int, name: str, *, share: str | None, log: Path) -> tuple[Any, int]:
    args = [PY, "-m", "edge_agent.cli", "central", "ingest", "--mqtt", url, "--db", dsn, "--client-id", name]
    if share:
        args += ["--share", share]
    mark = log.read_text(errors="replace").count("subscribed to") if log.exists() else 0
    with log.open("ab") as f:
        proc = subprocess.Popen(pinned(core, args), stdout=f, stderr=subprocess.STDOUT)
    return proc, mark


def wait_subscribed(proc: subprocess.Popen[bytes], mark: int, log: Path) -> subprocess.Popen[bytes]:
    deadline = time.monotonic() + 30
    while log.read_text(errors="replace").count("subscribed to") <= mark:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc


def start_worker(url: str, dsn: str, core: int, name: str, *, share: str | None, log: Path) -> subprocess.Popen[bytes]:
    proc, mark = launch_worker(url, dsn, core, name, share=share, log=log)
    return wait_subscribed(proc, mark, log)


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- sections


def section_verify(ctx: dict[str, Any]) -> list[str]:
    """Raw Ed25519 verification and the whole per-record check, on worker 1's core, same records."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from edge_agent.spine.records import check_record, loads_strict, loads_wire, signing_bytes

    fleet, msgs = ctx["stream"]
    keys = {d.device: Ed25519PublicKey.from_public_bytes(base64.b64decode(d.keys[0])) for d in fleet}
    payloads = [p for _t, p in msgs[:20000]]
    recs = [json.loads(p) for p in payloads]
    prepared = [(keys[r["device"]], base64.b64decode(r["sig"]), signing_bytes(r)) for r in recs]
    pubs = [keys[r["device"]] for r in recs]
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CORES[0]})
    try:
        t0 = time.perf_counter()
        for pub, sig, data in prepared:
            pub.verify(sig, data)
        raw = len(prepared) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for p, pub in zip(payloads, pubs, strict=True):
            check_record(loads_strict(p.decode()), pub)
        full = len(recs) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for p, pub in zip(payloads, pubs, strict=True):
            obj, signing = loads_wire(p)
            check_record(obj, pub, signing=signing)
        wire = len(recs) / (time.perf_counter() - t0)
    finally:
        os.sched_setaffinity(0, before)
    ctx["raw_verify_per_s"] = raw
    return [
        f"| step (one core, in process, core {CORES[0]}) | records/s | vs raw Ed25519 verify |",
        "|---|---:|---:|",
        f"| Ed25519 verify alone (cryptography) | {raw:,.0f} | 1.00x |",
        f"| strict parse + RFC 8785 + SHA-256 + Ed25519 (spine loads_strict, check_record) | {full:,.0f} "
        f"| {full / raw:.2f}x |",
        f"| the same, one pass (spine loads_wire: orjson, RFC 8785 bytes from the parse; what ingest runs) "
        f"| {wire:,.0f} | {wire / raw:.2f}x |",
    ]


def _bare_paho(ctx: dict[str, Any], core: int) -> float:
    """A paho subscriber doing nothing with the messages (auto-ack): the ceiling of receiving alone.

    Like the workers, it drains a backlog the broker queued for its persistent session, so the
    publisher's speed is not what is measured.
    """
    broker = Mosquitto(ctx["tmp"])
    n = len(ctx["stream"][1])
    code = (
        "import sys,time,threading,paho.mqtt.client as m\n"
        "from paho.mqtt.enums import CallbackAPIVersion as V\n"
        "from paho.mqtt.properties import Properties\n"
        "from paho.mqtt.packettypes import PacketTypes\n"
        "n=int(sys.argv[2]);got=[0,0.0,0.0];done=threading.Event();sub=threading.Event()\n"
        "def on_msg(c,u,msg):\n"
        "    got[0]+=1\n"
        "    if got[0]==1: got[1]=time.perf_counter()\n"
        "    if got[0]>=n: got[2]=time.perf_counter(); done.set()\n"
        "p=Properties(PacketTypes.CONNECT);p.SessionExpiryInterval=3600;p.ReceiveMaximum=4000\n"
        "c=m.Client(V.VERSION2,client_id='bare',protocol=m.MQTTv5);c.on_message=on_msg\n"
        "c.on_subscribe=lambda *a: sub.set()\n"
        "c.on_connect=lambda c,*a: c.subscribe('edge/+/+/rec/+',qos=1)\n"
        "c.connect('127.0.0.1',int(sys.argv[1]),clean_start=False,properties=p);c.loop_start()\n"
        "if sys.argv[3]=='subscribe':\n"
        "    sub.wait(10);c.disconnect();c.loop_stop();sys.exit(0)\n"
        "done.wait(600);print(n/(got[2]-got[1]),flush=True)\n"
    )
    try:
        subprocess.run([PY, "-c", code, str(broker.port), str(n), "subscribe"], check=True, timeout=60)
        publish_all(broker.port, ctx["stream"][1])
        out = subprocess.run(
            pinned(core, [PY, "-c", code, str(broker.port), str(n), "drain"]),
            check=True,
            timeout=900,
            capture_output=True,
            text=True,
        ).stdout
        return float(out.strip())
    finally:
        broker.stop()


def _cpu_s(procs: list[subprocess.Popen[bytes]]) -> float:
    import psutil

    return sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs)


def _workers_rate(ctx: dict[str, Any], n_workers: int) -> tuple[float, int, float]:
    """Records/s verified and committed to PostgreSQL by n workers on one shared subscription, the
    count stored, and records per second of the workers' own CPU time (user + system) while draining.

    The workers subscribe, stop, the stream is published into their persistent sessions, then they
    start again and drain it: the figure is the workers' own, not the publisher's. The CPU-time rate
    is what the workers would do with their cores to themselves: on a loaded machine, the wall-clock
    rate is lower by the share of the core other processes took.
    """
    pg: Postgres = ctx["pg"]
    dsn = pg.new_database()
    fleet, msgs = ctx["stream"]
    register(dsn, fleet)
    broker = Mosquitto(ctx["tmp"])
    logs = [ctx["tmp"] / f"w{n_workers}-{i}-{time.time():.0f}.log" for i in range(n_workers)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(n_workers):
            stop(start_worker(broker.url, dsn, CORES[i % len(CORES)], f"bench-w{i}", share="bench", log=logs[i]))
        publish_all(broker.port, msgs)
        # All workers start together, so the commit span measures them draining side by side.
        launched = [
            launch_worker(broker.url, dsn, CORES[i % len(CORES)], f"bench-w{i}", share="bench", log=logs[i])
            for i in range(n_workers)
        ]
        procs = [wait_subscribed(p, mark, logs[i]) for i, (p, mark) in enumerate(launched)]
        cpu0 = _cpu_s(procs)
        got = wait_stored(dsn, len(msgs), 900)
        cpu = _cpu_s(procs) - cpu0
        lo, hi = commit_span_s(dsn)
        return got / max(hi - lo, 1e-9), got, got / max(cpu, 1e-9)
    finally:
        for p in procs:
            stop(p)
        broker.stop()


def section_throughput(ctx: dict[str, Any]) -> list[str]:
    n = len(ctx["stream"][1])
    bare = _bare_paho(ctx, CORES[0])
    one, got1, one_cpu = _workers_rate(ctx, 1)
    two, got2, two_cpu = _workers_rate(ctx, 2) if len(CORES) > 1 else (float("nan"), 0, float("nan"))
    raw = ctx.get("raw_verify_per_s") or float("nan")
    ctx["one_worker_per_s"] = one
    return [
        f"{n:,} records from {ctx['devices']} devices, QoS 1 through mosquitto; "
        f"PostgreSQL {ctx['pg_version']}, durable; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        "",
        "| receiver | records/s | vs raw Ed25519 verify | records per worker CPU-second |",
        "|---|---:|---:|---:|",
        f"| bare paho subscriber, does nothing (core {CORES[0]}) | {bare:,.0f} | {bare / raw:.2f}x | |",
        f"| 1 ingest worker: verify + chain + commit to PostgreSQL, ack after commit (core {CORES[0]}) "
        f"| {one:,.0f} | {one / raw:.2f}x | {one_cpu:,.0f} |",
        f"| 2 ingest workers, one shared subscription (cores {CORES[:2]}) | {two:,.0f} | {two / raw:.2f}x "
        f"| {two_cpu:,.0f} |",
        "",
        f"two workers / one worker: {two / one:.2f}x; stored {got1:,} and {got2:,} of {n:,} "
        "(exactly once: PRIMARY KEY)",
    ]


def section_soak(ctx: dict[str, Any]) -> list[str]:  # noqa: PLR0915 - one run, measured in one place
    """N devices at 1 record/s each for the duration: nothing lost, p99 ingest lag, worker RSS over time."""
    import psutil

    devices, duration = ctx["soak_devices"], ctx["soak_duration"]
    pg: Postgres = ctx["pg"]
    dsn = pg.new_database()
    broker = Mosquitto(ctx["tmp"])
    log = ctx["tmp"] / "soak.log"
    rep = ctx["tmp"] / "soak.json"
    worker = None
    sim = None
    try:
        sim_args = [PY, "-m", "edge_agent.cli", "central", "simulate", "--devices", str(devices), "--rate", "1"]
        # Register first (the simulator does it before publishing), then start the worker, then publish.
        reg = subprocess.run(
            [
                *sim_args,
                "--duration",
                "0",
                "--records",
                "0",
                "--broker",
                broker.url,
                "--register",
                dsn,
                "--seed",
                "soak",
                "--client-id",
                "soak-reg",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if reg.returncode != 0:
            raise RuntimeError(reg.stdout + reg.stderr)
        worker = start_worker(broker.url, dsn, CORES[0], "soak-w", share=None, log=log)
        ps = psutil.Process(worker.pid)
        sim = subprocess.Popen(
            [
                *sim_args,
                "--duration",
                str(duration),
                "--broker",
                broker.url,
                "--seed",
                "soak",
                "--report",
                str(rep),
                "--client-id",
                "soak-sim",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        rss: list[tuple[float, float]] = []
        t0 = time.monotonic()
        while sim.poll() is None:
            rss.append((time.monotonic() - t0, ps.memory_info().rss / 1e6))
            time.sleep(min(5.0, max(duration / 20, 0.5)))
        report = json.loads(rep.read_text())
        want = sum(d["last_seq"] for d in report["devices"].values())
        got = wait_stored(dsn, want, 120)
        rss.append((time.monotonic() - t0, ps.memory_info().rss / 1e6))
        db = open_db(dsn, migrate=False)
        try:
            lags = []
            for ts, at in db.query("SELECT ts, ingested_at FROM records"):
                t = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
                lags.append(float(at) - t)
            verified = int(db.query("SELECT COUNT(*) FROM records WHERE verified = 1")[0][0])
            anomalies = ", ".join(f"{k} {n}" for k, n in db.query("SELECT kind, COUNT(*) FROM anomalies GROUP BY kind"))
        finally:
            db.close()
    finally:
        if sim is not None and sim.poll() is None:
            sim.kill()
        if worker is not None:
            stop(worker)
        broker.stop()
    wlog = log.read_text(errors="replace")
    shutil.copy(log, Path(tempfile.gettempdir()) / "bench-central-soak-worker.log")
    connects = wlog.count("ingest connected")
    lags.sort()
    p50 = statistics.median(lags)
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    first = statistics.mean(r for _t, r in rss[: max(1, len(rss) // 5)])
    last = statistics.mean(r for _t, r in rss[-max(1, len(rss) // 5) :])
    samples = ", ".join(f"{t:.0f}s:{r:.0f}" for t, r in rss[:: max(1, len(rss) // 8)])
    return [
        f"soak: {devices:,} simulated devices x 1 record/s for {duration:.0f} s, "
        f"one worker (core {CORES[0]}), PostgreSQL",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| records published / stored / chain-verified | {want:,} / {got:,} / {verified:,} |",
        f"| lost | {want - got:,} |",
        f"| anomalies | {anomalies or 'none'} |",
        f"| machine load average during the run | {os.getloadavg()[0]:.1f} on {len(CORES)} cores |",
        f"| worker connections to the broker (1 = never reconnected) | {connects} |",
        f"| ingest lag p50 / p99 (commit time - device time) | {p50:.3f} s / {p99:.3f} s |",
        f"| worker RSS first fifth / last fifth of the run | {first:.0f} MB / {last:.0f} MB |",
        "",
        f"RSS over time (s:MB): {samples}",
    ]


SECTIONS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "verify": section_verify,
    "throughput": section_throughput,
    "soak": section_soak,
}


# ---------------------------------------------------------------- anchoring (ledger anchor; issue 12)


def section_anchor(ctx: dict[str, Any]) -> list[str]:
    """Merkle tree + proofs against the ingest's CPU per record, a proof in a 1,000,000-record batch, one
    transaction for 100,000 records; the tables of benchmarks/bench_anchor.py, run on one core."""
    from benchmarks.bench_anchor import section_lines

    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CORES[0]})
    try:
        return section_lines(bool(ctx.get("quick")), ctx.get("one_worker_per_s"))
    finally:
        os.sched_setaffinity(0, before)


SECTIONS["anchor"] = section_anchor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=60000, help="records in the throughput stream")
    ap.add_argument("--devices", type=int, default=200, help="devices in the throughput stream")
    ap.add_argument("--soak-devices", type=int, default=2000)
    ap.add_argument("--soak-duration", type=float, default=600.0, help="seconds (the target run is 600)")
    ap.add_argument("--only", choices=sorted(SECTIONS), action="append")
    ap.add_argument("--quick", action="store_true", help="20,000 records, a 200-device 30 s soak")
    ap.add_argument(
        "--cores",
        help="cores for worker 1, worker 2 (and the in-process verify rows, on worker 1's), e.g. 1,0 when "
        "something else holds core 0; default: the cores this process may use, in order",
    )
    args = ap.parse_args()
    if args.cores:
        CORES[:] = [int(c) for c in args.cores.split(",")]
    if args.quick:
        args.records, args.soak_devices, args.soak_duration = 20000, 200, 30.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-central-"))
    pg = Postgres(durable=True).start()
    try:
        import psycopg

        with psycopg.connect(pg.dsn()) as c:
            version = c.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        per = max(1, args.records // args.devices)
        ctx: dict[str, Any] = {
            "tmp": tmp,
            "pg": pg,
            "pg_version": version,
            "devices": args.devices,
            "stream": make_stream(args.devices, per, "bench"),
            "soak_devices": args.soak_devices,
            "soak_duration": args.soak_duration,
            "quick": args.quick,
        }
        print(
            f"# bench_central  ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, cores {CORES}, python {sys.version.split()[0]},"
            f" load average {', '.join(f'{x:.1f}' for x in os.getloadavg())})"
        )
        for name, fn in SECTIONS.items():
            if args.only and name not in args.only:
                continue
            print(f"\n## {name}\n")
            print("\n".join(fn(ctx)), flush=True)
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
