"""What a character's printed shape says where the recognition model cannot tell: the letter O or the digit 0.

PP-OCR reads a printed O inside a code as 0 with high probability, because codes in its training text
are mostly digits. The shapes differ in every common font: an O is a round capital about as wide as
it is tall, a 0 an oval as narrow as the other digits. So the glyph's width-to-height ratio, against
the other digits on the same line (same font, size, blur and perspective), settles the pair when the
line has such digits; otherwise the shape says nothing and the character stays ambiguous.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

SCALE_H = 64  # lines are measured at this height, so thresholds do not depend on the photo's size
REFERENCE_DIGITS = frozenset("23456789")
# Ratio of the glyph's aspect to the median aspect of the line's digits 2-9. Measured on the tuning split
# (40 slips x 3 tiers, 463 O/0 in codes; docs/records-bench.md, "Letter O or digit 0"): zeros cluster at
# 0.9-1.1 in every font, letters O at 1.3-1.5 in proportional fonts but near 1.0 in monospaced ones, and
# a glyph cut out wrongly (broken, or touching a neighbour) lands far outside both.
ZERO_BAND = (0.85, 1.12)
LETTER_BAND = (1.25, 2.0)
# The shape only settles a character the model already read that way with at least SHAPE_MIN_P: on the
# tuning split that settled 45 of the 136 O/0 the model was not sure of, none wrongly (the nearest wrong
# one had 0.992). Shape alone never overrules the model: in a monospaced font an O measures as a 0.
SHAPE_MIN_P = 0.999
SHAPE_AGREES = 0.99995  # normalize.SURE_O0: as sure as the model is when it is never wrong


def _components(crop: NDArray[Any]) -> tuple[NDArray[Any], float]:
    """Connected ink components of a text line (x, y, w, h, area per row) at SCALE_H, and the scale used."""
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    k = SCALE_H / max(1, gray.shape[0])
    gray = cv2.resize(gray, (max(1, round(gray.shape[1] * k)), SCALE_H), interpolation=cv2.INTER_CUBIC)
    _, ink = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    if np.count_nonzero(ink) > ink.size / 2:  # light text on a dark ground
        ink = cv2.bitwise_not(ink)
    _, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    return stats[1:], k


def _glyph_at(stats: NDArray[Any], x: float) -> tuple[int, int] | None:
    """(width, height) of the tallest component whose columns hold x, if any."""
    best: tuple[int, int] | None = None
    for cx, _cy, w, h, _area in stats:
        if cx <= x <= cx + w and (best is None or h > best[1]):
            best = (int(w), int(h))
    return best


def letter_or_zero(crop: NDArray[Any], text: str, char_x: tuple[float, ...]) -> dict[int, str]:
    """For each O or 0 in `text` whose shape is clear: its position -> "O" or "0".

    `crop` is the line as recognised (upright), `char_x` each character's centre as a share of its width.
    A position is left out when the line has no other digit to compare with, or when the glyph cannot be
    cut out cleanly (touching its neighbours, broken, or of another height than the digits)."""
    out: dict[int, str] = {}
    for i, ratio in aspect_ratios(crop, text, char_x).items():
        if ZERO_BAND[0] <= ratio < ZERO_BAND[1]:
            out[i] = "0"
        elif LETTER_BAND[0] < ratio <= LETTER_BAND[1]:
            out[i] = "O"
    return out


def aspect_ratios(crop: NDArray[Any], text: str, char_x: tuple[float, ...]) -> dict[int, float]:
    """For each O or 0 that can be measured: its aspect ratio over the median aspect of the line's digits 2-9."""
    targets = [i for i, c in enumerate(text) if c in "O0"]
    if not targets or len(char_x) != len(text):
        return {}
    stats, _ = _components(crop)
    width = crop.shape[1] * SCALE_H / max(1, crop.shape[0])
    refs = [
        g
        for i, c in enumerate(text)
        if c in REFERENCE_DIGITS and (g := _glyph_at(stats, char_x[i] * width)) is not None and g[1] >= SCALE_H * 0.25
    ]
    if not refs:
        return {}
    ref_h = float(np.median([h for _, h in refs]))
    ref_aspect = float(np.median([w / h for w, h in refs]))
    out = {}
    for i in targets:
        g = _glyph_at(stats, char_x[i] * width)
        if g is not None and 0.85 * ref_h <= g[1] <= 1.2 * ref_h:
            out[i] = g[0] / g[1] / ref_aspect
    return out
