"""The glyph-width witness for O and 0, on lines drawn in fonts the slip generator never uses (DejaVu), and
through the real PP-OCR recogniser."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from edge_agent.pipelines.bench.glyphs import (
    O_WIDER_THAN_DIGITS,
    SWAP_BELOW,
    ZERO_AS_DIGITS,
    glyph_sizes,
    o_zero_ratios,
    o_zero_rings,
    settle_o_zero,
    sure_zeros,
    zeros_slashed,
)
from edge_agent.pipelines.bench.image_config import OcrConfig
from edge_agent.pipelines.bench.ocr_onnx import OnnxOcr

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


def _line(text: str, font_file: str, px: int = 32) -> tuple[np.ndarray, list[float]]:
    """A line of black text on white, and each character's x centre."""
    font = ImageFont.truetype(str(DEJAVU / font_file), px)
    pad = px // 2
    width = int(font.getlength(text)) + 2 * pad
    img = Image.new("RGB", (width, int(px * 1.5)), "white")
    ImageDraw.Draw(img).text((pad, px // 4), text, font=font, fill="black")
    centres = [pad + (font.getlength(text[:i]) + font.getlength(text[: i + 1])) / 2 for i in range(len(text))]
    return np.asarray(img)[:, :, ::-1].copy(), centres


def _ratios(text: str, font_file: str) -> dict[int, float]:
    crop, centres = _line(text, font_file)
    return o_zero_ratios(text, glyph_sizes(crop, text, centres))


def _settled(text: str, font_file: str, conf: float = 0.95) -> tuple[float, ...]:
    written, got = settle_o_zero(text, tuple(conf for _ in text), _ratios(text, font_file))
    assert written == text
    return got


@pytest.mark.parametrize("font_file", ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf"])
def test_settle_o_zero__a_proportional_font_tells_the_letter_from_the_digit(font_file: str) -> None:
    text = "PK4N-Z0LS-O27"
    o, z = text.index("O"), text.index("0")
    ratios = _ratios(text, font_file)
    assert ratios[o] >= O_WIDER_THAN_DIGITS > ZERO_AS_DIGITS >= ratios[z]
    got = _settled(text, font_file)
    assert got[o] == 1.0 and got[z] == 1.0
    assert [p for i, p in enumerate(got) if i not in (o, z)] == [0.95] * (len(text) - 2)


def test_settle_o_zero__a_monospaced_font_says_nothing() -> None:
    text = "PK4N-Z0LS-O27"
    assert _settled(text, "DejaVuSansMono.ttf") == tuple(0.95 for _ in text)


def test_settle_o_zero__a_0_is_settled_only_beside_a_wide_o_in_its_line() -> None:
    """A 0 as wide as the digits is a 0 only in a font seen to draw O wide, in the same line: a line
    without an O leaves its 0 as read, even where another line of the slip shows a wide O (a title may
    be set in another font)."""
    code, order = "HY039613", "ORD-2O48-5530"
    assert _settled(code, "DejaVuSans.ttf") == (0.95,) * len(code)
    got = _settled(order, "DejaVuSans.ttf")
    assert got[0] == 1.0 and got[order.index("O", 1)] == 1.0
    assert got[order.index("0")] == 1.0


def test_sure_zeros__a_dates_zeros_are_the_photos_zeros() -> None:
    """Where nothing but a zero can stand, in a date, the ring is a zero whatever the face: their median width
    and aspect are what this photo's zeros look like. A code's 0 (AB0C) is not one of them, nor a long
    number's, which may be set under its barcode in a face of its own."""
    date, code, number = "2025-03-07", "AB0C", "SKU5203103921"
    lines = [
        (date, {1: 0.9, 5: 0.92, 8: 0.88}, {1: 0.6, 5: 0.62, 8: 0.6}),
        (code, {2: 1.3}, {2: 0.9}),
        (number, {5: 0.7, 8: 0.7}, {5: 0.5, 8: 0.5}),
        ("2026年01月20日", {1: 0.94, 5: 0.94, 9: 0.94}, {1: 0.64, 5: 0.64, 9: 0.64}),
    ]
    assert sure_zeros(lines) == pytest.approx((0.93, 0.63))
    assert sure_zeros([(date, {1: 0.9}, {1: 0.6}), *lines[1:3]]) is None  # one is not enough to say


def test_settle_o_zero__a_ring_wider_and_rounder_than_the_photos_zeros_is_an_o() -> None:
    """In a face whose O is only a little wider than its digits (under O_WIDER_THAN_DIGITS; AR PL UKai,
    WenQuanYi Micro Hei), it is still wider and rounder than the same face's zeros: 1.12 as wide and 1.15 as round
    (O_WIDER_THAN_ZEROS, O_ROUNDER_THAN_ZEROS), an O.
    Wider alone (a zero a little blurred sideways) or without the photo's zeros, the ring says nothing."""
    text, i = "KD-8782-OLV", 8
    ratios, aspects, zeros = {i: 1.15}, {i: 0.8}, (0.92, 0.62)
    conf = tuple(0.99 for _ in text)  # under SURE_AS_READ for an O: a doubt
    written, got = settle_o_zero(text, conf, ratios, zeros=zeros, aspects=aspects)
    assert written == text and got[i] == 1.0
    misread = text[:i] + "0" + text[i + 1 :]
    written, got = settle_o_zero(misread, conf, ratios, zeros=zeros, aspects=aspects)
    assert written == text and got[i] == 0.5
    for kw in ({"zeros": zeros, "aspects": {i: 0.7}}, {"aspects": aspects}):
        assert settle_o_zero(misread, conf, ratios, **kw) == (misread, conf)


def test_glyph_sizes__an_o_or_0_is_one_ring() -> None:
    """Letters and digits have as many holes as drawn; an O broken by a stain has none and is not measured."""
    text = "AB80O42"
    crop, centres = _line(text, "DejaVuSans.ttf")
    sizes = glyph_sizes(crop, text, centres)
    assert [s[2] if s else None for s in sizes] == [1, 2, 2, 1, 1, 1, 0]
    assert not any(s[3] for s in sizes if s)  # no zero's mark: B and 8 have two holes one over the other
    o = text.index("O")
    crop[:, int(centres[o]) - 1 : int(centres[o]) + 2] = 255  # a white streak cuts the ring top to bottom
    broken = glyph_sizes(crop, text, centres)
    assert broken[o] is None or broken[o][2] == 0
    assert o not in o_zero_ratios(text, broken)


def test_settle_o_zero__a_wide_glyph_read_as_0_is_made_doubtful_and_written_as_o() -> None:
    """The recogniser read the O of ORD-2O48 as 0 with 0.95: its width says O, so it falls to 0.5, below any
    threshold that would pass it, and the code holds the O the width says (the reviewer sees the likelier
    value); a recogniser that hardly leaned the O way is not made sure either."""
    text = "ORD-2O48-5530"
    o = text.index("O", 1)
    crop, centres = _line(text, "DejaVuSans.ttf")
    ratios = o_zero_ratios(text, glyph_sizes(crop, text, centres))
    written, got = settle_o_zero("ORD-2048-5530", (0.95,) * len(text), ratios)
    assert written == text and got[o] == 0.5
    low = tuple(0.6 if i == 0 else 0.95 for i in range(len(text)))
    written, got = settle_o_zero(text, low, ratios)
    assert written == text and got[0] == 0.6 and got[o] == 1.0


def test_settle_o_zero__a_sure_read_or_a_word_keeps_its_reading_and_its_doubt() -> None:
    """The width's reading is written only where the recogniser was not sure (below SWAP_BELOW) and in a code:
    a zero read surely stays as read, and so does the 0 of a word ("0RD" alone, which the label rules read
    as evidence of the print); both are doubtful all the same."""
    text = "ORD-2O48-5530"
    o = text.index("O", 1)
    crop, centres = _line(text, "DejaVuSans.ttf")
    ratios = o_zero_ratios(text, glyph_sizes(crop, text, centres))
    sure = tuple(SWAP_BELOW if i == o else 0.95 for i in range(len(text)))
    written, got = settle_o_zero("ORD-2048-5530", sure, ratios)
    assert written == "ORD-2048-5530" and got[o] == 0.5
    written, got = settle_o_zero("0RD 2O48-5530", (0.95,) * len(text), ratios)
    assert written == "0RD 2O48-5530" and got[0] == 0.5
    # Joined to the code's digits by a separator, the letters are the code's own: ORD- is written.
    written, got = settle_o_zero("0RD-2O48-5530", (0.95,) * len(text), ratios)
    assert written == "ORD-2O48-5530" and got[0] == 0.5


def test_o_zero_ratios__without_digits_beside_it_nothing_is_measured() -> None:
    assert _ratios("ZOLS-KH", "DejaVuSans.ttf") == {}


def test_glyph_sizes__touching_glyphs_are_no_witness() -> None:
    """Two characters in one ink blob (a smudge joins them) give no width to either."""
    text = "A80O42"
    crop, centres = _line(text, "DejaVuSans.ttf")
    i = text.index("O")
    y = crop.shape[0] // 2
    crop[y - 2 : y + 2, int(centres[i - 1]) : int(centres[i]) + 1] = 0  # a bar from the 0 into the O
    sizes = glyph_sizes(crop, text, centres)
    assert sizes[i] is None and sizes[i - 1] is None
    assert i not in o_zero_ratios(text, sizes)


def test_onnx_recognize__the_real_recogniser_places_each_character_on_its_glyph() -> None:
    """Through PP-OCR itself, in a font the generator never uses. SKU0337-OB5: the model gives its 0 and O
    0.9996 and 0.9881, and their widths make both sure. ORD-20O8-5530: the model reads the second O as 0
    (0.9355); its width says O, so it comes back as O at 0.5, while the first O and the true 0s are made
    sure."""
    ocr = OnnxOcr(OcrConfig())
    sku, sku_crop = "SKU0337-OB5", _line("SKU0337-OB5", "DejaVuSans.ttf", px=40)[0]
    order_crop = _line("ORD-20O8-5530", "DejaVuSans.ttf", px=40)[0]
    (read_sku, _, sku_conf, _), (read_order, _, order_conf, _) = ocr.recognize([sku_crop, order_crop])
    assert read_sku == sku
    assert sku_conf[sku.index("O")] == 1.0 and sku_conf[sku.index("0")] == 1.0
    assert read_order == "ORD-20O8-5530"
    assert order_conf[6] == 0.5
    assert order_conf[0] == 1.0 and order_conf[5] == 1.0 and order_conf[12] == 1.0


def _rings(text: str, font_file: str, px: int = 32) -> dict[int, bool]:
    crop, centres = _line(text, font_file, px)
    return o_zero_rings(text, glyph_sizes(crop, text, centres))


@pytest.mark.parametrize("px", [20, 32, 48])
def test_glyph_sizes__a_dotted_zero_is_marked_and_its_o_is_a_plain_ring(px: int) -> None:
    """DejaVu Sans Mono puts a dot in its zero (the generator never prints in it): the zeros are marked,
    the O beside them is not; DejaVu Sans draws both plain."""
    text = "KO-2048-O0"
    assert _rings(text, "DejaVuSansMono.ttf", px) == {1: False, 4: True, 8: False, 9: True}
    assert _rings(text, "DejaVuSans.ttf", px) == {1: False, 4: False, 8: False, 9: False}


def test_glyph_sizes__a_slash_across_the_ring_marks_it_and_a_bar_or_a_speck_does_not() -> None:
    """A slash corner to corner cuts a ring's hole into two holes beside and above each other: a zero's
    mark. Blur that fills a ring's waist (a bar across it, as in a θ) leaves one hole over the other, and a
    speck of noise in the hole is too small for a dot: neither is a mark."""
    text = "AB70C5"
    crop, centres = _line(text, "DejaVuSans.ttf", px=48)
    i = text.index("0")
    ink = np.argwhere(crop[:, int(centres[i] - 12) : int(centres[i] + 12)].min(axis=2) < 128)
    y0, y1 = int(ink[:, 0].min()), int(ink[:, 0].max())
    x = int(centres[i])
    slashed = crop.copy()
    cv2.line(slashed, (x + 8, y0 + 3), (x - 8, y1 - 3), (0, 0, 0), 3)
    barred = crop.copy()
    barred[(y0 + y1) // 2 - 1 : (y0 + y1) // 2 + 2, x - 12 : x + 12] = 0
    barred[(y0 + y1) // 2 - 1 : (y0 + y1) // 2 + 2, x - 12 : x - 9] = 0
    specked = crop.copy()
    specked[(y0 + y1) // 2 : (y0 + y1) // 2 + 2, x : x + 2] = 0
    assert glyph_sizes(crop, text, centres)[i][2:] == (1, False)
    assert glyph_sizes(slashed, text, centres)[i][2:] == (2, True)
    assert glyph_sizes(barred, text, centres)[i][2:] == (2, False)
    assert glyph_sizes(specked, text, centres)[i][2:] == (1, False)


def test_glyph_sizes__a_qr_codes_finder_square_read_as_o_is_no_dotted_zero() -> None:
    """The recogniser reads a QR code's corner square (a ring of 7 modules round a block of 3) as an O; its
    block fills a third of the hole, three times a dotted zero's dot."""
    m = 6
    finder = np.full((13 * m, 11 * m, 3), 255, np.uint8)
    finder[3 * m : 10 * m, 2 * m : 9 * m] = 0
    finder[4 * m : 9 * m, 3 * m : 8 * m] = 255
    finder[5 * m : 8 * m, 4 * m : 7 * m] = 0
    assert glyph_sizes(finder, "O", [5.5 * m])[0] == (7 * m, 7 * m, 1, False)


def test_zeros_slashed__two_marked_zeros_and_most_of_them() -> None:
    """The evidence is the photo's own: two marked zeros or more, and at least SLASHED_SHARE of its zeros.
    One dotted zero, or a font that draws its zeros plain, says nothing."""
    date, sku = "2024-03-07", "UD-1237-OLV-XL"
    mono = [(date, _rings(date, "DejaVuSansMono.ttf")), ("UD-1237-0LV-XL", _rings(sku, "DejaVuSansMono.ttf"))]
    assert zeros_slashed(mono)
    assert not zeros_slashed([("2024-3-7", _rings("2024-3-7", "DejaVuSansMono.ttf")), mono[1]])
    assert not zeros_slashed([(t, _rings(t, "DejaVuSans.ttf")) for t in (date, sku)])
    # Three plain rings read as 0 against two marked ones: not the font's way of drawing its zeros.
    assert not zeros_slashed([("0000", {0: True, 1: True, 2: False, 3: False}), ("00", {0: False, 1: False})])


def test_settle_o_zero__where_zeros_are_marked_a_plain_ring_is_an_o() -> None:
    """The recogniser reads a monospaced O as 0, surely. Where the photo marks its zeros, a plain ring is
    written O however sure it was, and stays doubtful (0.5): the reviewer sees the likelier value. A marked
    ring read as 0, or a plain one read as O, is made sure."""
    read = "UD-1237-0LV-XL"
    o = read.index("0")
    rings = _rings("UD-1237-OLV-XL", "DejaVuSansMono.ttf")
    assert rings == {o: False}
    written, got = settle_o_zero(read, (0.99999,) * len(read), {}, rings, slashed=True)
    assert written == "UD-1237-OLV-XL" and got[o] == 0.5
    written, got = settle_o_zero("UD-1237-OLV-XL", (0.95,) * len(read), {}, rings, slashed=True)
    assert written == "UD-1237-OLV-XL" and got[o] == 1.0
    # Without the photo's evidence the ring says nothing.
    assert settle_o_zero(read, (0.99999,) * len(read), {}, rings) == (read, (0.99999,) * len(read))
    order = "2024-03-07"
    written, got = settle_o_zero(order, (0.95,) * len(order), {}, _rings(order, "DejaVuSansMono.ttf"), slashed=True)
    assert written == order and [got[i] for i in (1, 5, 8)] == [1.0, 1.0, 1.0]


def test_onnx_recognize__the_lines_read_together_settle_a_monospaced_o() -> None:
    """Through PP-OCR itself, in DejaVu Sans Mono: the model reads the O of OLV and of BOX as 0 (0.95,
    0.86). Read with a slip's order number and date, whose zeros carry the font's dot, they come back as O,
    doubtful; read alone, with no marked zero beside them, as the model read them."""
    ocr = OnnxOcr(OcrConfig())
    texts = ["4023118067450301", "2024-03-07", "UD-1237-OLV-XL", "BY-2765-BOX-42"]
    crops = [_line(t, "DejaVuSansMono.ttf", px=40)[0] for t in texts]
    (order, _, _, _), (date, _, date_conf, _), (sku, _, sku_conf, _), (box, _, box_conf, _) = ocr.recognize(crops)
    assert (order, date, sku, box) == tuple(texts)
    assert [date_conf[i] for i in (1, 5, 8)] == [1.0, 1.0, 1.0]
    assert sku_conf[8] == 0.5 and box_conf[9] == 0.5
    alone = [ocr.recognize([c])[0][0] for c in crops[2:]]
    assert alone == ["UD-1237-0LV-XL", "BY-2765-B0X-42"]
