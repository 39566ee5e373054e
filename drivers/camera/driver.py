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
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.drivers.base import DeviceUnavailable, DriverError, FrameError
from edge_agent.drivers.camera.imagefile import check_image_bytes
from edge_agent.drivers.readings import Frame
from edge_agent.schema import Expect  # not edge_agent.settings: that imports the bench config, which imports us

log = logging.getLogger(__name__)

PICAMERA2_MISSING = (
    "picamera2 not installed: apt install python3-picamera2 and create the venv with --system-site-packages"
)
# Names a half-written upload or an atomic writer's temp file has; never read as images.
_PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".filepart", ".crdownload", ".swp")
# OpenCV refuses larger images anyway (CV_IO_MAX_IMAGE_PIXELS); a smaller cap keeps a stray
# poster-sized file from eating the Pi's memory.
MAX_IMAGE_BYTES = 64 * 1024 * 1024

Name = Annotated[str, Field(min_length=1, max_length=64), Expect("a short name for logs, 1-64 characters")]
Seconds = Annotated[float, Field(gt=0, le=3600), Expect("a number of seconds > 0")]
Pixels = Annotated[int, Field(ge=16, le=16384), Expect("a size in pixels, 16-16384")]


class FolderCameraConfig(BaseModel):
    """[bench.camera] kind = "folder": an industrial camera that drops image files (FTP/SMB), or a replay."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["folder"]
    name: Name = "camera"
    path: Annotated[Path, Expect("the folder the camera drops images into")]
    extensions: Annotated[list[str], Expect('a list of file endings such as [".jpg", ".png"]')] = Field(
        default_factory=lambda: [".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"]
    )
    # What happens to a file once read: deleted (the bench keeps its own copy only as long as
    # [bench.review] says), or moved to processed_dir (default <path>/processed) for a site archive.
    after: Annotated[Literal["move", "delete"], Expect('"move" or "delete"')] = "delete"
    processed_dir: Annotated[Path | None, Expect("a folder path")] = None
    # Unreadable files go here (default <path>/rejected) so they are not retried forever.
    rejected_dir: Annotated[Path | None, Expect("a folder path")] = None
    # A file younger than this may still be uploading (FTP writes in place); wait for it.
    settle_s: Annotated[float, Field(ge=0, le=60), Expect("a number of seconds 0-60")] = 0.2
    poll_interval_s: Annotated[float, Field(gt=0, le=1), Expect("a number of seconds > 0 and <= 1")] = 0.1

    @property
    def processed(self) -> Path:
        return self.processed_dir if self.processed_dir is not None else self.path / "processed"

    @property
    def rejected(self) -> Path:
        return self.rejected_dir if self.rejected_dir is not None else self.path / "rejected"


class OpenCvCameraConfig(BaseModel):
    """[bench.camera] kind = "opencv": USB/V4L2 (index or /dev/videoN), RTSP industrial camera, or a video file."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["opencv"]
    name: Name = "camera"
    source: Annotated[int | str, Expect("a device index such as 0, a path such as /dev/video0, or an rtsp:// URL")] = 0
    width: Pixels | None = None
    height: Pixels | None = None
    # USB cameras only reach full resolution at a usable rate with MJPG.
    fourcc: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9 ]{4}$"), Expect('four characters such as "MJPG"')] = None
    backend: Annotated[
        Literal["any", "v4l2", "ffmpeg", "gstreamer"], Expect('"any", "v4l2", "ffmpeg" or "gstreamer"')
    ] = "any"
    # Frames handed on per second at most; the rest are grabbed and dropped so the latest is fresh.
    # Unset: every frame (replaying a video file).
    max_fps: Annotated[float | None, Field(gt=0, le=120), Expect("frames per second > 0")] = 10.0
    # No frame for this long: the camera counts as gone and is reopened with backoff.
    silence_timeout_s: Seconds = 5.0
    open_timeout_s: Seconds = 5.0


class Picamera2Config(BaseModel):
    """[bench.camera] kind = "picamera2": a Raspberry Pi camera module through libcamera."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["picamera2"]
    name: Name = "camera"
    camera_num: Annotated[int, Field(ge=0, le=7), Expect("a camera number 0-7")] = 0
    width: Pixels = 2028
    height: Pixels = 1520
    max_fps: Annotated[float, Field(gt=0, le=120), Expect("frames per second > 0")] = 10.0
    silence_timeout_s: Seconds = 5.0


def redact_source(src: int | str) -> str:
    """A camera source fit for logs: an RTSP URL loses its user:password part."""
    text = str(src)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    host, slash, path = rest.partition("/")
    if "@" in host:
        host = "***@" + host.rsplit("@", 1)[1]
    return f"{scheme}://{host}{slash}{path}"


def _now() -> tuple[float, datetime]:
    return time.monotonic(), datetime.now(UTC)


def decode_image(data: bytes, where: str) -> np.ndarray[Any, Any]:
    """Decode image file bytes to a BGR array; FrameError naming `where` when they are not an image."""
    if not data:
        raise FrameError(f"{where}: empty file (expected a JPEG, PNG, BMP, TIFF or WebP image)")
    if len(data) > MAX_IMAGE_BYTES:
        raise FrameError(f"{where}: {len(data)} bytes (expected an image under {MAX_IMAGE_BYTES} bytes)")
    check_image_bytes(data, where)  # a decompression bomb is refused from its header, before decoding
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise FrameError(f"{where}: not a readable image ({exc.msg.strip()})") from None
    if image is None or image.size == 0:
        raise FrameError(f"{where}: not a readable image (expected a JPEG, PNG, BMP, TIFF or WebP image)")
    return image


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
                    if name.startswith(".") or low.endswith(_PARTIAL_SUFFIXES) or not low.endswith(self._exts):
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
        except FrameError:
            self.rejected += 1
            self._dispose(path, self.cfg.rejected, "rejected")
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


CameraDriverConfig = FolderCameraConfig | OpenCvCameraConfig | Picamera2Config
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


def is_streaming(cfg: CameraDriverConfig) -> bool:
    """True for cameras that deliver a stream of frames; a folder camera delivers one file per shot."""
    return not isinstance(cfg, FolderCameraConfig)
