"""Is the configured camera there? A folder taking uploads, picamera2 installed, or an OpenCV source with frames."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from edge_agent.drivers.camera.config import CameraDriverConfig, FolderCameraConfig, OpenCvCameraConfig
from edge_agent.drivers.camera.protocol import redact_source
from edge_agent.drivers.probing import ProbeOutcome


def probe(cfg: CameraDriverConfig) -> ProbeOutcome:
    """One verdict for one [bench.camera] section; grabs one frame from an OpenCV source."""
    if isinstance(cfg, FolderCameraConfig):
        folder = Path(cfg.path)
        if not folder.is_dir():
            return ProbeOutcome(
                "fail", f"{folder} is not a folder", "create it and point the camera's FTP/SMB upload at it"
            )
        if not os.access(folder, os.W_OK):
            return ProbeOutcome(
                "fail", f"{folder} is not writable by this user", "chown the folder to the service user"
            )
        return ProbeOutcome("ok", f"{folder} exists and is writable")
    if isinstance(cfg, OpenCvCameraConfig):
        return _probe_opencv(cfg)
    if importlib.util.find_spec("picamera2") is None:
        return ProbeOutcome("fail", "picamera2 is not installed", "sudo apt install python3-picamera2")
    return ProbeOutcome("ok", "picamera2 available (frames not grabbed: the agent holds the camera)")


def _probe_opencv(cfg: OpenCvCameraConfig) -> ProbeOutcome:
    import cv2

    where = redact_source(cfg.source)
    cap = cv2.VideoCapture(cfg.source)
    try:
        if not cap.isOpened():
            return ProbeOutcome("fail", f"cannot open {where!r}", "plug the camera in; check `ls /dev/video*`")
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok or frame is None:
        return ProbeOutcome("fail", f"{where!r} opens but delivers no frame", "check the camera's cable and power")
    h, w = frame.shape[:2]
    if cfg.width and cfg.height and (w, h) != (cfg.width, cfg.height):
        return ProbeOutcome(
            "fail",
            f"frames are {w}x{h}, the config asks for {cfg.width}x{cfg.height}",
            "set width/height to a mode the camera supports (v4l2-ctl --list-formats-ext)",
        )
    return ProbeOutcome("ok", f"delivers {w}x{h} frames")
