"""Image files over bytes: size cap, decoding to a BGR array, and source names fit for logs."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from edge_agent.drivers.base import FrameError
from edge_agent.drivers.camera.imagefile import check_image_bytes

# Names a half-written upload or an atomic writer's temp file has; never read as images.
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".filepart", ".crdownload", ".swp")
# OpenCV refuses larger images anyway (CV_IO_MAX_IMAGE_PIXELS); a smaller cap keeps a stray
# poster-sized file from eating the Pi's memory.
MAX_IMAGE_BYTES = 64 * 1024 * 1024


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
