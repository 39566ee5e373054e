"""The [bench.camera] section: folder, OpenCV and picamera2 cameras (pydantic and stdlib only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.schema import Expect

Name = Annotated[str, Field(min_length=1, max_length=64), Expect("a short name for logs, 1-64 characters")]
Seconds = Annotated[float, Field(gt=0, le=3600), Expect("a number of seconds > 0")]
Pixels = Annotated[int, Field(ge=16, le=16384), Expect("a size in pixels, 16-16384")]


class FolderCameraConfig(BaseModel):
    """[bench.camera] kind = "folder": an industrial camera that drops image files (FTP/SMB), or a replay."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

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

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

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

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["picamera2"]
    name: Name = "camera"
    camera_num: Annotated[int, Field(ge=0, le=7), Expect("a camera number 0-7")] = 0
    width: Pixels = 2028
    height: Pixels = 1520
    max_fps: Annotated[float, Field(gt=0, le=120), Expect("frames per second > 0")] = 10.0
    silence_timeout_s: Seconds = 5.0


CameraDriverConfig = FolderCameraConfig | OpenCvCameraConfig | Picamera2Config


def is_streaming(cfg: CameraDriverConfig) -> bool:
    """True for cameras that deliver a stream of frames; a folder camera delivers one file per shot."""
    return not isinstance(cfg, FolderCameraConfig)
