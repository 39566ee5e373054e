"""The composition root: builds the spine and the profile's pipeline from the config and runs them.

Over ~400 lines on purpose: the Agent is the one place that wires every part together and is
the command processor's host (spine.remote.processor.CommandHost), so the parts stay unaware of
each other. PROFILES is the one table of what a profile brings.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import logging
import os
import platform
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent import __version__
from edge_agent.errors import ConfigError, EdgeAgentError, KeyError_, LedgerError
from edge_agent.files import atomic_write
from edge_agent.proc import memory_mb
from edge_agent.service import Service, ServiceContext
from edge_agent.settings import AgentConfig, load_config, patch_text
from edge_agent.signals import SignalRelay, stack_dumps
from edge_agent.spine.clock import Clock, format_ts
from edge_agent.spine.config import RESTART_ONLY_KEYS, SpineConfig
from edge_agent.spine.keys import DeviceKey, load_key
from edge_agent.spine.remote.message import CommandRefused, load_trusted_strict, short

if TYPE_CHECKING:
    # Loaded when the agent runs, not when a CLI command only needs PROFILES (sqlite_utils, paho).
    from edge_agent.spine.chain import ChainWriter
    from edge_agent.spine.outbox import Outbox
    from edge_agent.spine.sync import MqttSync

log = logging.getLogger(__name__)

RUNTIME_FILE = "runtime.json"
LOCK_FILE = "agent.lock"
# How long a patch_config waits to see new broker settings connect before rolling back.
PROVE_CONNECT_S = 10.0
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


def _bench_replace_manifest(cfg: AgentConfig, args: Mapping[str, Any]) -> dict[str, Any]:
    import base64
    import binascii

    from edge_agent.pipelines.bench.manifest import replace_manifest

    try:
        data = base64.b64decode(str(args.get("data_b64", "")), validate=True)
    except binascii.Error:
        raise CommandRefused("bad_args", "replace_manifest: data_b64 is not valid base64") from None
    try:
        manifest = replace_manifest(cfg.state_dir, data)
    except EdgeAgentError as exc:
        raise CommandRefused("bad_args", short(str(exc), 400)) from None
    return {"orders": len(manifest.orders), "sha256": manifest.sha256, "bytes": len(data)}


PipelineCommand = Callable[[AgentConfig, Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Profile:
    """One row of PROFILES: everything the composition root knows about a profile."""

    section: str  # its config section in AgentConfig
    service: str  # "module:Class" of its pipeline service, imported only when that profile runs
    cli: str | None  # the CLI module that registers its command group
    doctor: str | None  # the doctor check for its devices, by name in cli/doctor.py
    commands: dict[str, PipelineCommand] = field(default_factory=dict)  # remote commands its pipeline handles


PROFILES: dict[str, Profile] = {
    "bench": Profile(
        "bench",
        "edge_agent.pipelines.bench.service:BenchService",
        "edge_agent.cli.bench",
        "bench",
        {"replace_manifest": _bench_replace_manifest},
    ),
    "truck": Profile(
        "telematics", "edge_agent.pipelines.truck.service:TelematicsService", "edge_agent.cli.truck", "truck"
    ),
    "sensors": Profile(
        "sensors", "edge_agent.pipelines.sensors.service:SensorsService", "edge_agent.cli.sensors", "sensors"
    ),
}


def make_service(cfg: AgentConfig) -> Service:
    """The pipeline for the configured profile (imported here so a truck never loads OCR)."""
    module, _, cls = PROFILES[cfg.profile].service.partition(":")
    factory: Callable[[], Service] = getattr(importlib.import_module(module), cls)
    return factory()


def cpu_temp_c() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/sys/class/thermal/thermal_zone0/temp").read_text().strip()) / 1000.0
    return None


class Agent:
    """One running agent: chain writer, MQTT sync, the profile's service, health, watchdog, signals.

    It is also the command processor's host (spine.remote.processor.CommandHost): the processor
    asks it for exactly what a command needs, and nothing else of the agent.
    """

    def __init__(self, cfg: AgentConfig, *, config_path: Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path or cfg.source
        # Set once, never cleared: SIGTERM/SIGINT, or a failed start. Each pipeline run has its own
        # event (`_run_stop`) chained to this one, so a reload can stop one run without losing a stop.
        self.stop_event = threading.Event()
        self._run_stop = threading.Event()
        self._reload = threading.Event()
        self._reload_lock = threading.Lock()  # SIGHUP and a patch_config command may both reload
        self.clock = Clock()
        self.started_mono = time.monotonic()
        self.started_at = datetime.now(UTC)
        self.writer: ChainWriter | None = None
        self.sync: MqttSync | None = None
        self.service: Service | None = None
        self.ctx: ServiceContext | None = None
        self.outbox: Outbox | None = None
        self._read_outbox: Outbox | None = None
        self.commands: Any = None
        self.command_handler: Callable[[str, bytes], None] | None = None
        self._lock_fd: int | None = None
        self.station: Any = None  # edge_agent.station.server.Station, when [bench.station] is on
        self.station_error: str | None = None  # why the station did not start (for `status`)

    # ------------------------------------------------------------ running
    def run(self) -> int:
        from edge_agent.spine.outbox import import_sqlite_utils_if_needed

        # While this is the only thread: sqlite-utils, when the outbox is to be migrated, then loads without
        # numpy (12 MB a truck carried all day once the signals thread came first).
        import_sqlite_utils_if_needed(self.cfg.db_path)
        # Stacks on SIGUSR1/SIGABRT; and a stop that comes during a slow start (a locked or damaged outbox)
        # is a clean stop.
        with stack_dumps(), SignalRelay(self._on_signal, (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)):
            return self._run()

    def _run(self) -> int:
        cfg = self.cfg
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        from edge_agent.spine.chain import ChainWriter
        from edge_agent.spine.sync import MqttSync

        self._lock_fd = acquire_lock(cfg.state_dir)
        opened = self._open_outbox()
        if opened is None:
            log.info("stopped before the outbox could be opened")
            os.close(self._lock_fd)
            self._lock_fd = None
            return 0
        self.outbox, startup_gap = opened
        foreign = self.outbox.foreign_chain(cfg.device.id)
        if foreign is not None:
            self.outbox.close()
            os.close(self._lock_fd)
            self._lock_fd = None
            from edge_agent.spine.outbox import FOREIGN_CHAIN_REMEDY

            raise LedgerError(f"{foreign}: {FOREIGN_CHAIN_REMEDY}")
        from edge_agent.spine.checkpoint import finish_rotation

        finish_rotation(cfg.key_path, self.outbox)
        key = load_key(cfg.key_path)
        self.writer = ChainWriter(
            self.outbox,
            device=cfg.device.id,
            key=key,
            clock=self.clock,
            max_bytes=int(cfg.outbox.max_mb * 1024 * 1024),
            batch_max=cfg.outbox.batch_max,
            on_commit=self._on_commit,
        )
        self.sync = MqttSync(cfg, cfg.db_path, on_command=self._on_command, on_damage=self.writer.report_damage)
        self.writer.start()
        if startup_gap is not None:
            self.writer.emit("gap", startup_gap)
        self._setup_commands(key)
        self.sync.start()
        self.service = make_service(cfg)
        self.ctx = self._new_context()
        try:
            self.service.start(self.ctx)
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

    def _open_outbox(self) -> tuple[Outbox, dict[str, Any] | None] | None:
        """The outbox, once no other process holds its lock; None when the agent is stopped meanwhile."""
        from edge_agent.spine.outbox import Outbox, OutboxBusy

        while True:
            try:
                return Outbox.open_checked(self.cfg.db_path)
            except OutboxBusy as exc:
                log.warning("%s", exc)
                if self.stop_event.wait(1.0):
                    return None

    def _new_context(self) -> ServiceContext:
        """A context for one pipeline run, with its own stop event (set when the agent stops, too)."""
        if self.writer is None:
            raise RuntimeError("the chain writer must run before a pipeline starts")
        run_stop = threading.Event()
        self._run_stop = run_stop
        if self.stop_event.is_set():  # a stop that came while this run was being made
            run_stop.set()
        return ServiceContext(
            config=self.cfg, emit=self.writer.emit, clock=self.clock, state_dir=self.cfg.state_dir, stop=run_stop
        )

    def request_stop(self) -> None:
        """Stop the agent: the agent's event first, then the running pipeline's."""
        self.stop_event.set()
        self._run_stop.set()

    def _loop(self) -> None:
        now = time.monotonic()
        next_health = now + (self.cfg.health.interval_s or float("inf"))
        next_prune = now + 60
        next_status = 0.0
        next_checkpoint = now + (self.cfg.checkpoint.interval_s or float("inf"))
        wait_s = 0.0
        while not self.stop_event.wait(wait_s):
            now = time.monotonic()
            if self._reload.is_set():
                self._reload.clear()
                if self.reload():
                    next_health = now + (self.cfg.health.interval_s or float("inf"))
                    next_checkpoint = now + (self.cfg.checkpoint.interval_s or float("inf"))
            if self.cfg.health.interval_s and now >= next_health:
                # From the due time, not from now: a late tick does not stretch the interval.
                next_health = max(next_health + self.cfg.health.interval_s, now)
                self.emit_health()
            if now >= next_checkpoint and self.cfg.checkpoint.interval_s:
                next_checkpoint = now + self.cfg.checkpoint.interval_s
                self.publish_checkpoint()
            if now >= next_prune:
                next_prune = now + 600
                self._prune()
            if now >= next_status:
                next_status = now + 0.5
                stale = self.stale_stages()
                if not stale:
                    sd_notify("WATCHDOG=1")
                sd_notify("STATUS=" + self.status_line(stale))
                self._write_runtime()
            # Wake for the next health record when it is due sooner than the housekeeping tick.
            wait_s = max(0.0, min(next_status, next_health) - time.monotonic())

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
        from edge_agent.spine.outbox import reader

        self._read_outbox = reader(self.cfg.db_path, self._read_outbox)
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
        self.request_stop()
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
        # Readers first, the writer's outbox (a fresh one if it moved a damaged file aside) last: only the last
        # connection to close, when it may write, folds the WAL in and removes it. A WAL left behind makes the
        # next start take a clean stop for an unclean one (integrity_check instead of quick_check).
        writer_ob = self.writer.outbox if self.writer is not None else None
        for ob in dict.fromkeys((self._read_outbox, self.outbox, writer_ob)):
            if ob is not None:
                ob.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
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

        try:
            self.station = start_station(self.cfg, status, self.stop_event, self.service)
        except ConfigError as exc:
            self.station_error = "; ".join(exc.problems)
            for line in exc.problems:
                log.error("station not started, the daemon runs on without it: %s", line)
        if self.station is not None or self.station_error is not None:
            self._write_runtime()

    # ------------------------------------------------------------ signals and reload
    def _on_signal(self, signum: int) -> None:
        """SIGTERM and SIGINT stop the agent, SIGHUP reloads its config (from the `signals` thread)."""
        if signum == signal.SIGHUP:
            self._reload.set()
            return
        log.info("received %s", signal.Signals(signum).name)
        self.request_stop()

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
            # Central (and whoever waits on the outbox) learns of it too, not only the journal.
            self.emit("event", {"event": "config_refused", "problems": [short(p, 200) for p in exc.problems[:10]]})
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
            self.writer.set_bound(int(new.outbox.max_mb * 1024 * 1024))
        logging.getLogger().setLevel(new.log.level)
        log.info("SIGHUP: config reloaded from %s", self.config_path)
        if self.writer is not None:
            self.writer.emit("event", {"event": "config_reloaded"})
        sd_notify("READY=1")
        return True

    def _restart_pipeline(self, old: AgentConfig) -> None:
        if self.writer is None or self.stop_event.is_set():
            return
        self._run_stop.set()  # this run only; the agent's stop event is never cleared
        if self.service is not None:
            try:
                self.service.stop()
            except Exception:
                log.exception("stopping the old %s pipeline failed; starting the new one anyway", old.profile)
        if new_mqtt := (self.cfg.mqtt != old.mqtt):
            from edge_agent.spine.sync import MqttSync

            if self.sync is not None:
                self.sync.stop(flush_timeout_s=2)
            self.sync = MqttSync(self.cfg, self.cfg.db_path, on_command=self._on_command)
            self.sync.start()
        if self.stop_event.is_set():
            return  # SIGTERM came while the old run stopped: do not start a new one
        self.service = make_service(self.cfg)
        self.ctx = self._new_context()
        self.service.start(self.ctx)
        if self.station is not None and hasattr(self.service, "scan_tap"):
            self.service.scan_tap = self.station.take_scan  # the new bench hands focused-field scans on too
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
            "mem_rss_mb": round(memory_mb(), 1),
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

    def _device_states(self) -> dict[str, dict[str, Any]]:
        """Each driver's state from the pipeline's own status, for `status`; {} when it cannot be read."""
        if self.service is None:
            return {}
        try:
            return device_states(self.service.status())
        except Exception:  # noqa: BLE001 - the runtime snapshot must be written whatever a pipeline does
            return {}

    def emit_health(self) -> None:
        if self.writer is not None:
            self.writer.emit("health", self.health_body())

    def publish_checkpoint(self) -> dict[str, Any] | None:
        """Retained, signed chain head so central can tell a truncated tail from a quiet device."""
        if self.writer is None:
            return None
        from edge_agent.spine.checkpoint import publish_checkpoint

        try:
            t, _ = self.clock.now()
            return publish_checkpoint(self.cfg, self.writer.key, self.sync, format_ts(t))
        except Exception as exc:  # noqa: BLE001 - a checkpoint must never stop the agent
            log.warning("checkpoint not published: %s", exc)
            return None

    def _prune(self) -> None:
        import sqlite3

        from edge_agent.spine.outbox import Outbox, is_damage

        try:
            with Outbox(self.cfg.db_path) as ob:
                n = ob.prune_delivered(self.cfg.outbox.retention_h * 3600)
        except sqlite3.Error as exc:
            log.warning("pruning delivered records failed (%s); trying again in 10 min", exc)
            if is_damage(exc) and self.writer is not None:
                self.writer.report_damage(exc)
            return
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
            "station_error": (self.station.failed if self.station is not None else self.station_error)
            if running
            else None,
            "devices": self._device_states() if running else {},
        }
        with contextlib.suppress(OSError):
            atomic_write(self.cfg.state_dir / RUNTIME_FILE, json.dumps(data).encode(), mode=0o600)

    # ------------------------------------------------------------ commands (the CommandHost protocol)
    def _setup_commands(self, _key: DeviceKey | None = None) -> None:
        from edge_agent.spine.remote.processor import CommandProcessor

        self.commands = CommandProcessor(self)
        self.command_handler = self.commands.enqueue

    def _on_command(self, topic: str, payload: bytes) -> None:
        if self.command_handler is not None:
            self.command_handler(topic, payload)

    def config(self) -> SpineConfig:
        return self.cfg

    def security_now(self) -> datetime:
        return self.clock.security_now()

    def ready(self) -> bool:
        return self.ctx is not None

    def emit(self, kind: str, body: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.emit(kind, body)

    def flush(self, timeout_s: float) -> bool:
        return self.writer is not None and self.writer.flush(timeout_s)

    def health(self) -> dict[str, Any]:
        body = self.health_body()
        self.emit("health", body)
        return body

    def rewind(self) -> None:
        if self.sync is not None:
            self.sync.rewind()

    def rotate_key(self) -> dict[str, Any]:
        if self.writer is None:
            raise CommandRefused("unavailable", "rotate_key: the chain writer is not running")
        from edge_agent.spine.checkpoint import rotate_device_key

        return rotate_device_key(self.cfg.key_path, self.writer)

    def pipeline_command(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        handler = PROFILES[self.cfg.profile].commands.get(name)
        if handler is None:
            raise CommandRefused("unsupported", f"{name}: not a bench ({self.cfg.profile} profile)")
        return handler(self.cfg, args)

    def reload_config(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """patch_config: prove the new config (keys load, a new broker connects), write it, reload; else roll back."""
        path = self.config_path
        if path is None:
            raise CommandRefused("unavailable", "patch_config: the agent was not started from a config file")
        path = Path(path)
        old_text = path.read_text(encoding="utf-8")
        try:
            new_text, new_cfg = patch_text(old_text, changes, path, locked=RESTART_ONLY_KEYS)
        except ConfigError as exc:
            raise CommandRefused("bad_args", short("; ".join(exc.problems), 400)) from None
        self._prove(new_cfg, path)
        atomic_write(path, new_text.encode("utf-8"))
        error = self._try_reload()
        if error is None and self.sync is not None and not self.sync.connected.wait(PROVE_CONNECT_S):
            error = f"MQTT did not connect with the new settings within {PROVE_CONNECT_S:.0f} s"
        if error is None:
            log.info("patch_config: applied %d key(s) and reloaded", len(changes))
            return {"applied": sorted(changes), "rolled_back": False}
        log.error("patch_config: the agent could not run with the new config (%s); restoring the previous file", error)
        atomic_write(path, old_text.encode("utf-8"))
        again = self._try_reload()
        if again is not None:
            log.critical("patch_config: reloading the previous config failed too: %s", again)
        raise RuntimeError(
            f"new config rejected at reload ({error}); previous config restored"
            + ("" if again is None else f", but reloading it failed too ({again})")
        )

    def _prove(self, new: AgentConfig, path: Path) -> None:
        """Refuse (nothing written) a patch that would cut the device off from central."""
        if not new.commands.trusted_keys:
            raise CommandRefused(
                "bad_args",
                f"{path}: commands.trusted_keys: a remote patch may not empty it (central would lose the device)",
            )
        try:
            load_trusted_strict(new.commands.trusted_keys)
        except KeyError_ as exc:
            raise CommandRefused(
                "bad_args", short(f"{path}: commands.trusted_keys: {exc} (central would lose the device)", 400)
            ) from None
        if new.mqtt != self.cfg.mqtt:
            from edge_agent.spine.sync import probe_connect

            err = probe_connect(new.mqtt, f"{new.mqtt.client_id or 'edge-agent'}-probe-{os.getpid()}", PROVE_CONNECT_S)
            if err is not None:
                raise CommandRefused(
                    "bad_args", short(f"new MQTT settings do not connect: {err}; nothing changed", 400)
                )

    def _try_reload(self) -> str | None:
        try:
            ok = self.reload()
        except Exception as exc:  # noqa: BLE001 - any failure to start the pipeline means roll back
            return short(f"{type(exc).__name__}: {exc}", 300)
        return None if ok else "reload refused the file (see the log)"


def acquire_lock(state_dir: Path) -> int:
    """Hold <state_dir>/agent.lock for the agent's life: one agent per state dir; `status` tests it.

    The lock file is empty, so it can be made even on a full disk, and the lock dies with the process.
    """
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise EdgeAgentError(
            f"another edge-agent already runs on {state_dir} (it holds {path}); stop it first "
            "(systemctl stop edge-agent)"
        ) from None
    return fd


def daemon_alive(state_dir: Path) -> bool:
    """True while an agent holds <state_dir>/agent.lock (true even when it cannot write runtime.json)."""
    try:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def device_states(pipeline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The drivers in a pipeline's status(), by name: {connected, last_error, reconnects, recovering}.

    The pipelines report their driver runners as `{"connected": ..., "last_error": ...}` either at the top
    (bench: camera, scanner) or in a group (truck: drivers, sensors: meters)."""
    out: dict[str, dict[str, Any]] = {}

    def take(name: str, d: dict[str, Any]) -> None:
        out[name] = {k: d.get(k) for k in ("connected", "last_error", "reconnects", "recovering")}

    for name, value in pipeline.items():
        if not isinstance(value, dict):
            continue
        if "connected" in value:
            take(name, value)
            continue
        for sub, d in value.items():
            if isinstance(d, dict) and "connected" in d:
                take(str(sub), d)
    return out


def read_runtime(state_dir: Path) -> dict[str, Any] | None:
    """The daemon's last runtime snapshot, with `alive` telling whether its pid still runs."""
    alive = daemon_alive(state_dir)
    try:
        data: dict[str, Any] = json.loads((state_dir / RUNTIME_FILE).read_text())
        if not isinstance(data, dict):  # JSON, but not the agent's snapshot (`null`, a list): as unreadable
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    except (OSError, ValueError) as exc:
        if not alive:
            return None
        # Running but its snapshot is unreadable (a full disk stops it from being written).
        data = {"running": True, "runtime_error": f"{state_dir / RUNTIME_FILE}: {exc}"}
    data["alive"] = alive
    return data
