"""The ink of each recognised character in its line crop: a second witness for O and 0.

The recogniser reads a printed O as 0 with full confidence in some fonts (calibrate_confusables.py). In
most fonts the letter O is much wider than the digits, while 0 is as wide as the other digits, so the
glyph's own width beside the line's digits settles which one was printed. Where the two are alike (a
monospaced font, some brush fonts) the widths do not tell, and the witness says nothing.

An O (a ring: one hole) at least O_WIDER_THAN_DIGITS as wide as its line's digits is an O. A 0 as wide
as the digits is a 0 only where the same line shows an O that wide: the same font then draws the two
apart. Not the same label: a slip may print its title in another font than its codes. The line's capitals
were tried as that evidence and refused: in a monospaced font they measured up to 1.47 digits wide on the
tuning split, where O and 0 are alike.

Where the width says the other reading, the character is doubtful (at most 0.5) and, when the recogniser
was not sure of its own (below SWAP_BELOW) and the character stands in a code (its run of letters and
digits holds another digit), it is written as the width says: the slip still goes to review, with the
likelier value in front of the reviewer. A word's letter is left as read, for the label rules
(locate.o_read_as_zero reads "0rder" as evidence of the print).

Each character's place in the crop comes from the CTC time step it was read at (the recogniser's output
has one step per 8 input columns); its glyph is the connected ink component under that place, when that
component holds this character alone.
"""

from __future__ import annotations

from statistics import median
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

REC_STRIDE = 8  # input columns per CTC time step
DIGIT_REFS = "23456789"  # digits of one width in nearly every font (1 is narrow, 0 is the one judged)
# benchmarks/calibrate_confusables.py --glyphs, tuning seeds 0-149, three tiers, 1,169 reads of an O or 0
# in code lines (a line read again counts again), 11 fonts: a printed O is 1.20-1.56 digits wide in the five
# fonts that draw it wide, 1.00-1.20 in the six that do not; a printed 0 is 0.85-1.17, and at most 1.44
# (WenQuanYi Zen Hei, where 3 right zeros are made doubtful). 84 reads made sure, none wrong; 15 misread O
# made doubtful.
O_WIDER_THAN_DIGITS = 1.3
ZERO_AS_DIGITS = 1.12
MIN_REFS = 2
WITNESS_FLOOR = 0.9  # the recogniser must lean this far to the reading the width confirms
# The same calibration: the 15 O read as 0 that the width says are O were read at 0.53-0.998; the three
# Zen Hei zeros measured as wide as an O (1.38-1.44) at 0.9994-1.0. Below this the width's reading is written.
SWAP_BELOW = 0.999


def char_centres(steps: list[int], crop_width: int, input_width: int) -> list[float]:
    """The x of each character in the crop, from the CTC step it was read at and the recogniser's input
    width for this crop."""
    scale = crop_width / max(input_width, 1)
    return [(s * REC_STRIDE + REC_STRIDE / 2) * scale for s in steps]


def glyph_sizes(crop: NDArray[Any], text: str, centres: list[float]) -> list[tuple[int, int, int] | None]:
    """(width, height, holes) of each character's own ink component, or None where it is not one whole
    glyph of the line's height (broken, touching its neighbour, or a mark). An O or a 0 is a ring: one
    hole; a ring broken by a stain or glare has none and is no witness."""
    out: list[tuple[int, int, int] | None] = [None] * len(text)
    if len(centres) != len(text) or not text:
        return out
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    _, ink = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    if np.count_nonzero(ink) * 2 > ink.size:
        ink = 255 - ink  # light text on a dark ground
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    boxes = [(k, *(int(v) for v in stats[k][:4])) for k in range(1, n)]
    tall = [b for b in boxes if b[4] >= 0.35 * crop.shape[0]]
    if not tall:
        return out
    line_h = median(b[4] for b in tall)
    glyphs = [b for b in tall if 0.7 * line_h <= b[4] <= 1.3 * line_h]
    for i, x in enumerate(centres):
        if text[i].isspace():
            continue
        hits = [b for b in glyphs if b[1] - 1 <= x <= b[1] + b[3] + 1]
        if len(hits) != 1:
            continue
        k, x0, y0, w, h = hits[0]
        inside = [j for j, xx in enumerate(centres) if x0 - 1 <= xx <= x0 + w + 1 and not text[j].isspace()]
        if inside == [i]:
            out[i] = (w, h, _holes(labels[y0 : y0 + h, x0 : x0 + w] == k))
    return out


def _holes(mask: NDArray[Any]) -> int:
    """Paper regions inside one glyph's mask (not reaching its box's edge)."""
    paper = np.pad(~mask, 1, constant_values=True).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(paper, connectivity=4)
    return sum(
        1
        for k in range(1, n)
        if stats[k][0] > 0
        and stats[k][1] > 0
        and stats[k][0] + stats[k][2] < paper.shape[1]
        and stats[k][1] + stats[k][3] < paper.shape[0]
    )


def o_zero_ratios(text: str, sizes: list[tuple[int, int, int] | None]) -> dict[int, float]:
    """Each O or 0 measured as one ring: its width over the median width of the line's other digits
    (2-9), by position; left out where the glyph or the digits could not be measured."""
    out: dict[int, float] = {}
    for i, (ch, size) in enumerate(zip(text, sizes, strict=True)):
        if ch not in "O0" or size is None or size[2] != 1:
            continue
        digits = [s[0] for j, (c, s) in enumerate(zip(text, sizes, strict=True)) if c in DIGIT_REFS and s and j != i]
        if len(digits) >= MIN_REFS:
            out[i] = size[0] / median(digits)
    return out


def line_ratios(
    crop: NDArray[Any], text: str, char_conf: tuple[float, ...], steps: tuple[int, ...], input_width: int
) -> dict[int, float]:
    """o_zero_ratios of one recognised line, from its crop and the CTC steps its characters were read at."""
    if not char_conf or len(char_conf) != len(text) or len(steps) != len(text) or not any(c in "O0" for c in text):
        return {}
    return o_zero_ratios(text, glyph_sizes(crop, text, char_centres(list(steps), crop.shape[1], input_width)))


def settle_o_zero(text: str, conf: tuple[float, ...], ratios: dict[int, float]) -> tuple[str, tuple[float, ...]]:
    """One line's text and character probabilities with its O and 0 the widths settle: 1.0 where the width
    says what the recogniser read (and it leaned that way), at most 0.5 where it says the other, and then
    the width's reading written in a code the recogniser was not sure of. A 0 as wide as the digits is
    settled only beside an O drawn wide in the same line: the same font draws the two apart."""
    wide_o = any(text[i] == "O" and conf[i] >= WITNESS_FLOOR and r >= O_WIDER_THAN_DIGITS for i, r in ratios.items())
    chars, out = list(text), list(conf)
    for i, r in ratios.items():
        printed = "O" if r >= O_WIDER_THAN_DIGITS else "0" if wide_o and r <= ZERO_AS_DIGITS else None
        if printed is None:
            continue
        if printed != text[i]:
            if conf[i] < SWAP_BELOW and _in_code(text, i):
                chars[i] = printed
            out[i] = min(out[i], 0.5)
        elif out[i] >= WITNESS_FLOOR:
            out[i] = 1.0
    return "".join(chars), tuple(out)


def _in_code(text: str, i: int) -> bool:
    """Does the run of letters and digits around position i hold a digit besides it (a code, not a word)?"""
    lo, hi = i, i + 1
    while lo > 0 and text[lo - 1].isascii() and text[lo - 1].isalnum():
        lo -= 1
    while hi < len(text) and text[hi].isascii() and text[hi].isalnum():
        hi += 1
    return any(c.isdigit() for j, c in enumerate(text[lo:hi], lo) if j != i)
