"""Image files over bytes: size cap, decoding to a BGR array, and source names fit for logs."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from edge_agent.drivers.base import FrameError
from edge_agent.drivers.camera.imagefile import FORMATS, check_image_bytes

# Names a half-written upload or an atomic writer's temp file has; never read as images.
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".filepart", ".crdownload", ".swp")


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
    # Empty, over MAX_IMAGE_BYTES, or a decompression bomb: refused from the bytes and the header, before decoding.
    check_image_bytes(data, where)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise FrameError(f"{where}: not a readable image ({exc.msg.strip()})") from None
    if image is None or image.size == 0:
        raise FrameError(f"{where}: not a readable image (expected a {FORMATS} image)")
    return image
