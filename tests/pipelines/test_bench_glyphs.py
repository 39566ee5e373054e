"""The letter O or the digit 0 told by its printed shape, and glare that hides part of a value."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from edge_agent.demo.slipgen import generate_slip
from edge_agent.pipelines.bench.config import BenchConfig
from edge_agent.pipelines.bench.glyphs import SHAPE_AGREES, aspect_ratios, letter_or_zero
from edge_agent.pipelines.bench.inspect import Inspector
from edge_agent.pipelines.bench.ocr_onnx import Recognised, ctc_decode_chars, settle_letter_or_zero
from edge_agent.pipelines.bench.quality import assess

NOTO_SANS = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 2)
LXGW_MONO = ("/usr/share/fonts/truetype/lxgw-wenkai/LXGWWenKaiMono-Regular.ttf", 0)


def _line(text: str, font: tuple[str, int], size: int = 40) -> tuple[NDArray[np.uint8], tuple[float, ...]]:
    """A printed line (BGR) and each character's centre as a share of its width, as the recogniser gives them."""
    f = ImageFont.truetype(font[0], size, index=font[1])
    width = int(f.getlength(text)) + 20
    img = Image.new("RGB", (width, size + 16), (236, 230, 214))
    ImageDraw.Draw(img).text((10, 4), text, font=f, fill=(30, 30, 30))
    centres = tuple((10 + (f.getlength(text[:i]) + f.getlength(text[: i + 1])) / 2) / width for i in range(len(text)))
    return np.asarray(img)[:, :, ::-1].copy(), centres


def test_letter_or_zero__a_round_letter_and_an_oval_digit_in_a_proportional_font() -> None:
    crop, xs = _line("K0O2345", NOTO_SANS)
    assert letter_or_zero(crop, "K0O2345", xs) == {1: "0", 2: "O"}
    # what is read does not change what is measured: the shape of each glyph decides
    assert letter_or_zero(crop, "KO02345", xs) == {1: "0", 2: "O"}


def test_letter_or_zero__no_other_digit_on_the_line_says_nothing() -> None:
    crop, xs = _line("KOOL-MX", NOTO_SANS)
    assert letter_or_zero(crop, "KOOL-MX", xs) == {}


def test_settle_letter_or_zero__shape_confirms_a_reading_never_overrules_one() -> None:
    crop, xs = _line("K0O2345", NOTO_SANS)
    conf = (0.99, 0.9995, 0.9995, 0.99, 0.99, 0.99, 0.99)
    settled = settle_letter_or_zero(crop, Recognised("K0O2345", 0.99, conf, xs))
    assert settled[1] == settled[2] == SHAPE_AGREES and settled[0] == 0.99
    # the model read them the other way round: the shape disagrees and the doubt stays
    assert settle_letter_or_zero(crop, Recognised("KO02345", 0.99, conf, xs)) == conf
    # a reading the model was not sure enough of stays unsure, whatever the shape
    unsure = (0.99, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99)
    assert settle_letter_or_zero(crop, Recognised("K0O2345", 0.99, unsure, xs)) == unsure


def test_aspect_ratios__a_monospaced_letter_o_measures_like_a_zero() -> None:
    """Why the shape only confirms the model: in a monospaced font O is as narrow as 0."""
    crop, xs = _line("K0O2345", LXGW_MONO)
    ratios = aspect_ratios(crop, "K0O2345", xs)
    assert ratios[2] < 1.25  # the letter is not clearly wider than the digits


def test_ctc_decode_chars__centres_are_the_middle_of_each_symbols_frames() -> None:
    charset = ["", "A", "0"]
    seq = [0, 1, 1, 0, 0, 2, 0, 0]  # A over frames 1-2, 0 over frame 5
    probs = np.full((1, len(seq), 3), 0.01, np.float32)
    for t, k in enumerate(seq):
        probs[0, t, k] = 0.98
    (r,) = ctc_decode_chars(probs, charset, widths=[64])
    assert r.text == "A0"
    assert r.char_x == pytest.approx(((1 + 3) / 2 * 8 / 64, (5 + 6) / 2 * 8 / 64))


def test_inspector__glare_hiding_the_start_of_a_value_sends_it_to_review() -> None:
    """Seed 24 (typical): a glare spot covers the start of customer id C5366281069; the rest reads 1069,
    which fits the pattern and used to pass."""
    ins = Inspector(BenchConfig())
    img, t = generate_slip(24, "typical", style="diverse")
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    ins.today = lambda: day
    res = ins.inspect(img)
    assert res.needs_review
    assert any(i.code == "glare_on_value" and i.field == "customer_id" for i in res.review_reasons)
    assert "customer_id" in {r.field for r in res.retakes}


def test_glare_spots__white_paper_is_not_glare() -> None:
    """A slip printed on white paper, photographed bright, is mostly at the glare level: no spots."""
    cfg = BenchConfig().quality
    white = [s for s in range(30) if assess(generate_slip(s, "clean", style="diverse")[0], cfg)[0].glare_frac > 0.5]
    assert white
    for s in white[:3]:
        q, _ = assess(generate_slip(s, "clean", style="diverse")[0], cfg)
        assert q.glare_spots is None
    spotted, _ = assess(generate_slip(24, "typical", style="diverse")[0], cfg)
    assert spotted.glare_spots is not None
