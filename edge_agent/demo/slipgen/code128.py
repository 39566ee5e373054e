"""Barcodes for generated slips: an own Code 128 encoder (independent of the decoder under test), QR via zxing-cpp."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

# Bar/space widths of the 107 Code 128 symbols (ISO/IEC 15417 table 1); index = symbol value.
_C128 = tuple(
    (  # noqa: SIM905 - the table reads like the standard's, 15 symbols a row
        "212222 222122 222221 121223 121322 131222 122213 122312 132212 221213 221312 231212 112232 122132 122231 "
        "113222 123122 123221 223211 221132 221231 213212 223112 312131 311222 321122 321221 312212 322112 322211 "
        "212123 212321 232121 111323 131123 131321 112313 132113 132311 211313 231113 231311 112133 112331 132131 "
        "113123 113321 133121 313121 211331 231131 213113 213311 213131 311123 311321 331121 312113 312311 332111 "
        "314111 221411 431111 111224 111422 121124 121421 141122 141221 112214 112412 122114 122411 142112 142211 "
        "241211 221114 413111 241112 134111 111242 121142 121241 114212 124112 124211 411212 421112 421211 212141 "
        "214121 412121 111143 111341 131141 114113 114311 411113 411311 113141 114131 311141 411131 211412 211214 "
        "211232 2331112"
    ).split()
)
_START_B, _START_C, _CODE_B, _CODE_C = 104, 105, 100, 99


def code128_values(text: str) -> list[int]:
    """Symbol values (start, data, checksum, stop) for printable ASCII, using set C for digit runs."""
    if not text or any(not 32 <= ord(c) < 127 for c in text):
        raise ValueError(f"code128: expected printable ASCII, got {text!r}")
    values: list[int] = []
    i = 0
    current: str | None = None
    while i < len(text):
        run = 0
        while i + run < len(text) and text[i + run].isdigit():
            run += 1
        if (run >= 4 and run % 2 == 0) or run >= 5:
            if run % 2:  # odd run: one digit in set B first
                if current != "B":
                    values.append(_START_B if current is None else _CODE_B)
                    current = "B"
                values.append(ord(text[i]) - 32)
                i += 1
                run -= 1
            values.append(_START_C if current is None else _CODE_C)
            current = "C"
            values.extend(int(text[i + k : i + k + 2]) for k in range(0, run, 2))
            i += run
            continue
        if current != "B":
            values.append(_START_B if current is None else _CODE_B)
            current = "B"
        values.append(ord(text[i]) - 32)
        i += 1
    check = (values[0] + sum(k * v for k, v in enumerate(values[1:], start=1))) % 103
    return [*values, check, 106]


def render_code128(text: str, module_px: int, height_px: int) -> NDArray[Any]:
    """A Code 128 symbol with 10-module quiet zones, as a grayscale image (0 bars, 255 spaces)."""
    widths = [int(ch) for v in code128_values(text) for ch in _C128[v]]
    total = sum(widths) + 20
    img = np.full((height_px, total * module_px), 255, np.uint8)
    x = 10 * module_px
    for k, w in enumerate(widths):
        if k % 2 == 0:
            img[:, x : x + w * module_px] = 0
        x += w * module_px
    return img


def render_qr(text: str, module_px: int) -> NDArray[Any]:
    import zxingcpp

    bc = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode)
    img = np.asarray(bc.to_image(scale=module_px, add_quiet_zones=True))
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
