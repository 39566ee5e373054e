"""The composition root: builds the spine and the profile's pipeline from the config and runs them."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from edge_agent import __version__
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.service import Service, ServiceContext
from edge_agent.settings import AgentConfig, atomic_write, load_config
from edge_agent.spine.chain import ChainWriter
from edge_agent.spine.clock import Clock
from edge_agent.spine.keys import load_key
from edge_agent.spine.outbox import Outbox
from edge_agent.spine.sync import MqttSync

log = logging.getLogger(__name__)

RUNTIME_FILE = "runtime.json"
STALE_HEARTBEAT_S = 15.0


def sd_notify(message: str) -> bool:
    """Send one sd_notify(3) datagram to $NOTIFY_SOCKET; False when not under systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(message.encode())
        return True
    return False


def make_service(cfg: AgentConfig) -> Service:
    """The pipeline for the configured profile (imported here so a truck never loads OCR)."""
    if cfg.profile == "bench":
        from edge_agent.pipelines.bench.service import BenchService

        return BenchService()
    if cfg.profile == "truck":
        from edge_agent.pipelines.truck.service import TelematicsService

        return TelematicsService()
    from edge_agent.pipelines.sensors.service import SensorsService

    return SensorsService()


def cpu_temp_c() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/sys/class/thermal/thermal_zone0/temp").read_text().strip()) / 1000.0
    return None


def rss_mb() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


class Agent:
    """One running agent: chain writer, MQTT sync, the profile's service, health, watchdog, signals."""

    def __init__(self, cfg: AgentConfig, *, config_path: Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path or cfg.source
        self.stop_event = threading.Event()
        self._reload = threading.Event()
        self._reload_lock = threading.Lock()  # SIGHUP and a patch_config command may both reload
        self.clock = Clock()
        self.started_mono = time.monotonic()
        self.started_at = datetime.now(UTC)
        self.writer: ChainWriter | None = None
        self.sync: MqttSync | None = None
        self.service: Service | None = None
        self.outbox: Outbox | None = None
        self._read_outbox: Outbox | None = None
        self.command_handler: Callable[[str, bytes], None] | None = None
        self.station: Any = None  # edge_agent.station.server.Station, when [bench.station] is on

    # ------------------------------------------------------------ running
    def run(self) -> int:
        cfg = self.cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = load_key(cfg.key_path)
        self.outbox, corrupt_gap = Outbox.open_checked(cfg.db_path)
        self.sync = MqttSync(cfg, cfg.db_path, on_command=self._on_command)
        self.writer = ChainWriter(
            self.outbox,
            device=cfg.device.id,
            key=key,
            clock=self.clock,
            max_bytes=int(cfg.outbox.max_mb * 1024 * 1024),
            batch_max=cfg.outbox.batch_max,
            on_commit=self._on_commit,
        )
        self._install_signals()
        self.writer.start()
        if corrupt_gap is not None:
            self.writer.emit("gap", corrupt_gap)
        self._setup_commands(key)
        self.sync.start()
        self.service = make_service(cfg)
        ctx = ServiceContext(
            config=cfg,
            emit=self.writer.emit,
            clock=self.clock,
            state_dir=cfg.state_dir,
            stop=self.stop_event,
        )
        self.ctx = ctx
        try:
            self.service.start(ctx)
        except (EdgeAgentError, OSError, ValueError) as exc:
            log.error("cannot start the %s pipeline: %s", cfg.profile, exc)
            self._shutdown()
            return 1
        self.writer.emit("event", {"event": "agent_started", "version": __version__, "profile": cfg.profile})
        self._start_station()
        log.info(
            "edge-agent %s running: device %s, site %s, profile %s, key %s",
            __version__,
            cfg.device.id,
            cfg.device.site,
            cfg.profile,
            key.key_id,
        )
        sd_notify("READY=1\nSTATUS=running")
        self._loop()
        self._shutdown()
        return 0

    def _loop(self) -> None:
        next_health = time.monotonic() + (self.cfg.health.interval_s or float("inf"))
        next_prune = time.monotonic() + 60
        next_status = 0.0
        next_checkpoint = time.monotonic() + (self.cfg.checkpoint.interval_s or float("inf"))
        while not self.stop_event.wait(0.5):
            now = time.monotonic()
            if self._reload.is_set():
                self._reload.clear()
                if self.reload():
                    next_health = now + (self.cfg.health.interval_s or float("inf"))
                    next_checkpoint = now + (self.cfg.checkpoint.interval_s or float("inf"))
            if self.cfg.health.interval_s and now >= next_health:
                next_health = now + self.cfg.health.interval_s
                self.emit_health()
            if now >= next_checkpoint and self.cfg.checkpoint.interval_s:
                next_checkpoint = now + self.cfg.checkpoint.interval_s
                self.publish_checkpoint()
            if now >= next_prune:
                next_prune = now + 600
                self._prune()
            stale = self.stale_stages()
            if not stale:
                sd_notify("WATCHDOG=1")
            if now >= next_status:
                next_status = now + 10
                sd_notify("STATUS=" + self.status_line(stale))
            self._write_runtime()

    def status_line(self, stale: list[str]) -> str:
        """One line for `systemctl status`: broker, outbox depth, stuck stages."""
        broker = "connected" if self.sync and self.sync.connected.is_set() else "broker unreachable"
        depth = "?"
        with contextlib.suppress(Exception):
            depth = str(self._reader().stats().depth)
        line = f"{broker}; outbox {depth} undelivered"
        return line + (f"; STUCK: {', '.join(stale)}" if stale else "")

    def _reader(self) -> Outbox:
        """The main thread's own read-only connection (the writer's belongs to its thread)."""
        if self._read_outbox is None:
            self._read_outbox = Outbox(self.cfg.db_path, readonly=True)
        return self._read_outbox

    def stale_stages(self) -> list[str]:
        """Stages whose heartbeat is older than STALE_HEARTBEAT_S: while any, no watchdog ping."""
        now = time.monotonic()
        stale = []
        if self.writer is not None and now - self.writer.heartbeat > STALE_HEARTBEAT_S:
            stale.append("chain-writer")
        if self.sync is not None and now - self.sync.heartbeat > STALE_HEARTBEAT_S:
            stale.append("mqtt-publisher")
        if self.service is not None and now - self.service.heartbeat() > STALE_HEARTBEAT_S:
            stale.append(self.service.name)
        return stale

    def _shutdown(self) -> None:
        sd_notify("STOPPING=1\nSTATUS=stopping")
        log.info("stopping: producers first, then flushing the outbox")
        self.stop_event.set()
        if self.service is not None:
            with contextlib.suppress(Exception):
                self.service.stop()
        if self.station is not None:
            self.station.stop()
        if self.writer is not None:
            if self.cfg.checkpoint.interval_s:
                self.publish_checkpoint()
            self.writer.flush(5)
        if self.sync is not None:
            self.sync.stop(flush_timeout_s=3)
        if self.writer is not None:
            self.writer.stop(2)
        self._write_runtime(running=False)
        for ob in (self.outbox, self._read_outbox):
            if ob is not None:
                ob.close()
        log.info("stopped")

    # ------------------------------------------------------------ the operator station (edge_agent/station)
    def _on_commit(self, head_seq: int) -> None:
        """The chain writer's commit hook: wake the MQTT publisher, then any open station page."""
        if self.sync is not None:
            self.sync.notify(head_seq)
        if self.station is not None:
            self.station.notify(head_seq)

    def _start_station(self) -> None:
        from edge_agent.station.server import start_station

        def status() -> dict[str, Any]:
            sync, service = self.sync, self.service
            broker = {"connected": bool(sync and sync.connected.is_set()), "error": sync.last_error if sync else None}
            return {"broker": broker, "pipeline": service.status() if service is not None else {}}

        self.station = start_station(self.cfg, status, self.stop_event, self.service)
        if self.station is not None:
            self._write_runtime()

    # ------------------------------------------------------------ signals and reload
    def _install_signals(self) -> None:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s", signal.Signals(signum).name)
            self.stop_event.set()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            self._reload.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def reload(self) -> bool:
        """SIGHUP: re-read and validate; a bad file is refused and the running config stays."""
        with self._reload_lock:
            return self._reload_locked()

    def _reload_locked(self) -> bool:
        if self.config_path is None:
            log.warning("SIGHUP: no config file to re-read")
            return False
        sd_notify("RELOADING=1")
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            for line in exc.problems:
                log.error("SIGHUP: new config refused, keeping the running one: %s", line)
            sd_notify("READY=1")
            return False
        if new.device != self.cfg.device or new.state_dir != self.cfg.state_dir or new.profile != self.cfg.profile:
            log.error("SIGHUP: device, state_dir and profile change only with a restart; keeping the running config")
            sd_notify("READY=1")
            return False
        old = self.cfg
        self.cfg = new
        if new.model_dump(exclude={"health", "log", "checkpoint", "outbox"}) != old.model_dump(
            exclude={"health", "log", "checkpoint", "outbox"}
        ):
            self._restart_pipeline(old)
        if self.writer is not None:
            self.writer.max_bytes = int(new.outbox.max_mb * 1024 * 1024)
        logging.getLogger().setLevel(new.log.level)
        log.info("SIGHUP: config reloaded from %s", self.config_path)
        if self.writer is not None:
            self.writer.emit("event", {"event": "config_reloaded"})
        sd_notify("READY=1")
        return True

    def _restart_pipeline(self, old: AgentConfig) -> None:
        if self.writer is None:
            return
        if self.service is not None:
            try:
                self.service.stop()
            except Exception:
                log.exception("stopping the old %s pipeline failed; starting the new one anyway", old.profile)
        if new_mqtt := (self.cfg.mqtt != old.mqtt):
            if self.sync is not None:
                self.sync.stop(flush_timeout_s=2)
            self.sync = MqttSync(self.cfg, self.cfg.db_path, on_command=self._on_command)
            self.sync.start()
        self.stop_event.clear()
        self.service = make_service(self.cfg)
        self.ctx = ServiceContext(
            config=self.cfg, emit=self.writer.emit, clock=self.clock, state_dir=self.cfg.state_dir, stop=self.stop_event
        )
        self.service.start(self.ctx)
        log.info("pipeline restarted with the new config%s", " (and MQTT)" if new_mqtt else "")

    # ------------------------------------------------------------ health
    def health_body(self) -> dict[str, Any]:
        st = self._reader().stats()
        disk = shutil.disk_usage(self.cfg.state_dir)
        _, clock_state = self.clock.now()
        body: dict[str, Any] = {
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "outbox": {
                "depth": st.depth,
                "oldest_undelivered_age_s": (
                    round(st.oldest_undelivered_age_s, 1) if st.oldest_undelivered_age_s else None
                ),
                "stored_mb": round(st.stored_bytes / 1048576, 3),
                "max_mb": self.cfg.outbox.max_mb,
            },
            "disk_free_mb": round(disk.free / 1048576, 1),
            "mem_rss_mb": round(rss_mb(), 1),
            "cpu_temp_c": cpu_temp_c(),
            "load_1m": round(os.getloadavg()[0], 2),
            "versions": {"edge_agent": __version__, "python": platform.python_version()},
            "clock": {"state": clock_state, "gps_skew_s": self.clock.gps_skew_s},
            "mqtt": {"connected": bool(self.sync and self.sync.connected.is_set())},
        }
        if self.service is not None:
            with contextlib.suppress(Exception):
                body["pipeline"] = self.service.status()
        return body

    def emit_health(self) -> None:
        if self.writer is not None:
            self.writer.emit("health", self.health_body())

    def publish_checkpoint(self) -> None:
        """Retained, signed chain head so central can tell a truncated tail from a quiet device."""
        if self.writer is None or self.sync is None:
            return
        from edge_agent.spine.remote.commands import publish_checkpoint

        try:
            publish_checkpoint(self)
        except Exception as exc:  # noqa: BLE001 - a checkpoint must never stop the agent
            log.warning("checkpoint not published: %s", exc)

    def _prune(self) -> None:
        with contextlib.suppress(Exception):
            ob = Outbox(self.cfg.db_path)
            n = ob.prune_delivered(self.cfg.outbox.retention_h * 3600)
            ob.close()
            if n:
                log.info("pruned %d delivered record(s) older than %.0f h", n, self.cfg.outbox.retention_h)

    def _write_runtime(self, *, running: bool = True) -> None:
        data = {
            "pid": os.getpid(),
            "running": running,
            "started_at": self.started_at.isoformat(),
            "updated_at": datetime.now(UTC).isoformat(),
            "profile": self.cfg.profile,
            "mqtt_connected": bool(self.sync and self.sync.connected.is_set()),
            "mqtt_last_error": self.sync.last_error if self.sync else None,
            "writer_last_error": self.writer.last_error if self.writer else None,
            "stale_stages": self.stale_stages() if running else [],
            "station_url": self.station.url if self.station is not None and running else None,
        }
        with contextlib.suppress(OSError):
            atomic_write(self.cfg.state_dir / RUNTIME_FILE, json.dumps(data).encode(), mode=0o600)

    # ------------------------------------------------------------ commands
    def _setup_commands(self, key: Any) -> None:
        try:
            from edge_agent.spine.remote.commands import CommandProcessor
        except ImportError:
            return
        self.commands = CommandProcessor(self, key)
        self.command_handler = self.commands.enqueue

    def _on_command(self, topic: str, payload: bytes) -> None:
        if self.command_handler is not None:
            self.command_handler(topic, payload)


def read_runtime(state_dir: Path) -> dict[str, Any] | None:
    """The daemon's last runtime snapshot, with `alive` telling whether its pid still runs."""
    try:
        data: dict[str, Any] = json.loads((state_dir / RUNTIME_FILE).read_text())
    except (OSError, ValueError):
        return None
    alive = False
    if data.get("running"):
        try:
            os.kill(int(data["pid"]), 0)
            alive = True
        except (OSError, ValueError, KeyError):
            alive = False
    data["alive"] = alive
    return data
