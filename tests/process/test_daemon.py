"""The daemon as a process: clean stop, SIGHUP, kill -9 mid-drain, disk pressure, sd_notify watchdog."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from edge_agent.app import Agent, make_service, read_runtime
from edge_agent.cli.main import render_config
from edge_agent.settings import load_config, set_value
from edge_agent.spine.chain import ChainWriter
from edge_agent.spine.clock import Clock
from edge_agent.spine.keys import generate_key, load_key, public_pem
from edge_agent.spine.outbox import Outbox
from edge_agent.spine.verify import Verifier
from tests.broker import Broker, Subscriber
from tests.helpers import wait_until

DEVICE = "dev-1"
SITE = "site-a"


def provision(tmp_path: Path, url: str, **overrides: str) -> Path:
    text = render_config("sensors", DEVICE, SITE, url, tmp_path / "state")
    text = text.replace("interval_s = 60", f"interval_s = {overrides.get('health', '60')}")
    text = text.replace("max_mb = 512", f"max_mb = {overrides.get('max_mb', '512')}")
    text = text.replace("backoff_min_s = 1.0", "backoff_min_s = 0.2").replace(
        "backoff_max_s = 60.0", "backoff_max_s = 1.0"
    )
    p = tmp_path / "config.toml"
    p.write_text(text)
    generate_key(load_config(p).key_path)
    return p


def start_agent(cfg: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def stop_agent(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout_s: float = 10) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, out


def run_status(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`edge-agent status` on `cfg` as a technician runs it, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "status", *extra, "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def kinds_in(db: Path) -> list[str]:
    """Kinds of the records stored so far; empty while the agent is still creating the outbox."""
    try:
        ob = Outbox(db, readonly=True)
    except sqlite3.Error:
        return []
    try:
        return [json.loads(x)["kind"] for x in ob.export()]
    except sqlite3.Error:
        return []
    finally:
        ob.close()


def last_delivered(db: Path) -> int:
    """The outbox's last delivered seq; 0 while the agent is still creating the outbox."""
    try:
        ob = Outbox(db, readonly=True)
    except sqlite3.Error:
        return 0
    try:
        return ob.stats().last_delivered_seq
    except sqlite3.Error:
        return 0
    finally:
        ob.close()


def rec_seqs(sub: Subscriber) -> set[int]:
    return {json.loads(m.payload)["seq"] for m in sub.messages() if "/rec/" in m.topic}


def test_daemon__sigterm_flushes_says_offline_and_exits_0(broker: Broker, tmp_path: Path) -> None:
    cfg = provision(tmp_path, broker.url, health="0.2")
    with Subscriber(broker, f"edge/{SITE}/{DEVICE}/#", client_id="central") as sub:
        proc = start_agent(cfg)
        assert wait_until(lambda: len(rec_seqs(sub)) >= 5), "no records arrived"
        t = time.monotonic()
        rc, out = stop_agent(proc)
        assert rc == 0, out
        assert time.monotonic() - t < 8
        assert wait_until(lambda: any(m.payload == b"offline" for m in sub.messages(f"edge/{SITE}/{DEVICE}/status")), 5)
    ob = Outbox(load_config(cfg).db_path, readonly=True)
    assert ob.stats().depth == 0, "everything committed before the stop was delivered"
    kinds = {json.loads(x)["kind"] for x in ob.export()}
    assert {"event", "health"} <= kinds


def test_daemon__runs_without_numpy(broker: Broker, tmp_path: Path) -> None:
    """sqlite-utils loads numpy when it can (12 MB, all day); the agent imports it while it is the only thread,
    without. Once the signals thread started first, every agent carried numpy: truck idle RSS 59 -> 71 MB."""
    cfg = provision(tmp_path, broker.url, health="0.2")
    proc = start_agent(cfg)
    try:
        assert wait_until(lambda: "health" in kinds_in(load_config(cfg).db_path)), "no health record"
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "sqlite" in maps and "_multiarray_umath" not in maps
    finally:
        rc, out = stop_agent(proc)
    assert rc == 0, out


def test_daemon__a_clean_stop_leaves_no_wal_behind(broker: Broker, tmp_path: Path) -> None:
    """The writer's connection closed before the agent's read-only one, which cannot fold the WAL in: every
    clean stop left outbox.db-wal, and every start then ran the unclean stop's integrity_check."""
    cfg = provision(tmp_path, broker.url, health="0.2")
    db = load_config(cfg).db_path
    proc = start_agent(cfg)
    assert wait_until(lambda: last_delivered(db) >= 3), "no records delivered"
    rc, out = stop_agent(proc)
    assert rc == 0, out
    assert not Path(f"{db}-wal").exists(), out


def test_daemon__refuses_an_outbox_that_holds_another_devices_chain(broker: Broker, tmp_path: Path) -> None:
    """`init --force --device-id NEW` (or config set device.id) on the same state dir: the new id's records went
    on from the old id's head (seq 125, never seq 1), and its undelivered ones went out on the new id's topic."""
    cfg = provision(tmp_path, broker.url, health="0.2")
    db = load_config(cfg).db_path
    proc = start_agent(cfg)
    assert wait_until(lambda: last_delivered(db) >= 2), "no records delivered"
    assert stop_agent(proc)[0] == 0
    before = kinds_in(db)
    cfg.write_text(cfg.read_text().replace(f'id = "{DEVICE}"', 'id = "dev-2"'))
    proc = start_agent(cfg)
    # It exits on its own; the unfixed agent ran on and signed under the new id instead.
    assert wait_until(lambda: proc.poll() is not None or len(kinds_in(db)) > len(before), 30)
    rc, out = stop_agent(proc)
    assert rc == 1, out
    assert f"the outbox holds the chain of device '{DEVICE}'" in out and "not of 'dev-2'" in out, out
    assert "Traceback" not in out
    assert kinds_in(db) == before  # nothing signed under the new id


def test_daemon__sighup_refuses_bad_config_and_applies_good(broker: Broker, tmp_path: Path) -> None:
    cfg = provision(tmp_path, broker.url, health="0")
    proc = start_agent(cfg)
    db = load_config(cfg).db_path
    try:
        # SIGHUP only once the agent handles it (before that, it would end the process).
        assert wait_until(lambda: "event" in kinds_in(db), 30)
        good = cfg.read_text()
        cfg.write_text(good.replace("keepalive_s = 30", 'keepalive_s = "soon"'))
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: kinds_in(db).count("event") >= 2, 20)  # agent_started, config_refused
        assert proc.poll() is None, "a bad config on SIGHUP must not stop the agent"
        cfg.write_text(good)
        set_value(cfg, "health.interval_s", "0.2")
        proc.send_signal(signal.SIGHUP)
        db = load_config(cfg).db_path
        assert wait_until(lambda: "health" in kinds_in(db), 10)
    finally:
        rc, out = stop_agent(proc)
    assert rc == 0
    assert "new config refused, keeping the running one" in out
    assert 'mqtt.keepalive_s: expected an integer 5-3600, got "soon"' in out
    assert "config reloaded" in out


def test_daemon__sigusr1_and_the_watchdogs_sigabrt_write_every_threads_stack(broker: Broker, tmp_path: Path) -> None:
    """A stuck agent says where it is stuck: SIGUSR1 on demand (it keeps running), and the SIGABRT
    systemd's watchdog kills it with."""
    cfg = provision(tmp_path, broker.url)
    log = tmp_path / "agent.log"
    with log.open("w") as out:
        agent = [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(cfg)]
        # No core file from the SIGABRT; exec keeps the agent's pid.
        proc = subprocess.Popen(
            ["sh", "-c", 'ulimit -c 0 && exec "$0" "$@"', *agent], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        assert wait_until(lambda: " running: device " in log.read_text(), 60), log.read_text()
        proc.send_signal(signal.SIGUSR1)

        def dumped(text: str) -> bool:
            """Stacks of the main thread (Agent.run is under whatever it does), the chain writer, the MQTT
            threads, the command processor and the signal relay: 5 or more."""
            stacks = text.count("Thread 0x") + text.count("Current thread 0x")
            return stacks >= 5 and re.search(r'edge_agent/app\.py", line \d+ in run$', text, re.MULTILINE) is not None

        assert wait_until(lambda: dumped(log.read_text()), 10), log.read_text()
        assert proc.poll() is None, "SIGUSR1 must not stop the agent"
        proc.send_signal(signal.SIGABRT)
        assert proc.wait(30) == -signal.SIGABRT
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert "Fatal Python error: Aborted" in text, text
    after = text.split("Fatal Python error: Aborted", 1)[1]
    assert dumped(after), after


def test_daemon__kill_9_mid_drain_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    cfg_path = provision(tmp_path, broker.url)
    cfg = load_config(cfg_path)
    key = load_key(cfg.key_path)
    ob, _ = Outbox.open_checked(cfg.db_path)
    n = 6000
    for start in range(0, n, 500):
        ob.append(
            [("telemetry", {"i": i}) for i in range(start, start + 500)],
            device=DEVICE,
            key=key,
            clock=Clock(),
            max_bytes=1 << 30,
        )
    ob.close()
    sub = Subscriber(broker, f"edge/{SITE}/{DEVICE}/rec/#", client_id="central").start()
    try:
        for cut in (500, 2000, 4000):
            proc = start_agent(cfg_path, {"EDGE_AGENT_TEST": "1"})
            assert wait_until(lambda c=cut: len(rec_seqs(sub)) >= c, 30), f"stalled before {cut}"  # type: ignore[misc]
            proc.kill()  # kill -9: no flush, no goodbye
            proc.communicate()
        proc = start_agent(cfg_path)
        assert wait_until(lambda: set(range(1, n + 1)) <= rec_seqs(sub), 60)
        stop_agent(proc)
        v = Verifier([key.public])
        for m in sub.messages():
            if "/rec/" in m.topic:
                v.add_line(m.payload)
        v.finish()
        assert v.ok, [f.line() for f in v.findings if f.level == "fail"][:5]
    finally:
        sub.stop()


def test_daemon__tiny_outbox_evicts_with_signed_gap(broker: Broker, tmp_path: Path) -> None:
    broker.stop()  # the broker is down while the outbox fills up
    cfg_path = provision(tmp_path, broker.url, health="0.01", max_mb="0.02")
    proc = start_agent(cfg_path)
    db = load_config(cfg_path).db_path
    try:
        assert wait_until(lambda: "gap" in kinds_in(db), 30)
    finally:
        stop_agent(proc)
    lines = list(Outbox(db, readonly=True).export())
    pub = tmp_path / "pub.pem"
    pub.write_bytes(public_pem(load_key(load_config(cfg_path).key_path).public))
    export = tmp_path / "export.jsonl"
    export.write_bytes(b"\n".join(lines) + b"\n")
    r = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "verify", "--pubkey", str(pub), str(export)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stdout
    assert "signed_gap" in r.stdout
    assert "hole" not in r.stdout


def test_daemon__sd_notify_ready_and_watchdog(broker: Broker, tmp_path: Path) -> None:
    cfg = provision(tmp_path, broker.url)
    sock_path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(sock_path))
    s.settimeout(15)
    proc = start_agent(cfg, {"NOTIFY_SOCKET": str(sock_path)})
    got: list[str] = []
    try:
        while not (any("WATCHDOG=1" in g for g in got) and any(g.startswith("STATUS=connected") for g in got)):
            got.append(s.recv(4096).decode())
    finally:
        stop_agent(proc)
        s.close()
    assert any("READY=1" in g for g in got)
    assert any(g.startswith("STATUS=connected; outbox ") for g in got), got


def test_daemon__stuck_publisher_stops_watchdog(tmp_path: Path) -> None:
    from edge_agent.app import STALE_HEARTBEAT_S, Agent

    cfg = load_config(provision(tmp_path, "mqtt://127.0.0.1:9"))
    agent = Agent(cfg)

    class Beat:
        heartbeat = time.monotonic()

    agent.writer = Beat()  # type: ignore[assignment]
    agent.sync = Beat()  # type: ignore[assignment]
    assert agent.stale_stages() == []
    agent.sync.heartbeat = time.monotonic() - STALE_HEARTBEAT_S - 1  # type: ignore[misc]
    assert agent.stale_stages() == ["mqtt-publisher"]


@pytest.mark.parametrize("running", [False, True])
def test_status__works_with_and_without_daemon(broker: Broker, tmp_path: Path, running: bool) -> None:
    cfg = provision(tmp_path, broker.url)
    proc = start_agent(cfg) if running else None
    try:
        if proc:
            db = load_config(cfg).db_path
            if not wait_until(lambda: last_delivered(db) >= 1, 20):
                _, out = stop_agent(proc)
                proc = None
                pytest.fail(f"nothing delivered in 20 s; agent said:\n{out[-3000:]}")
            state = load_config(cfg).state_dir
            assert wait_until(lambda: (read_runtime(state) or {}).get("mqtt_connected"), 20)
        r = run_status(cfg, "--json")
    finally:
        if proc:
            stop_agent(proc)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["device"] == DEVICE
    assert data["daemon"] == ("running" if running else "not running")
    if running:
        assert data["broker"] == "connected"
        assert data["chain_head"]["seq"] >= 1


def test_status__says_running_when_runtime_json_cannot_be_written(broker: Broker, tmp_path: Path) -> None:
    """A full disk stops runtime.json; the daemon's lock still tells the truth (issue 9, defect 2)."""
    cfg = provision(tmp_path, broker.url)
    state = load_config(cfg).state_dir
    proc = start_agent(cfg)
    try:
        assert wait_until((state / "runtime.json").exists, 20)
        (state / "runtime.json").unlink()
        (state / "runtime.json").mkdir()  # cannot be replaced by a file: as good as a full disk
        r = run_status(cfg)
        assert "daemon:        running" in r.stdout, r.stdout + r.stderr
        # And a second agent on the same state dir is refused, naming the remedy.
        second = subprocess.run(
            [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 1 and "another edge-agent already runs on" in second.stderr
    finally:
        code, out = stop_agent(proc)
    assert code == 0, out[-2000:]


def test_status__last_delivered_says_none_before_any_delivery(tmp_path: Path) -> None:
    cfg = provision(tmp_path, "mqtt://127.0.0.1:1")
    c = load_config(cfg)
    ob, _ = Outbox.open_checked(c.db_path)
    ob.append([("event", {"e": 1})], device=DEVICE, key=load_key(c.key_path), clock=Clock(), max_bytes=1 << 30)
    ob.close()
    r = run_status(cfg)
    assert "last delivered: none yet" in r.stdout, r.stdout
    assert "seq 0" not in r.stdout


@pytest.mark.parametrize("snapshot", ["null", "[1, 2]", "7"])
def test_status__a_runtime_json_that_is_not_an_object_is_no_traceback(tmp_path: Path, snapshot: str) -> None:
    cfg = provision(tmp_path, "mqtt://127.0.0.1:1")
    (load_config(cfg).state_dir / "runtime.json").write_text(snapshot)
    r = run_status(cfg)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "daemon:        not running" in r.stdout, r.stdout


def test_daemon__health_interval_below_the_tick_is_kept(broker: Broker, tmp_path: Path) -> None:
    """health.interval_s = 0.05 gives about 20 records a second, not 2 (issue 9, defect 13)."""
    cfg = provision(tmp_path, broker.url, health="0.05")
    db = load_config(cfg).db_path
    proc = start_agent(cfg)
    try:
        assert wait_until(lambda: kinds_in(db).count("health") >= 40, 30)
    finally:
        code, out = stop_agent(proc)
    assert code == 0, out[-2000:]
    with Outbox(db, readonly=True) as ob:
        recs = [json.loads(d) for d in ob.export()]
    times = [datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp() for r in recs if r["kind"] == "health"]
    spacing = sorted(b - a for a, b in itertools.pairwise(times))
    assert spacing[len(spacing) // 2] < 0.25, spacing  # the median; the old fixed 0.5 s tick gave 0.5


def test_daemon__sigterm_during_a_reload_is_not_lost(broker: Broker, tmp_path: Path) -> None:
    """A stop that arrives while the pipeline is being restarted stops the agent (issue 9, defect 11)."""
    cfg_path = provision(tmp_path, broker.url)
    cfg = load_config(cfg_path)
    agent = Agent(cfg, config_path=cfg_path)
    agent.outbox, _ = Outbox.open_checked(cfg.db_path)
    agent.writer = ChainWriter(
        agent.outbox, device=DEVICE, key=load_key(cfg.key_path), clock=agent.clock, max_bytes=1 << 30
    )
    agent.writer.start()
    agent.service = make_service(cfg)
    agent.ctx = agent._new_context()
    agent.service.start(agent.ctx)
    first_run = agent.ctx.stop
    try:
        agent.request_stop()  # SIGTERM's handler, just before the reload restarts the pipeline
        set_value(cfg_path, "mqtt.keepalive_s", "45")
        agent.reload()
        assert agent.stop_event.is_set(), "the reload cleared the agent's stop"
        assert first_run.is_set()
        assert agent.ctx.stop.is_set()
    finally:
        agent._shutdown()


def test_daemon__outbox_locked_by_another_process_is_waited_for_not_moved_aside_and_sigterm_stops_it(
    broker: Broker, tmp_path: Path
) -> None:
    """Found by the fault suite (issue 9): a SIGTERM during a slow start killed the agent outright (its
    handler came after the outbox was opened), and a lock held past the busy timeout ("database is locked")
    was taken for corruption, so the outbox was moved aside and its undelivered records left unsent."""
    cfg = provision(tmp_path, broker.url)
    db = load_config(cfg).db_path
    with Outbox(db, create=True) as ob:
        ob.migrate()
    hold = sqlite3.connect(db, isolation_level=None)  # a backup tool or an sqlite3 shell, say
    hold.execute("PRAGMA locking_mode=EXCLUSIVE")
    hold.execute("BEGIN EXCLUSIVE")
    hold.execute("UPDATE meta SET value = value")
    hold.execute("COMMIT")
    log = tmp_path / "agent.log"
    try:
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(cfg)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            assert wait_until(lambda: "is locked by another process" in log.read_text(), 60), log.read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    finally:
        hold.close()
    assert not list(db.parent.glob("*.corrupt-*")), log.read_text()
    assert "integrity" not in log.read_text()
    # Once the lock is gone the same outbox opens, and the agent runs on it.
    proc = start_agent(cfg)

    def head() -> int:
        with Outbox(db, readonly=True) as ob:
            return ob.head()[0]

    assert wait_until(lambda: head() > 0, 30)
    rc, out = stop_agent(proc)
    assert rc == 0, out
