"""The bench service: camera and scanner drivers, triggers pairing scans with photos, inspection, records, review.

Threads: one DriverRunner per driver, and one worker that pairs, inspects (OCR) and emits. The
camera callback only keeps the latest frame (and runs the cheap still detector); the worker is
the only thread that touches the Inspector and the review queue.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_agent.drivers.base import DriverError, DriverRunner
from edge_agent.drivers.camera.driver import CameraDriverConfig, check_camera, is_streaming, make_camera
from edge_agent.drivers.readings import Frame, Scan
from edge_agent.drivers.scanner.driver import make_scanner
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.pipelines.bench.manifest import CENTRAL_NAMES, ManifestError, active_manifest, configured_path
from edge_agent.pipelines.bench.review import ReviewQueue, queue_path, save_image
from edge_agent.pipelines.bench.triggers import (
    DebounceState,
    StillState,
    debounce,
    step_still,
    take_capture_request,
    thumbnail,
)
from edge_agent.service import Heartbeat, ServiceContext

if TYPE_CHECKING:
    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.inspect import InspectionResult, Inspector
    from edge_agent.pipelines.bench.manifest import Manifest

log = logging.getLogger(__name__)

ACCEPTED_IMAGES_DIR = "images"
REVIEW_POLL_S = 1.0
PURGE_INTERVAL_S = 60.0
MANIFEST_POLL_S = 5.0
MAX_HELD = 4  # photos waiting for a scan; more means nobody is scanning: inspect the oldest without one
LOOP_S = 0.05
FRESH_FRAME_S = 2.0  # a manual capture takes the latest frame only if it is this recent


@dataclass(frozen=True, slots=True)
class Shot:
    """A photo chosen for inspection, and why it was taken."""

    frame: Frame
    trigger: str  # "scan" | "file" | "still" | "manual"


@dataclass(frozen=True, slots=True)
class PendingScan:
    scan: Scan
    deadline_mono: float


class BenchService:
    """Runs the bench: capture -> pair -> inspect -> return_inspection record, or the review queue."""

    name = "bench"
    # Set by start(); the worker and callbacks run only after it.
    _ctx: ServiceContext
    _cfg: BenchConfig
    _camera_cfg: CameraDriverConfig
    _queue: ReviewQueue
    _inspector: Inspector

    def __init__(self, *, inspector: Inspector | None = None, engine: str | None = None) -> None:
        self._given_inspector = inspector
        self._engine = engine
        self._stop = threading.Event()
        self._started = False
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=32)
        self._lock = threading.Lock()
        self._latest: Frame | None = None
        self._still = StillState()
        self._camera_runner: DriverRunner[Frame] | None = None
        self._scanner_runner: DriverRunner[Scan] | None = None
        self._worker: threading.Thread | None = None
        self._beat = Heartbeat()
        # worker-only state
        self._debounce = DebounceState()
        self._scans: deque[PendingScan] = deque()
        self._held: deque[Shot] = deque()
        self._manifest_mtimes: tuple[float | None, ...] = ()
        self.counts = {
            "scans": 0,
            "double_scans": 0,
            "photos": 0,
            "inspected": 0,
            "emitted": 0,
            "queued_for_review": 0,
            "reviewed_emitted": 0,
            "scans_without_photo": 0,
            "failed": 0,
        }
        self.last_inspect_ms: float | None = None
        # Set by the operator station: while a review field waits for a scan, the scan goes there, not to pairing.
        self.scan_tap: Callable[[str], bool] | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self, ctx: ServiceContext) -> None:
        cfg = ctx.config.bench
        source = str(ctx.config.source or "config")
        if cfg.camera is None:
            raise ConfigError(
                [
                    f"{source}: bench.camera: required for the bench profile (a table with kind = "
                    f'"folder", "opencv" or "picamera2")'
                ]
            )
        try:
            check_camera(cfg.camera)
        except DriverError as exc:
            raise ConfigError([f"{source}: bench.camera: {exc}"]) from None
        self._ctx, self._cfg, self._camera_cfg = ctx, cfg, cfg.camera
        self._stop.clear()
        state_dir = Path(ctx.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        if self._given_inspector is None:
            from edge_agent.pipelines.bench.inspect import Inspector

            base = ctx.config.source.parent if ctx.config.source is not None else None
            self._inspector = Inspector(cfg, engine=self._engine, base_dir=base)
            self._set_manifest(previous=None)
        else:
            self._inspector = self._given_inspector
            self._manifest_mtimes = self._manifest_stamp()
        self._queue = ReviewQueue(queue_path(state_dir), review_cfg=cfg.review, mend=True)
        self._started = True
        camera = make_camera(cfg.camera)
        self._camera_runner = DriverRunner(camera, self._on_frame, self._stop)
        if cfg.scanner is not None:
            self._scanner_runner = DriverRunner(make_scanner(cfg.scanner), self._on_scan, self._stop)
        self._worker = threading.Thread(target=self._run, name="bench-worker", daemon=True)
        self._worker.start()
        self._camera_runner.start()
        if self._scanner_runner is not None:
            self._scanner_runner.start()
        log.info(
            "bench started: camera %s (%s), scanner %s, trigger %s",
            cfg.camera.name,
            cfg.camera.kind,
            cfg.scanner.kind if cfg.scanner is not None else "none",
            cfg.trigger.mode,
        )

    def stop(self) -> None:
        self._stop.set()
        for runner in (self._camera_runner, self._scanner_runner):
            if runner is not None:
                runner.join(2.0)
        if self._worker is not None:
            self._worker.join(5.0)
        if self._started:
            self._queue.close()
            self._started = False

    def heartbeat(self) -> float:
        beats = [self._beat.t]
        beats += [r.heartbeat for r in (self._camera_runner, self._scanner_runner) if r is not None]
        return min(beats)

    def status(self) -> dict[str, Any]:
        def runner_status(r: DriverRunner[Any] | None) -> dict[str, Any] | None:
            # No "recovering" (a runner lost and not read since): the scanner and the camera read only when a
            # person scans or shoots, so a replugged scanner is not at fault until its first scan.
            if r is None:
                return None
            return {
                "connected": r.connected,
                "frames_ok": r.frames_ok,
                "frames_bad": r.frames_bad,
                "reconnects": r.reconnects,
                "last_error": r.last_error,
            }

        return {
            "camera": runner_status(self._camera_runner),
            "scanner": runner_status(self._scanner_runner),
            "trigger": self._cfg.trigger.mode if self._started else None,
            "counts": dict(self.counts),
            "last_inspect_ms": self.last_inspect_ms,
            "waiting_scans": len(self._scans),
            "waiting_photos": len(self._held),
            "manifest": self._manifest_status(),
        }

    def _manifest_status(self) -> dict[str, Any] | None:
        """The expected-returns manifest in use (central sees it in health records), or why there is none."""
        inspector = self._inspector if self._started else None
        if inspector is None:
            return None
        m = inspector.manifest
        if m is not None:
            return {"orders": len(m.orders), "sha256": m.sha256, "problem": None}
        problem = inspector.manifest_problem
        return None if problem is None else {"orders": None, "sha256": None, "problem": problem[:200]}

    # ------------------------------------------------------------ driver callbacks (driver threads)

    def _put(self, item: tuple[str, Any], runner: DriverRunner[Any] | None) -> None:
        """Hand an event to the worker; block (back-pressure on the driver) rather than drop it."""
        while not self._stop.is_set():
            try:
                self._events.put(item, timeout=0.5)
                return
            except queue.Full:
                if runner is not None:
                    runner.heartbeat = time.monotonic()  # waiting on purpose, not stuck

    def _on_scan(self, scan: Scan) -> None:
        tap = self.scan_tap
        if tap is not None and tap(scan.code):
            return  # typed into the station's focused field
        self._put(("scan", scan), self._scanner_runner)

    def _on_frame(self, frame: Frame) -> None:
        cfg = self._cfg
        if not is_streaming(self._camera_cfg):
            self._put(("shot", Shot(frame, "file")), self._camera_runner)
            return
        with self._lock:
            self._latest = frame
        if cfg.trigger.mode == "still":
            thumb = thumbnail(frame.image, cfg.trigger.still_width_px)
            self._still, fire = step_still(self._still, thumb, frame.t_mono, cfg.trigger)
            if fire:
                self._put(("shot", Shot(frame, "still")), self._camera_runner)

    # ------------------------------------------------------------ worker

    def _run(self) -> None:
        ctx = self._ctx
        next_review = next_purge = next_manifest = 0.0
        try:
            while not self._stop.is_set():
                if ctx.stop.is_set():
                    self._stop.set()
                    break
                self._beat.beat()
                try:
                    kind, item = self._events.get(timeout=LOOP_S)
                except queue.Empty:
                    pass
                else:
                    if kind == "scan":
                        self._handle_scan(item)
                    else:
                        self._handle_shot(item)
                now = time.monotonic()
                self._capture_for_scans(now)
                self._expire(now)
                request = take_capture_request(Path(ctx.state_dir))
                if request is not None:
                    self._handle_manual(request.code)
                if now >= next_review:
                    next_review = now + REVIEW_POLL_S
                    self._emit_reviewed()
                if now >= next_purge:
                    next_purge = now + PURGE_INTERVAL_S
                    self._purge_images()
                if now >= next_manifest:
                    next_manifest = now + MANIFEST_POLL_S
                    self._reload_manifest_if_changed()
            self._flush()
        except Exception:
            # Nothing may take the daemon down; the stale heartbeat makes systemd restart us.
            log.exception("bench worker stopped by an unexpected error")
            raise

    def _handle_scan(self, scan: Scan) -> None:
        cfg = self._cfg
        self.counts["scans"] += 1
        self._debounce, ok = debounce(self._debounce, scan.code, scan.t_mono, cfg.trigger.debounce_s)
        if not ok:
            self.counts["double_scans"] += 1
            log.debug("double scan from %s dropped", scan.source)
            return
        if self._held:
            self._inspect(self._held.popleft(), scan)
            return
        if is_streaming(self._camera_cfg) and cfg.trigger.mode == "scan-then-capture":
            # One photo per scan, taken capture_delay_s after it: a newer scan supersedes a waiting one.
            while self._scans:
                self._scan_without_photo(self._scans.popleft())
        self._scans.append(PendingScan(scan, scan.t_mono + cfg.trigger.timeout_s))

    def _handle_shot(self, shot: Shot) -> None:
        self.counts["photos"] += 1
        if self._scans:
            self._inspect(shot, self._scans.popleft().scan)
            return
        self._held.append(shot)
        while len(self._held) > MAX_HELD:
            self._inspect(self._held.popleft(), None)

    def _capture_for_scans(self, now: float) -> None:
        """Streaming camera, scan-then-capture: the first frame capture_delay_s after the scan is its photo."""
        cfg = self._cfg
        if not self._scans or not is_streaming(self._camera_cfg) or cfg.trigger.mode != "scan-then-capture":
            return
        with self._lock:
            frame = self._latest
        pending = self._scans[0]
        if frame is not None and frame.t_mono >= pending.scan.t_mono + cfg.trigger.capture_delay_s:
            self._scans.popleft()
            self.counts["photos"] += 1
            self._inspect(Shot(frame, "scan"), pending.scan)

    def _expire(self, now: float) -> None:
        cfg = self._cfg
        while self._scans and self._scans[0].deadline_mono <= now:
            self._scan_without_photo(self._scans.popleft())
        while self._held and now - self._held[0].frame.t_mono >= cfg.trigger.timeout_s:
            self._inspect(self._held.popleft(), None)

    def _scan_without_photo(self, pending: PendingScan) -> None:
        self.counts["scans_without_photo"] += 1
        log.warning(
            "scan from %s got no photo within %.1f s", pending.scan.source, pending.deadline_mono - pending.scan.t_mono
        )
        self._ctx.emit("event", {"event": "bench_scan_without_photo", "scanner": pending.scan.source})

    def _handle_manual(self, code: str | None) -> None:
        log.info("manual capture requested")
        scan = None
        if code is not None:
            now = time.monotonic()
            scan = Scan(t_mono=now, t_utc=datetime.now(UTC), code=code, source="manual", raw=code)
        elif self._scans:
            scan = self._scans.popleft().scan
        if self._held:
            self._inspect(self._held.popleft(), scan)
            return
        if is_streaming(self._camera_cfg):
            with self._lock:
                frame = self._latest
            if frame is not None and time.monotonic() - frame.t_mono <= FRESH_FRAME_S:
                self.counts["photos"] += 1
                self._inspect(Shot(frame, "manual"), scan)
                return
        log.warning("manual capture: no recent photo from the camera")
        self._ctx.emit("event", {"event": "bench_manual_capture_failed", "reason": "no recent photo"})

    def _flush(self) -> None:
        """On stop: photos already taken are inspected (a folder camera's file is gone once read)."""
        while True:
            try:
                kind, item = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == "scan":
                self._handle_scan(item)
            else:
                self._handle_shot(item)
        while self._held:
            self._inspect(self._held.popleft(), None)
        self._emit_reviewed()

    # ------------------------------------------------------------ inspection

    def _inspect(self, shot: Shot, scan: Scan | None) -> None:
        ctx, inspector = self._ctx, self._inspector
        frame = shot.frame
        name = f"{frame.source}-{frame.t_utc:%Y%m%dT%H%M%S.%f}"
        image = np.asarray(frame.image, dtype=np.uint8)
        t0 = time.perf_counter()
        try:
            result = inspector.inspect(image, scan=scan.code if scan else None, image_name=name)
        except Exception as exc:  # one photo the engines choke on must not stop the bench
            if isinstance(exc, MemoryError):
                raise
            self.counts["failed"] += 1
            log.error("inspection of a photo from %s failed: %s", frame.source, type(exc).__name__)
            ctx.emit("event", {"event": "bench_inspection_failed", "camera": frame.source, "error": type(exc).__name__})
            return
        self.last_inspect_ms = round((time.perf_counter() - t0) * 1000, 1)
        self.counts["inspected"] += 1
        capture = {
            "trigger": shot.trigger,
            "camera": frame.source,
            "scanner": scan.source if scan else None,
            "scan_to_photo_ms": round((frame.t_mono - scan.t_mono) * 1000) if scan else None,
        }
        if not result.needs_review:
            body = result.record_body()
            body["capture"] = capture
            ctx.emit("return_inspection", body)
            self.counts["emitted"] += 1
            self._keep_accepted_image(image)
            log.info("return inspected and recorded (%.0f ms)", self.last_inspect_ms)
            return
        self._queue_for_review(result, image, capture)

    def _queue_for_review(self, result: InspectionResult, image: NDArray[np.uint8], capture: dict[str, Any]) -> None:
        ctx, cfg, rq = self._ctx, self._cfg, self._queue
        image_path = None
        try:
            image_path = save_image(Path(ctx.state_dir), image, cfg.review)
        except (EdgeAgentError, OSError) as exc:
            log.error("could not keep the photo for review: %s", type(exc).__name__)
        body = result.record_body()
        body["capture"] = capture
        item_id = rq.add_body(body, image_path)
        self.counts["queued_for_review"] += 1
        ctx.emit(
            "event",
            {
                "event": "bench_review_queued",
                "review_id": item_id,
                "reasons": sorted({i.code for i in result.review_reasons}),
            },
        )

    def _emit_reviewed(self) -> None:
        ctx, rq = self._ctx, self._queue
        for item_id, body in rq.pending_records(self._cfg.privacy):
            ctx.emit("return_inspection", body)
            rq.mark_emitted(item_id)
            self.counts["reviewed_emitted"] += 1

    # ------------------------------------------------------------ images and manifest

    def _accepted_dir(self) -> Path:
        return Path(self._ctx.state_dir) / ACCEPTED_IMAGES_DIR

    def _keep_accepted_image(self, image: NDArray[np.uint8]) -> None:
        cfg = self._cfg
        if not cfg.review.keep_accepted_images or cfg.review.keep_images == "never":
            return
        folder = self._accepted_dir()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            return
        path = folder / f"{uuid.uuid4().hex}.jpg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(buf.tobytes())

    def _purge_images(self) -> None:
        cfg, rq = self._cfg, self._queue
        purged = rq.purge_images()
        cutoff = time.time() - cfg.review.keep_images_h * 3600
        folder = self._accepted_dir()
        if folder.is_dir():
            for p in folder.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if p.stat().st_mtime < cutoff:
                        p.unlink()
                        purged += 1
        if purged:
            log.info("deleted %d raw image(s) past their keeping time", purged)

    def _manifest_stamp(self) -> tuple[float | None, ...]:
        paths = [Path(self._ctx.state_dir, name) for name in CENTRAL_NAMES]
        configured = self._configured_manifest()
        if configured is not None:
            paths.append(configured)
        stamps: list[float | None] = []
        for p in paths:
            try:
                stamps.append(p.stat().st_mtime)
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def _configured_manifest(self) -> Path | None:
        return configured_path(self._cfg.validation.manifest, self._ctx.config.source)

    def _set_manifest(self, previous: Manifest | None) -> bool:
        """Load the active manifest into the inspector; False when it cannot be read. Then the bench keeps
        running (central can send a good one, a technician fix the file): with the previous manifest on a
        reload, and with none at start, where every slip goes to a person (`manifest_unreadable`)."""
        self._manifest_mtimes = self._manifest_stamp()
        try:
            manifest = active_manifest(Path(self._ctx.state_dir), self._configured_manifest())
        except ManifestError as exc:
            if previous is not None:
                log.error("expected-returns manifest not reloaded, keeping the previous one: %s", exc.summary())
                return False
            log.error(
                "expected-returns manifest cannot be read: %s. Every slip goes to review until it is fixed "
                "(it is read again when it changes; `edge-agent doctor` checks it)",
                exc.summary(3),
            )
            self._inspector.set_manifest(None, problem=exc.problems[0])
            return False
        self._inspector.set_manifest(manifest)
        return True

    def _reload_manifest_if_changed(self) -> None:
        if self._manifest_stamp() == self._manifest_mtimes:
            return
        if self._set_manifest(previous=self._inspector.manifest):
            log.info("expected-returns manifest reloaded")
