"""Serial scanner frames over bytes: terminator, prefix/suffix, plausible barcode text (pure)."""

from __future__ import annotations

from edge_agent.drivers.base import FrameError
from edge_agent.drivers.scanner.config import SerialScannerConfig

MAX_CODE_BYTES = 4096  # a full QR code is under 3 KB; more means a lost terminator
# Control characters that are part of barcode data (GS1 FNC1 as GS, ISO 15434 RS/GS/EOT, FS).
DATA_CONTROLS = frozenset("\x04\x1c\x1d\x1e")


def strip_affixes(text: str, prefix: str, suffix: str, raw: bytes) -> str:
    if prefix:
        if not text.startswith(prefix):
            raise FrameError(f"scan {raw[:40]!r}: expected prefix {prefix!r}")
        text = text[len(prefix) :]
    if suffix:
        if not text.endswith(suffix):
            raise FrameError(f"scan {raw[:40]!r}: expected suffix {suffix!r}")
        text = text[: len(text) - len(suffix)]
    return text


def check_code(code: str, raw: bytes) -> str:
    """The code itself if it is a plausible barcode text; FrameError otherwise."""
    if not code or code.isspace():
        raise FrameError(f"scan {raw[:40]!r}: empty code")
    for ch in code:
        if not ch.isprintable() and ch not in DATA_CONTROLS:
            raise FrameError(f"scan {raw[:40]!r}: control character {ch!r} inside the code")
    return code


def parse_scan(frame: bytes, cfg: SerialScannerConfig) -> str:
    """Decode one serial scan (terminator removed or not): strip prefix/suffix, check the text; FrameError otherwise."""
    term = cfg.terminator.encode("ascii")
    data = frame[: -len(term)] if frame.endswith(term) else frame
    # A scanner set to CR LF on a bench configured for CR leaves the LF at the head of the next code.
    data = data.strip(b"\r\n")
    if len(data) > MAX_CODE_BYTES:
        raise FrameError(f"scan of {len(data)} bytes: longer than {MAX_CODE_BYTES} (lost terminator?)")
    try:
        text = data.decode(cfg.encoding)
    except UnicodeDecodeError:
        raise FrameError(f"scan {data[:40]!r}: not {cfg.encoding} text (check the scanner's encoding)") from None
    return check_code(strip_affixes(text, cfg.prefix, cfg.suffix, data), data)
