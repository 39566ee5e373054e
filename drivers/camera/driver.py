"""Bench cameras: a watched folder (FTP/SMB-dropping industrial cameras), OpenCV VideoCapture, picamera2.

Each driver hands out `Frame` readings (BGR numpy arrays). A camera that stops delivering
frames raises DeviceUnavailable, so the DriverRunner reopens it with backoff. Frames never
go to logs; only file names and sizes do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2

from edge_agent.drivers.base import DeviceUnavailable, DriverError, FrameError
from edge_agent.drivers.camera.config import (
    CameraDriverConfig,
    FolderCameraConfig,
    OpenCvCameraConfig,
    Picamera2Config,
    is_streaming,
)
from edge_agent.drivers.camera.imagefile import MAX_IMAGE_BYTES
from edge_agent.drivers.camera.protocol import PARTIAL_SUFFIXES, decode_image, redact_source
from edge_agent.drivers.readings import Frame

# Names kept importable from here for code written before the config/protocol split.
__all__ = [
    "MAX_IMAGE_BYTES",
    "PICAMERA2_MISSING",
    "CameraDriver",
    "CameraDriverConfig",
    "FolderCamera",
    "FolderCameraConfig",
    "OpenCvCamera",
    "OpenCvCameraConfig",
    "Picamera2Camera",
    "Picamera2Config",
    "check_camera",
    "decode_image",
    "is_streaming",
    "make_camera",
    "redact_source",
]

log = logging.getLogger(__name__)


def _now() -> tuple[float, datetime]:
    return time.monotonic(), datetime.now(UTC)


PICAMERA2_MISSING = (
    "picamera2 not installed: apt install python3-picamera2 and create the venv with --system-site-packages"
)


class FolderCamera:
    """Watches a folder for new image files, oldest first; moves or deletes each one it has read."""

    def __init__(self, cfg: FolderCameraConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in cfg.extensions)
        self._open = False
        self.rejected = 0

    def open(self) -> None:
        path = self.cfg.path
        if not path.is_dir():
            raise DeviceUnavailable(f"{path}: folder not found (is the camera's share mounted?)")
        if not os.access(path, os.R_OK | os.X_OK):
            raise DeviceUnavailable(f"{path}: folder not readable by this user")
        try:
            if self.cfg.after == "move":
                self.cfg.processed.mkdir(parents=True, exist_ok=True)
            self.cfg.rejected.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeviceUnavailable(f"{path}: cannot create processed/rejected folders: {exc}") from None
        self._open = True

    def close(self) -> None:
        self._open = False

    def _candidates(self) -> list[tuple[float, str, Path]]:
        now = time.time()
        found = []
        try:
            with os.scandir(self.cfg.path) as it:
                for entry in it:
                    name = entry.name
                    low = name.lower()
                    if name.startswith(".") or low.endswith(PARTIAL_SUFFIXES) or not low.endswith(self._exts):
                        continue
                    try:
                        st = entry.stat()
                        if not entry.is_file():
                            continue
                    except FileNotFoundError:
                        continue  # taken by someone else between listing and stat
                    if now - st.st_mtime < self.cfg.settle_s:
                        continue
                    found.append((st.st_mtime, name, Path(entry.path)))
        except OSError as exc:
            raise DeviceUnavailable(f"{self.cfg.path}: cannot list folder: {exc}") from None
        found.sort()
        return found

    def read(self, timeout_s: float) -> Frame | None:
        if not self._open:
            raise DeviceUnavailable(f"{self.cfg.path}: not open")
        deadline = time.monotonic() + timeout_s
        while True:
            candidates = self._candidates()
            if candidates:
                return self._take(candidates[0][2])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(self.cfg.poll_interval_s, remaining))

    def _take(self, path: Path) -> Frame:
        t_mono, t_utc = _now()
        try:
            with path.open("rb") as f:
                data = f.read(MAX_IMAGE_BYTES + 1)
        except FileNotFoundError:
            raise FrameError(f"{path.name}: vanished before it could be read") from None
        except OSError as exc:
            raise FrameError(f"{path.name}: cannot read: {exc}") from None
        try:
            image = decode_image(data, str(path))
        except FrameError as exc:
            self.rejected += 1
            moved = self._dispose(path, self.cfg.rejected, "rejected")
            # A dropped photo is a slip someone is waiting on: say why it was not read, not only at debug.
            log.warning("%s: photo not inspected: %s; moved to %s", self.name, exc, moved)
            raise
        kept = self._dispose(path, self.cfg.processed if self.cfg.after == "move" else None, "processed")
        return Frame(t_mono=t_mono, t_utc=t_utc, image=image, source=self.name, path=str(kept) if kept else None)

    def _dispose(self, path: Path, folder: Path | None, what: str) -> Path | None:
        """Move `path` into `folder` (a unique name; never overwrites) or delete it when folder is None."""
        try:
            if folder is None:
                path.unlink(missing_ok=True)
                return None
            target = folder / path.name
            n = 1
            while target.exists():
                target = folder / f"{path.stem}.{n}{path.suffix}"
                n += 1
            path.replace(target)
        except OSError as exc:
            # Leaving it would make us read it again and again: that is a dead camera folder.
            raise DeviceUnavailable(f"{path}: cannot move to {what} folder: {exc}") from None
        return target


_BACKENDS = {"any": cv2.CAP_ANY, "v4l2": cv2.CAP_V4L2, "ffmpeg": cv2.CAP_FFMPEG, "gstreamer": cv2.CAP_GSTREAMER}


class OpenCvCamera:
    """Reads frames through cv2.VideoCapture; hands on at most max_fps of them, always the freshest."""

    def __init__(self, cfg: OpenCvCameraConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._cap: Any = None
        self._last_frame_mono = 0.0
        self._last_sent_mono = 0.0
        self._where = redact_source(cfg.source)

    def _source(self) -> int | str:
        src = self.cfg.source
        if isinstance(src, str) and src.isdigit():
            return int(src)
        return src

    def open(self) -> None:
        self.close()
        src = self._source()
        where = self._where
        if isinstance(src, str) and "://" not in src and not Path(src).exists():
            raise DeviceUnavailable(f"{where}: no such camera device or file")
        timeout_ms = int(self.cfg.open_timeout_s * 1000)
        # Read timeout <= 1 s: a blocking read must never hold the thread longer than that.
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 1000]
        try:
            cap = cv2.VideoCapture(src, _BACKENDS[self.cfg.backend], params)
        except cv2.error as exc:
            raise DeviceUnavailable(f"{where}: cannot open camera: {exc.msg.strip()}") from None
        if not cap.isOpened():
            cap.release()
            raise DeviceUnavailable(f"{where}: cannot open camera (busy, unplugged or unreachable)")
        if self.cfg.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.cfg.fourcc))
        if self.cfg.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
        if self.cfg.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        self._cap = cap
        self._last_frame_mono = time.monotonic()
        self._last_sent_mono = 0.0

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            with contextlib.suppress(cv2.error):
                cap.release()

    def read(self, timeout_s: float) -> Frame | None:
        cap = self._cap
        if cap is None:
            raise DeviceUnavailable(f"{self._where}: not open")
        deadline = time.monotonic() + timeout_s
        period_s = 1.0 / self.cfg.max_fps if self.cfg.max_fps else 0.0
        while True:
            try:
                ok = cap.grab()
            except cv2.error as exc:
                raise DeviceUnavailable(f"{self._where}: grab failed: {exc.msg.strip()}") from None
            now = time.monotonic()
            if not ok:
                if now - self._last_frame_mono > self.cfg.silence_timeout_s:
                    raise DeviceUnavailable(
                        f"{self._where}: no frame for {self.cfg.silence_timeout_s:g} s (camera stopped delivering)"
                    )
                # A failed grab returns at once on a dead stream: pace the retries.
                time.sleep(min(0.05, max(0.0, deadline - now)))
            else:
                self._last_frame_mono = now
                if now - self._last_sent_mono >= period_s:
                    ok, image = cap.retrieve()
                    if ok and image is not None and image.size:
                        self._last_sent_mono = now
                        t_utc = datetime.now(UTC)
                        return Frame(t_mono=now, t_utc=t_utc, image=image, source=self.name)
            if time.monotonic() >= deadline:
                return None


class Picamera2Camera:
    """A Raspberry Pi camera module through picamera2 (imported only when this driver opens)."""

    def __init__(self, cfg: Picamera2Config) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._cam: Any = None
        self._job: Any = None
        self._last_frame_mono = 0.0
        self._last_sent_mono = 0.0

    def open(self) -> None:
        self.close()
        try:
            picamera2_cls = load_picamera2()
        except DriverError as exc:
            raise DeviceUnavailable(str(exc)) from None
        try:
            cam = picamera2_cls(self.cfg.camera_num)
            # picamera2's "RGB888" is laid out B, G, R in memory: exactly OpenCV's BGR.
            config = cam.create_video_configuration(
                main={"size": (self.cfg.width, self.cfg.height), "format": "RGB888"}, buffer_count=2
            )
            cam.configure(config)
            cam.start()
        except (RuntimeError, OSError, IndexError, ValueError) as exc:
            raise DeviceUnavailable(f"picamera2 camera {self.cfg.camera_num}: cannot open: {exc}") from None
        self._cam = cam
        self._last_frame_mono = time.monotonic()
        self._last_sent_mono = 0.0

    def close(self) -> None:
        cam, self._cam, self._job = self._cam, None, None
        if cam is not None:
            with contextlib.suppress(Exception):  # libcamera raises assorted errors on a dead camera
                cam.stop()
            with contextlib.suppress(Exception):
                cam.close()

    def read(self, timeout_s: float) -> Frame | None:
        cam = self._cam
        if cam is None:
            raise DeviceUnavailable(f"picamera2 camera {self.cfg.camera_num}: not open")
        now = time.monotonic()
        wait_s = self._last_sent_mono + 1.0 / self.cfg.max_fps - now
        if wait_s > 0:
            time.sleep(min(wait_s, timeout_s))
            if wait_s > timeout_s:
                return None
        try:
            if self._job is None:
                self._job = cam.capture_array("main", wait=False)
            image = self._job.get_result(timeout=min(timeout_s, 1.0))
        except TimeoutError:
            if time.monotonic() - self._last_frame_mono > self.cfg.silence_timeout_s:
                raise DeviceUnavailable(
                    f"picamera2 camera {self.cfg.camera_num}: no frame for {self.cfg.silence_timeout_s:g} s"
                ) from None
            return None
        except (RuntimeError, OSError) as exc:
            raise DeviceUnavailable(f"picamera2 camera {self.cfg.camera_num}: {exc}") from None
        self._job = None
        now = time.monotonic()
        self._last_frame_mono = self._last_sent_mono = now
        return Frame(t_mono=now, t_utc=datetime.now(UTC), image=image, source=self.name)


def load_picamera2() -> Any:
    """The Picamera2 class, or DriverError saying how to install it."""
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise DriverError(PICAMERA2_MISSING) from None
    return Picamera2


CameraDriver = FolderCamera | OpenCvCamera | Picamera2Camera


def make_camera(cfg: CameraDriverConfig) -> CameraDriver:
    """The driver for one [bench.camera] section (no I/O until open())."""
    if isinstance(cfg, FolderCameraConfig):
        return FolderCamera(cfg)
    if isinstance(cfg, OpenCvCameraConfig):
        return OpenCvCamera(cfg)
    return Picamera2Camera(cfg)


def check_camera(cfg: CameraDriverConfig) -> None:
    """Raise DriverError at start for what no retry can fix (a missing optional library)."""
    if isinstance(cfg, Picamera2Config):
        load_picamera2()
