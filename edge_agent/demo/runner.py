"""`edge-agent demo`: twins, a local mosquitto, the agent and a verifying subscriber, shown live."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.cli.common import EXIT_FAIL, EXIT_OK, fail, number_in
from edge_agent.signals import SignalRelay


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class LocalBroker:
    """A mosquitto on a free loopback port, anonymous, for the demo only."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        exe = find_mosquitto()
        if exe is None:
            raise RuntimeError("mosquitto not found: install it (sudo apt install mosquitto) and run the demo again")
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"log_dest file {self.dir / 'mosquitto.log'}\n"
        )
        # Its own session: a Ctrl-C in the terminal reaches the demo only, which stops the agent
        # first and the broker last, so the agent never logs a lost connection on the way out.
        self.proc = subprocess.Popen(
            [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return f"mqtt://127.0.0.1:{self.port}"
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not start on port {self.port}; see {self.dir / 'mosquitto.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Twins:
    """The profile's simulated devices; each has start()/stop()."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, twin: Any) -> Any:
        twin.start()
        self.items.append(twin)
        return twin

    def stop(self) -> None:
        for t in reversed(self.items):
            with contextlib.suppress(Exception):
                t.stop()


class Watcher:
    """A central-side subscriber that verifies every record as it arrives."""

    def __init__(self, url: str, pub_pem: Path, topic: str, from_seq: int | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from edge_agent.spine.keys import load_public_keys
        from edge_agent.spine.verify import Verifier

        self.verifier = Verifier(load_public_keys(pub_pem))
        self.verifier.from_seq = from_seq  # a demo folder used before: its chain goes on from there
        self.lock = threading.Lock()
        self.by_kind: dict[str, int] = {}
        self.recent: list[dict[str, Any]] = []
        self.notable = 0  # notable records seen so far; `recent` holds the last few of them
        self.taken = 0  # how many of them take_new() has handed out
        self.bad = 0
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"demo-central-{os.getpid()}", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        port = int(url.rsplit(":", 1)[1])
        self.client.connect("127.0.0.1", port, 30)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        from edge_agent.spine.records import check_record

        try:
            rec = json.loads(msg.payload)
        except ValueError:
            with self.lock:
                self.bad += 1
            return
        keys = self.verifier.public_keys
        with self.lock:
            self.verifier.add(rec)
            if check_record(rec, keys[0]):
                self.bad += 1
            kind = str(rec.get("kind"))
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            if kind in ("trip", "return_inspection", "event", "sensor", "gap"):
                self.recent.append(rec)
                self.recent = self.recent[-8:]
                self.notable += 1

    def take_new(self) -> list[dict[str, Any]]:
        """Notable records that arrived since the last call (at most the last few)."""
        with self.lock:
            fresh = self.notable - self.taken
            self.taken = self.notable
            return self.recent[-fresh:] if fresh > 0 else []

    def verdict(self) -> tuple[bool, dict[str, Any]]:
        with self.lock:
            self.verifier.findings = []
            self.verifier.finish()
            return self.verifier.ok and self.bad == 0, self.verifier.summary()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
            self.client.loop_stop()


def print_lines(records: list[dict[str, Any]]) -> None:
    for rec in records:
        print(f"seq {rec.get('seq')} {rec.get('kind')}: {describe(rec)}", flush=True)


def format_counts(by_kind: dict[str, int]) -> str:
    """`trip 2, telemetry 40` rather than a Python dict, for people."""
    return ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items(), key=lambda kv: -kv[1])) or "nothing yet"


def describe(rec: dict[str, Any]) -> str:
    b = rec.get("body", {})
    k = rec.get("kind")
    if k == "trip":
        return (
            f"{b.get('route', '')} {b.get('distance_km', 0):.2f} km, fuel {b.get('fuel_used_l')} L, "
            f"CO2 {b.get('co2_kg')} kg"
        )
    if k == "return_inspection":
        f = b.get("fields", {})
        who = " (reviewed)" if b.get("human_reviewed") else ""
        return f"order {f.get('order_no')} sku {f.get('sku')} x{f.get('quantity')} {f.get('reason')}{who}"
    if k == "sensor":
        vals = b.get("values", {})
        names = [n for n in b.get("changed", []) if n in vals][:3] or list(vals)[:3]
        values = ", ".join(f"{name} {vals[name]:g}" for name in names)
        e = b.get("energy") or {}
        energy = f"; {e['kwh_delta']:g} kWh, {e.get('co2_kg', 0):.3f} kg {e.get('gas')}" if e.get("kwh_delta") else ""
        return f"{b.get('meter')} ({b.get('reason')}): {values}{energy}"
    if k == "event":
        return str(b.get("event") or b.get("type") or json.dumps(b, ensure_ascii=False)[:80])
    return json.dumps(b, ensure_ascii=False)[:80]


def _next_seq(db: Path) -> int | None:
    """The seq a demo run in a folder used before starts its records at (the chain goes on), else None."""
    from edge_agent.spine.outbox import Outbox

    if not db.exists():
        return None
    with contextlib.suppress(sqlite3.Error):  # a damaged outbox: the agent moves it aside; verify from seq 1
        ob = Outbox(db, readonly=True)
        try:
            return ob.stats().head_seq + 1
        finally:
            ob.close()
    return None


DEMO_MARK = ".edge-agent-demo"  # what tells a demo's own folder from any other (a device's state)


def cmd_demo(args: argparse.Namespace) -> int:  # noqa: PLR0912, PLR0915 - start and tear down in one place
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix=f"edge-agent-demo-{args.profile}-"))
    if work.is_dir() and not (work / DEMO_MARK).exists() and any(work.iterdir()):
        # A device's folder (init --dir) holds its key and outbox: the demo would sign into its chain.
        return fail(
            f"--dir {work}: holds files a demo did not make (a device's config or state?); "
            "give an empty or new folder, or one an earlier demo made"
        )
    work.mkdir(parents=True, exist_ok=True)
    (work / DEMO_MARK).write_text("made by edge-agent demo; it runs again in this folder\n", encoding="utf-8")
    broker = LocalBroker(work)
    twins = Twins()
    agent: subprocess.Popen[bytes] | None = None
    watcher: Watcher | None = None
    station: str | None = None
    stop = threading.Event()
    relay = SignalRelay(lambda _signum: stop.set(), (signal.SIGTERM,))
    with contextlib.suppress(ValueError):  # outside the main thread there is no handler: --duration ends it
        relay.start()
    try:
        try:
            url = broker.start()
        except RuntimeError as exc:
            return fail(str(exc))
        from edge_agent.cli.main import main as cli_main

        cfg_dir = work / "etc"
        if (cfg_dir / "config.toml").exists():
            (cfg_dir / "config.toml").unlink()
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            rc = cli_main(
                [
                    "init",
                    "--profile",
                    args.profile,
                    "--device-id",
                    f"demo-{args.profile}",
                    "--site",
                    "demo",
                    "--broker",
                    url,
                    "--dir",
                    str(cfg_dir),
                    "--state-dir",
                    str(work / "state"),
                ]
            )
        if rc != 0:
            return rc
        cfg_path = cfg_dir / "config.toml"
        from edge_agent.demo import profiles as demo_profiles
        from edge_agent.settings import load_config, set_value

        set_value(cfg_path, "health.interval_s", "5")
        set_value(cfg_path, "checkpoint.interval_s", "10")
        if args.profile == "truck":
            demo_profiles.setup_truck(cfg_path, work, twins, bus=args.bus)
        elif args.profile == "sensors":
            demo_profiles.setup_sensors(cfg_path, work, twins)
        else:
            demo_profiles.setup_bench(cfg_path, work, twins)
        if args.no_station:
            set_value(cfg_path, "bench.station.enabled", "false")
        pub = work / "device.pub.pem"
        with open(pub, "wb") as f:
            subprocess.run(
                [sys.executable, "-m", "edge_agent.cli", "keys", "export-public", "--config", str(cfg_path)],
                stdout=f,
                check=True,
            )
        next_seq = _next_seq(load_config(cfg_path).db_path)
        watcher = Watcher(url, pub, f"edge/demo/demo-{args.profile}/rec/#", from_seq=next_seq)
        log_file = open(work / "agent.log", "wb")  # noqa: SIM115
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(cfg_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stopped by us with SIGTERM, never by the terminal's Ctrl-C
        )
        if args.profile == "bench" and not args.no_station:
            from edge_agent.demo.bench import station_url

            station = station_url(cfg_path)
            print(
                f"operator station: {station}  (open it in a browser on this machine)",
                file=sys.stderr if args.json else sys.stdout,
                flush=True,
            )
        deadline = time.monotonic() + args.duration if args.duration else float("inf")
        show = _live(args, watcher, cfg_path, agent=agent, stop=stop, deadline=deadline)
        show()
    except KeyboardInterrupt:
        pass
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(15)
            except subprocess.TimeoutExpired:
                agent.kill()
        time.sleep(0.5)
        ok, summary = watcher.verdict() if watcher else (False, {})
        if watcher:
            watcher.stop()
            if not args.json and not sys.stdout.isatty():
                print_lines(watcher.take_new())  # what arrived while the agent shut down (the last trip)
        twins.stop()
        broker.stop()
        relay.stop()
    result = {
        "type": "summary",
        "profile": args.profile,
        "verified": ok,
        **summary,
        "by_kind": watcher.by_kind if watcher else {},
        "agent_exit": agent.returncode if agent else None,
        "station_url": station,
        "work_dir": str(work),
    }
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(
            f"\nrecords verified by the central subscriber: {summary.get('unique', 0)} "
            f"({'INTACT' if ok else 'NOT INTACT'}); by kind: {format_counts(watcher.by_kind if watcher else {})}"
        )
        print(f"agent log: {work / 'agent.log'}; config: {work / 'etc' / 'config.toml'}")
    return EXIT_OK if ok and result["agent_exit"] == 0 else EXIT_FAIL


def _live(
    args: argparse.Namespace,
    watcher: Watcher,
    cfg_path: Path,
    *,
    agent: subprocess.Popen[bytes],
    stop: threading.Event,
    deadline: float,
) -> Callable[[], None]:
    from edge_agent.cli.main import status_data
    from edge_agent.settings import load_config

    cfg = load_config(cfg_path)

    def table() -> Any:
        from rich.table import Table

        t = Table(title=f"edge-agent demo: {args.profile} (Ctrl-C to stop)", expand=True)
        t.add_column("seq", justify="right")
        t.add_column("kind")
        t.add_column("what")
        with watcher.lock:
            recent = list(watcher.recent)
            kinds = dict(watcher.by_kind)
        for rec in recent:
            t.add_row(str(rec.get("seq")), str(rec.get("kind")), describe(rec))
        st = status_data(cfg)
        ob = st.get("outbox") or {}
        t.caption = (
            f"outbox depth {ob.get('depth', '-')} | head seq {(st.get('chain_head') or {}).get('seq', '-')} | "
            f"received {sum(kinds.values())} ({format_counts(kinds)}) | bad {watcher.bad}"
        )
        return t

    def plain_lines() -> None:
        """Not a terminal (a pipe, a log file, systemd): one plain line per notable record as it arrives."""
        while not stop.is_set() and time.monotonic() < deadline and agent.poll() is None:
            stop.wait(0.5)
            print_lines(watcher.take_new())

    def show() -> None:
        if args.json:
            while not stop.is_set() and time.monotonic() < deadline and agent.poll() is None:
                stop.wait(0.5)
            return
        if not sys.stdout.isatty():
            print(f"edge-agent demo: {args.profile}; records as the central subscriber verifies them", flush=True)
            plain_lines()
            return
        from rich.live import Live

        with Live(table(), refresh_per_second=2) as live:
            while not stop.is_set() and time.monotonic() < deadline and agent.poll() is None:
                stop.wait(0.5)
                live.update(table())

    return show


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("demo", help="run a profile on simulated devices with a local broker and a verifying subscriber")
    s.add_argument("--profile", choices=["truck", "bench", "sensors"], default="truck")
    s.add_argument(
        "--bus",
        choices=["obd", "j1939"],
        default="obd",
        help="truck: an OBD-II adapter and an axle scale (a van), or a J1939 CAN bus through slcan (a truck)",
    )
    s.add_argument("--duration", type=number_in(float, 0), default=0, help="seconds to run (default: until Ctrl-C)")
    s.add_argument("--json", action="store_true", help="no live table; print one JSON summary line at the end")
    s.add_argument("--dir", help="work folder (default: a new temp folder)")
    s.add_argument("--no-station", action="store_true", help="bench: leave the operator station off")
    s.set_defaults(func=cmd_demo)
