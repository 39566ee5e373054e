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

**The photo's own zeros are a witness too.** A date's zeros can be nothing else (sure_zeros); a ring both
wider and rounder than them is an O, in the faces whose O is too narrow for the width beside the digits to say
(AR PL UKai reads KD-8782-OLV as 0LV at 0.99).

Where the width says the other reading, the character is doubtful (at most 0.5) and, when the recogniser
was not sure of its own (below SWAP_BELOW) and the character stands in a code (its run of letters and
digits, and the separators between them, holds another digit), it is written as the width says: the slip
still goes to review, with the likelier value in front of the reviewer. A word's letter is left as read,
for the label rules (locate.o_read_as_zero reads "0rder" as evidence of the print).

**A marked zero is a third witness.** Some fonts cross their zero with a slash or put a dot in it (LXGW
WenKai Mono, WenQuanYi Zen Hei Mono, DejaVu Sans Mono, the receipt fonts of many thermal printers): its
glyph is a ring with two holes, or a mark in its one, where an O has a plain hole. Among the lines read
together (one photo's read), when most zeros measured are marked (SLASHED_MIN or more, SLASHED_SHARE of
them), the font marks its zeros: a plain ring under an O or 0 is an O, a marked one a 0. The recogniser
reads such a font's O as 0 at 0.9999 (it is monospaced: both are one cell wide), so the ring's reading is
written whatever the recogniser's probability, in a code; where the two disagree the character stays
doubtful and the slip goes to review with the ring's reading in front of the reviewer.

Each character's place in the crop comes from the CTC time step it was read at (the recogniser's output
has one step per 8 input columns); its glyph is the connected ink component under that place, when that
component holds this character alone.
"""

from __future__ import annotations

import re
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
# 600 tuning photos (seeds 0-49 and 450-499 in the generator's faces, 300-399 in unseen faces, three tiers):
# 76 photos marked their zeros by this rule, all in the faces that do (LXGW WenKai Mono, Zen Hei Mono), and
# every O and 0 of a code measured as a ring there (256) was an O when plain and a 0 when marked. The photos
# in other faces show a mark now and then (a 0 crossed by a stain, a speck in a ring), on none of them enough
# for this rule. The misread O count as plain zeros (they are read 0), hence a share of two thirds.
SLASHED_MIN = 2
MARK_IN_HOLE = 0.08  # DejaVu Sans Mono's dot fills about a tenth of its zero's hole
MARK_AT_MOST = 0.25
MARK_TALL = 0.15
MARK_MIDDLE = 0.4
MARK_HALVES = 0.3
MARK_OFFSET = 0.12
SLASHED_SHARE = 2 / 3
# A ring beside the photo's own zeros (sure_zeros: a date's). In the faces whose O is under
# O_WIDER_THAN_DIGITS (AR PL UKai, WenQuanYi Micro Hei: 1.04-1.20 digits) it is still wider and rounder than
# the same face's zeros. Ring measures of tuning seeds 0-49 and 500-549 in the generator's
# faces and 300-349 and 400-449 in unseen faces (three tiers, every line read): beside their photo's sure
# zeros, no printed 0 was both 1.12 as wide and 1.15 as round (widest 1.16, roundest 1.23, not the same
# ring), and 51 printed O were, 8 of them read as 0. On tuning seeds 600-649 and 500-549 unseen it
# wrote one misread O right (clean 631, 0LDGL-KZG6W-2E70, still in review) and changed nothing else.
SURE_ZEROS_MIN = 2
O_WIDER_THAN_ZEROS = 1.12
O_ROUNDER_THAN_ZEROS = 1.15


# A glyph as measured: width, height, holes, and whether it is a ring with a zero's mark (slash or dot).
Glyph = tuple[int, int, int, bool]


def char_centres(steps: list[int], crop_width: int, input_width: int) -> list[float]:
    """The x of each character in the crop, from the CTC step it was read at and the recogniser's input
    width for this crop."""
    scale = crop_width / max(input_width, 1)
    return [(s * REC_STRIDE + REC_STRIDE / 2) * scale for s in steps]


def glyph_sizes(crop: NDArray[Any], text: str, centres: list[float]) -> list[Glyph | None]:
    """(width, height, holes, marked) of each character's own ink component, or None where it is not one
    whole glyph of the line's height (broken, touching its neighbour, or a mark). An O or a 0 is a ring: one
    hole, or two where a slash crosses a zero; a ring broken by a stain or glare has none and is no
    witness. Marked: a ring with a zero's slash or dot (_holes), looked for under an O or 0 only."""
    out: list[Glyph | None] = [None] * len(text)
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
            glyph, ring_ink = labels[y0 : y0 + h, x0 : x0 + w] == k, ink[y0 : y0 + h, x0 : x0 + w] > 0
            out[i] = (w, h, *_holes(glyph, ring_ink if text[i] in "O0" else None))
    return out


def _holes(mask: NDArray[Any], ink: NDArray[Any] | None) -> tuple[int, bool]:
    """Paper regions inside one glyph's mask (not reaching its box's edge), and whether they are a ring's
    with a zero's mark: a slash across it (_slashed) or a dot or slash of its own in it (_dotted). The mark
    is looked for only with the ink around the glyph, given for a character read as O or 0."""
    paper = np.pad(~mask, 1, constant_values=True).astype(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(paper, connectivity=4)
    inside = [
        k
        for k in range(1, n)
        if stats[k][0] > 0
        and stats[k][1] > 0
        and stats[k][0] + stats[k][2] < paper.shape[1]
        and stats[k][1] + stats[k][3] < paper.shape[0]
    ]
    marked = ink is not None and (
        (len(inside) == 2 and _slashed(stats[inside], centroids[inside], mask.shape))
        or (len(inside) == 1 and _dotted(labels == inside[0], np.pad(ink & ~mask, 1, constant_values=False)))
    )
    return len(inside), marked


def _slashed(stats: NDArray[Any], centroids: NDArray[Any], shape: tuple[int, ...]) -> bool:
    """Two holes of a ring cut by a slash: of like size (the smaller MARK_HALVES of the larger or more), one
    above and beside the other (a slash runs corner to corner; blur that fills a ring's waist, as in a θ,
    leaves one hole over the other)."""
    small, large = sorted(int(a) for a in stats[:, cv2.CC_STAT_AREA])
    dx, dy = np.abs(centroids[0] - centroids[1])
    return small >= MARK_HALVES * large and dx >= MARK_OFFSET * shape[1] and dy >= MARK_OFFSET * shape[0]


def _dotted(hole: NDArray[Any], ink: NDArray[Any]) -> bool:
    """A ring's hole with a mark of its own in its middle, not joined to the ring (a dotted zero, or a slash
    that does not touch it): ink over MARK_IN_HOLE of the hole's area, at least MARK_TALL of its height, its
    centre in the middle MARK_MIDDLE of the hole both ways (a speck of noise is smaller, or off centre), and
    not over MARK_AT_MOST of it (a QR code's finder square, read as an O, holds a block a third of its hole)."""
    area = int(np.count_nonzero(hole))
    mark = np.argwhere(hole & ink)
    if not area or not MARK_IN_HOLE * area <= len(mark) <= MARK_AT_MOST * area:
        return False
    spot = np.argwhere(hole)
    lo, hi = spot.min(axis=0), spot.max(axis=0) + 1
    size = hi - lo
    centre = (mark.mean(axis=0) - lo) / size
    tall = mark[:, 0].max() - mark[:, 0].min() + 1
    return bool(tall >= MARK_TALL * size[0] and np.all(np.abs(centre - 0.5) <= MARK_MIDDLE / 2))


def o_zero_ratios(text: str, sizes: list[Glyph | None]) -> dict[int, float]:
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


def o_zero_rings(text: str, sizes: list[Glyph | None]) -> dict[int, bool]:
    """Each O or 0 measured as one whole ring, by position: marked (a zero's slash or dot) or plain; left
    out when it is neither (broken, or holes a ring does not have)."""
    return {
        i: s[3] for i, (ch, s) in enumerate(zip(text, sizes, strict=True)) if ch in "O0" and s and (s[3] or s[2] == 1)
    }


def o_zero_aspects(text: str, sizes: list[Glyph | None]) -> dict[int, float]:
    """Each O or 0 measured as one ring: its width over its height, by position."""
    return {i: s[0] / s[1] for i, (ch, s) in enumerate(zip(text, sizes, strict=True)) if ch in "O0" and s and s[2] == 1}


def line_glyphs(
    crop: NDArray[Any], text: str, char_conf: tuple[float, ...], steps: tuple[int, ...], input_width: int
) -> tuple[dict[int, float], dict[int, bool], dict[int, float]]:
    """o_zero_ratios, o_zero_rings and o_zero_aspects of one recognised line, from its crop and the CTC steps
    its characters were read at."""
    if not char_conf or len(char_conf) != len(text) or len(steps) != len(text) or not any(c in "O0" for c in text):
        return {}, {}, {}
    sizes = glyph_sizes(crop, text, char_centres(list(steps), crop.shape[1], input_width))
    return o_zero_ratios(text, sizes), o_zero_rings(text, sizes), o_zero_aspects(text, sizes)


# A date's zeros (2025-03-07, 2025年03月07日) are zeros whatever the face, and a date is printed in the face of
# the slip's other values. A long number's inner zeros are zeros too, but the digits under a barcode are often
# set in a face of their own (OCR-B), whose zeros are not the codes'.
_DATE = re.compile(r"(?:19|20)\d\d[-/.年]\d{1,2}[-/.月]\d{1,2}")


def sure_zeros(lines: list[tuple[str, dict[int, float], dict[int, float]]]) -> tuple[float, float] | None:
    """The median width (over the line's digits, o_zero_ratios) and aspect (o_zero_aspects) of the zeros the
    lines read together print in dates, where nothing but a zero can stand. None with fewer than
    SURE_ZEROS_MIN of them measured."""
    widths, aspects = [], []
    for text, ratios, shapes in lines:
        spans = [m.span() for m in _DATE.finditer(text)]
        for i, r in ratios.items():
            if text[i] == "0" and i in shapes and any(a <= i < b for a, b in spans):
                widths.append(r)
                aspects.append(shapes[i])
    return (median(widths), median(aspects)) if len(widths) >= SURE_ZEROS_MIN else None


def zeros_slashed(lines: list[tuple[str, dict[int, bool]]]) -> bool:
    """Do the lines read together mark their zeros: SLASHED_MIN or more marked rings under an O or 0, and
    at least SLASHED_SHARE of the rings read as 0 (the misread O are plain rings read as 0 too)?"""
    marked = sum(1 for _, rings in lines for m in rings.values() if m)
    plain_zeros = sum(1 for text, rings in lines for i, m in rings.items() if not m and text[i] == "0")
    return marked >= SLASHED_MIN and marked >= SLASHED_SHARE * (marked + plain_zeros)


def settle_o_zero(
    text: str,
    conf: tuple[float, ...],
    ratios: dict[int, float],
    rings: dict[int, bool] | None = None,
    *,
    slashed: bool = False,
    zeros: tuple[float, float] | None = None,
    aspects: dict[int, float] | None = None,
) -> tuple[str, tuple[float, ...]]:
    """One line's text and character probabilities with its O and 0 the glyphs settle: 1.0 where the glyph
    says what the recogniser read (and it leaned that way), at most 0.5 where it says the other, and then
    the glyph's reading written in a code. By width: a 0 as wide as the digits is settled only beside an O
    drawn wide in the same line (the same font draws the two apart), and the width's reading is written
    only where the recogniser was not sure of its own. By the slash (when the lines read together slash
    their zeros, zeros_slashed): a plain ring is an O and a slashed one a 0, written in any case."""
    judged = {i: ("0" if marked else "O") for i, marked in (rings or {}).items()} if slashed else {}
    forced = set(judged)
    wide_o = any(text[i] == "O" and conf[i] >= WITNESS_FLOOR and r >= O_WIDER_THAN_DIGITS for i, r in ratios.items())
    for i, r in ratios.items():
        printed = "O" if r >= O_WIDER_THAN_DIGITS or _rounder_than_zeros(r, (aspects or {}).get(i), zeros) else None
        printed = printed or ("0" if wide_o and r <= ZERO_AS_DIGITS else None)
        if printed is not None and i not in judged:
            judged[i] = printed
    chars, out = list(text), list(conf)
    for i, printed in judged.items():
        if printed != text[i]:
            if (i in forced or conf[i] < SWAP_BELOW) and _in_code(text, i):
                chars[i] = printed
            out[i] = min(out[i], 0.5)
        elif out[i] >= WITNESS_FLOOR:
            out[i] = 1.0
    return "".join(chars), tuple(out)


def _rounder_than_zeros(ratio: float, aspect: float | None, zeros: tuple[float, float] | None) -> bool:
    """Is a ring wider (O_WIDER_THAN_ZEROS) and rounder (O_ROUNDER_THAN_ZEROS) than the photo's sure zeros
    (sure_zeros)?"""
    if zeros is None or aspect is None:
        return False
    return ratio >= O_WIDER_THAN_ZEROS * zeros[0] and aspect >= O_ROUNDER_THAN_ZEROS * zeros[1]


def _in_code(text: str, i: int) -> bool:
    """Does the code token around position i (letters and digits, and - _ / . between them) hold a digit
    besides it? A code's segment of letters (the OLV of UD-1237-OLV-XL) is the code's; a word (0rder) is not."""
    lo, hi = i, i + 1
    while lo > 0 and _code_char(text[lo - 1]):
        lo -= 1
    while hi < len(text) and _code_char(text[hi]):
        hi += 1
    return any(c.isdigit() for j, c in enumerate(text[lo:hi], lo) if j != i)


def _code_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "-_/.")
