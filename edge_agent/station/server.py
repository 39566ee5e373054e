"""The station's thread: uvicorn serving the Starlette app, the record feed and the status strip, until the stop event.

The daemon builds a `Station` with what it needs (config, where the outbox is, a status
callable, the review desk, the stop event), calls `start()`, hands `notify` to the chain
writer's commit hook, and calls `stop()` on shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.errors import ConfigError
from edge_agent.station.feed import Feed, Levels
from edge_agent.station.operators import Operator, load_operators
from edge_agent.station.strip import build_strip

if TYPE_CHECKING:
    from edge_agent.pipelines.bench.review import ReviewDesk
    from edge_agent.station.config import StationConfig

log = logging.getLogger(__name__)

STATUS_EVERY_S = 1.0
STOP_POLL_S = 0.2
WORKERS = 2
SCAN_ARM_S = 120.0  # a focused field keeps the scanner this long unless the page says otherwise


@dataclass(frozen=True, slots=True)
class StationDeps:
    """What the station needs from the daemon, and nothing more."""

    cfg: StationConfig
    device: str
    profile: str
    db_path: Path  # the outbox, opened read-only
    levels: Levels
    desk: ReviewDesk | None  # bench only
    status: Callable[[], dict[str, Any]]  # broker state and the pipeline's status(), from the daemon
    stop: threading.Event
    base_dir: Path | None = None  # relative file paths in [bench.station] are relative to the config's folder


def _resolve(path: Path | None, base: Path | None) -> Path | None:
    if path is None or path.is_absolute() or base is None:
        return path
    return base / path


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            [f"bench.station: cannot listen on {host}:{port}: {exc.strerror or exc} (change listen or port)"]
        ) from None
    sock.listen(64)
    sock.setblocking(False)
    return sock


class Station:
    """One uvicorn server on its own thread and event loop."""

    def __init__(self, deps: StationDeps) -> None:
        cfg = deps.cfg
        self.deps = deps
        self.cert = _resolve(cfg.tls_cert, deps.base_dir)
        self.key = _resolve(cfg.tls_key, deps.base_dir)
        ops_path = _resolve(cfg.operators_file, deps.base_dir)
        self.operators: dict[str, Operator] = load_operators(ops_path) if ops_path is not None else {}
        if cfg.sign_in_required and not self.operators:
            raise ConfigError([f"{ops_path}: no operators: add one with `python -m edge_agent.station.operators add`"])
        self.feed = Feed(deps.db_path, deps.levels, deps.desk, self._photo_url)
        self._sock = _listen(cfg.listen, cfg.port)
        self.port = int(self._sock.getsockname()[1])
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._ready = threading.Event()
        self.failed: str | None = None
        self.scan_armed_until = 0.0  # monotonic; set by a review page whose field has the focus

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def url(self) -> str:
        cfg = self.deps.cfg
        return cfg.model_copy(update={"port": self.port}).url

    def _photo_url(self, item_id: int) -> str | None:
        desk = self.deps.desk
        if desk is None or desk.cfg.keep_images == "never":
            return None
        return f"/photo/{item_id}" if desk.photo(item_id) is not None else None

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name="station", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            log.warning("station: not serving yet after %.0f s; it logs when it does, or why it stopped", timeout_s)

    def take_scan(self, code: str) -> bool:
        """A scan from the bench's scanner (driver thread): True when a page's focused field takes it."""
        loop, armed = self.feed.loop, self.scan_armed_until
        if loop is None or time.monotonic() >= armed:
            return False
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self.feed.hub.publish, "scan", {"code": code[:128]})
            return True
        return False

    def notify(self, head_seq: int) -> None:
        """The chain writer's commit hook."""
        self.feed.notify(head_seq)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("station thread still running after %.0f s", timeout_s)
        with contextlib.suppress(OSError):
            self._sock.close()
        self.feed.close()
        if self.deps.desk is not None:
            self.deps.desk.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            # The station must never take the daemon down: log it and let the bench run on.
            self.failed = "station stopped by an unexpected error"
            log.exception("station stopped by an unexpected error")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        import uvicorn

        from edge_agent.station.web import StationState, build_app

        # uvicorn's own INFO lines (process started, waiting for shutdown) say nothing a technician needs.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)

        deps, cfg = self.deps, self.deps.cfg
        # Two worker threads for the blocking reads (SQLite, scrypt): each thread may get its own malloc
        # arena, and asyncio's default pool would start up to cpu+4 of them.
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="station-io")
        )
        stopping = asyncio.Event()
        state = StationState(
            cfg=cfg,
            device=deps.device,
            profile=deps.profile,
            feed=self.feed,
            status_strip=deps.status,
            operators=self.operators,
            tls=self.cert is not None,
            stopping=stopping,
            arm_scanner=self._arm_scanner,
        )
        config = uvicorn.Config(
            build_app(state),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            http="h11",
            ws="none",
            timeout_keep_alive=5,
            timeout_graceful_shutdown=1,
            limit_concurrency=64,
            h11_max_incomplete_event_size=16 * 1024,
            ssl_certfile=str(self.cert) if self.cert else None,
            ssl_keyfile=str(self.key) if self.key else None,
        )
        server = uvicorn.Server(config)
        self._server = server
        tasks = [
            asyncio.create_task(self.feed.run(stopping), name="station-feed"),
            asyncio.create_task(self._status_loop(state, stopping), name="station-status"),
            asyncio.create_task(self._watch_stop(server, stopping), name="station-stop"),
        ]
        serving = asyncio.create_task(server.serve(sockets=[self._sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            log.info("station serving on %s", self.url)  # here, not in start(): a slow start logs it too
        self._ready.set()
        await serving
        stopping.set()
        self.feed.hub.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _arm_scanner(self, armed: bool) -> None:
        self.scan_armed_until = time.monotonic() + SCAN_ARM_S if armed else 0.0

    async def _watch_stop(self, server: Any, stopping: asyncio.Event) -> None:
        while not self.deps.stop.is_set() and not server.should_exit:
            await asyncio.sleep(STOP_POLL_S)
        stopping.set()  # end the event streams first, so the graceful shutdown has nothing to wait for
        self.feed.hub.close()
        server.should_exit = True

    async def _status_loop(self, state: Any, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                strip = await asyncio.to_thread(self._strip)
            except Exception as exc:  # noqa: BLE001 - a status read must never stop the page
                log.debug("station: status not read: %s", exc)
            else:
                if strip != state.strip:
                    state.strip = strip
                    self.feed.hub.publish("status", strip)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), STATUS_EVERY_S)

    def _strip(self) -> dict[str, Any]:
        depth = None
        with contextlib.suppress(Exception):
            depth = self.feed.outbox_depth()
        return build_strip(self.deps.profile, self.deps.device, self.deps.status(), depth)


def start_station(
    cfg: Any, status: Callable[[], dict[str, Any]], stop: threading.Event, service: Any = None
) -> Station | None:
    """Start the station for a running daemon (any profile), or None when it is off.

    `cfg` is the AgentConfig. A station that cannot start (port taken, no operators) raises ConfigError
    with one line per problem; the daemon logs it, shows it in `status` and runs on without it.
    """
    scfg: StationConfig = cfg.bench.station
    if not scfg.enabled_for(cfg.profile):
        return None
    desk = None
    base = cfg.source.parent if cfg.source is not None else None
    try:
        if cfg.profile == "bench":
            from edge_agent.pipelines.bench.fields import load_reasons
            from edge_agent.pipelines.bench.review import ReviewDesk

            desk = ReviewDesk(
                Path(cfg.state_dir),
                cfg.bench.review,
                load_reasons(cfg.bench.validation),
                cfg.bench.validation.max_quantity,
            )
        from edge_agent.pipelines.bench.rules_config import FIELD_NAMES

        levels = Levels({n: cfg.bench.fields.threshold(n) for n in FIELD_NAMES})
        station = Station(
            StationDeps(scfg, cfg.device.id, cfg.profile, Path(cfg.db_path), levels, desk, status, stop, base)
        )
    except ConfigError:
        if desk is not None:
            desk.close()
        raise
    station.start()
    if service is not None and hasattr(service, "scan_tap"):
        service.scan_tap = station.take_scan  # scans fill the focused review field while one waits
    return station
