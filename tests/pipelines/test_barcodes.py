"""Barcodes from photos: real ZXing test photos, generated slips, and our own Code 128 encoder against zxing-cpp."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.demo.slipgen import code128_values, generate_slip, render_code128
from edge_agent.pipelines.bench.barcodes import read_barcodes

DATA = Path(__file__).parents[1] / "data" / "barcodes"
PHOTOS = [
    ("code128-2_17", "Code128"),
    ("code128-3_1", "Code128"),
    ("code39-3_01", "Code39"),
    ("ean13-2_04", "EAN13"),
    ("ean13-3_01", "EAN13"),
    ("qrcode-3_01", "QRCode"),
    ("qrcode-4_01", "QRCode"),
]


@pytest.mark.parametrize(("stem", "symbology"), PHOTOS)
def test_read_barcodes__zxing_photo(stem: str, symbology: str) -> None:
    img = cv2.imread(str(DATA / f"{stem}.png"))
    expected = (DATA / f"{stem}.txt").read_text(encoding="utf-8").rstrip("\n")
    found = read_barcodes(img)
    assert (expected, symbology) in [(b.text, b.symbology) for b in found]
    box = found[0].box
    assert box is not None
    assert 0 <= box[0] < img.shape[1]
    assert 0 <= box[1] < img.shape[0]


def test_read_barcodes__format_filter_excludes_other_symbologies() -> None:
    img = cv2.imread(str(DATA / "ean13-3_01.png"))
    assert read_barcodes(img, ["Code128"]) == ()


def test_read_barcodes__order_number_on_generated_slip() -> None:
    img, truth = generate_slip(7, "clean")
    codes = read_barcodes(img)
    assert ("Code128" in {b.symbology for b in codes}) and truth["order_no"] in {b.text for b in codes}


def test_read_barcodes__blank_and_noise_give_nothing() -> None:
    assert read_barcodes(np.full((200, 300, 3), 255, np.uint8)) == ()
    noise = np.random.default_rng(1).integers(0, 256, (240, 320), dtype=np.uint8)
    assert read_barcodes(noise) == ()


def test_read_barcodes__bad_input_and_format_named() -> None:
    with pytest.raises(ValueError, match="expected an 8-bit grey or BGR image"):
        read_barcodes(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"expected zxing-cpp format names.*Code129"):
        read_barcodes(np.full((64, 64), 255, np.uint8), ["Code129"])


def test_code128_values__checksum_by_hand() -> None:
    # "AB1": start B (104), A=33, B=34, 1=17; check = (104 + 1*33 + 2*34 + 3*17) % 103 = 256 % 103 = 50
    assert code128_values("AB1") == [104, 33, 34, 17, 50, 106]
    # "1234": start C, 12, 34; check = (105 + 12 + 2*34) % 103 = 82
    assert code128_values("1234") == [105, 12, 34, 82, 106]


def test_code128_values__refuses_non_ascii() -> None:
    with pytest.raises(ValueError, match="expected printable ASCII"):
        code128_values("订单")


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=24))
def test_render_code128__zxing_decodes_what_we_encode(text: str) -> None:
    img = render_code128(text, 2, 40)
    assert [b.text for b in read_barcodes(img, ["Code128"])] == [text]
