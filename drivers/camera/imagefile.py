"""Image files checked before anything decodes them: a regular file, a bounded size, and a bounded pixel count.

A PNG of under a megabyte can declare 30000 x 30000 pixels; decoding it allocates 2.7 GB. The header
says how large the image is, so every path that decodes an image reads the header first (Pillow reads
only the header on open) and refuses a file that would not fit a Pi's memory.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

from edge_agent.drivers.base import FrameError

# A stray poster-sized file must not eat the Pi's memory; bench cameras deliver a few MB per shot.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
# 50 megapixels (e.g. 8660 x 5770) is more than any bench camera delivers; decoded BGR that is 150 MB.
MAX_IMAGE_PIXELS = 50_000_000
FORMATS = "JPEG, PNG, BMP, TIFF or WebP"


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) the image header declares, without decoding the pixels; None when no known header.

    A header beyond Pillow's own bomb limit (about 179 megapixels) comes back as (0, 0).
    """
    from PIL import Image

    with warnings.catch_warnings():
        # Pillow warns about large images itself; the caller decides with the numbers.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                return int(im.size[0]), int(im.size[1])
        except Image.DecompressionBombError:
            return 0, 0
        except (OSError, ValueError, SyntaxError):
            return None


def _mb(n: int) -> str:
    return f"{n // 1048576} MB" if n % 1048576 == 0 else f"{n / 1048576:.1f} MB"


def too_large(where: str | Path, size: int | None, limit: int) -> FrameError:
    """A file over the cap, in MB; `size` None when only "more than the cap" is known (read up to it)."""
    got = f"more than {_mb(limit)}" if size is None else _mb(size)
    return FrameError(f"{where}: {got} (expected an image of at most {_mb(limit)})")


def check_image_bytes(data: bytes, where: str, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """The header's (width, height); FrameError naming `where` when the bytes are no image or too large."""
    if not data:
        raise FrameError(f"{where}: empty file (expected a {FORMATS} image)")
    if len(data) > MAX_IMAGE_BYTES:
        raise too_large(where, None, MAX_IMAGE_BYTES)
    size = header_size(data)
    if size is None:
        raise FrameError(f"{where}: not a readable image (expected a {FORMATS} image; it may be truncated)")
    w, h = size
    if w * h > max_pixels or size == (0, 0):
        declared = f"{w}x{h} px" if w else "more than 179 megapixels"
        raise FrameError(
            f"{where}: image too large: its header declares {declared}, expected at most "
            f"{max_pixels / 1e6:g} megapixels (refused before decoding)"
        )
    return size


def read_image_file(path: str | Path, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of an image file; FrameError naming it when it is no regular file, missing or too large.

    Opened without blocking so a FIFO or a device node is refused instead of waiting forever, and never
    read past max_bytes, so a 3 GB file costs nothing.
    """
    p = str(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FrameError(f"{p}: image file not found") from None
    except IsADirectoryError:
        raise FrameError(f"{p}: is a directory (expected an image file)") from None
    except OSError as exc:
        raise FrameError(f"{p}: cannot open: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else ""
            raise FrameError(f"{p}: not a regular file{' (' + kind + ')' if kind else ''}; expected an image file")
        if st.st_size > max_bytes:
            raise too_large(p, st.st_size, max_bytes)
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise FrameError(f"{p}: cannot read: {exc.strerror or exc}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > max_bytes:  # grew while we read it
        raise too_large(p, None, max_bytes)
    return data
