"""The image reader end to end with the real PP-OCR ONNX models and real Tesseract on generated slips."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.demo.slipgen import field_truth, generate_slip
from edge_agent.pipelines.bench.config import BenchConfig
from edge_agent.pipelines.bench.image_config import OcrConfig
from edge_agent.pipelines.bench.ocr_onnx import (
    ModelError,
    OnnxOcr,
    crop_box,
    ctc_decode,
    ctc_decode_steps,
    cut_at_rules,
    default_manifest_path,
    erase_rules,
    load_manifest,
    warp_box,
)
from edge_agent.pipelines.bench.ocr_tesseract import join_words
from edge_agent.pipelines.bench.reader import ImageReader, load_image
from edge_agent.settings import parse_config

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from edge_agent.pipelines.bench.inspect import Inspector, ReadFields


@pytest.fixture(scope="module")
def reader() -> ImageReader:
    return ImageReader(BenchConfig())


def _compact(s: str) -> str:
    return s.replace(" ", "").replace("：", ":")


def test_image_reader__reads_the_fields_of_a_clean_slip(reader: ImageReader, tmp_path: Path) -> None:
    img, truth = generate_slip(21, "clean")
    out = reader.read(img, debug_dir=tmp_path)
    assert out.quality.ok
    assert out.engine == "onnx"
    text = "\n".join(_compact(ln.text) for ln in out.lines)
    for key in ("order_no", "sku", "customer_id", "return_date_text"):
        assert _compact(truth[key]) in text, (key, truth[key], text)
    assert truth["order_no"] in {b.text for b in out.barcodes}
    assert {"quality", "preprocess", "barcodes", "det", "cls", "rec", "total"} <= set(out.timing_ms)
    assert all(0 <= ln.confidence <= 1 for ln in out.lines)
    order_line = next(ln for ln in out.lines if truth["order_no"] in _compact(ln.text))
    assert order_line.confidence > 0.9
    _, _, w, h = order_line.box
    assert w > 5 * h > 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written[0] == "00_input.jpg"
    assert any(n.endswith("_crop.png") for n in written)
    assert written[-1].endswith("_lines.png")


def test_image_reader__upside_down_label_is_turned(reader: ImageReader) -> None:
    img, truth = generate_slip(22, "clean")
    out = reader.read(np.ascontiguousarray(img[::-1, ::-1]))
    text = "\n".join(_compact(ln.text) for ln in out.lines)
    assert _compact(truth["sku"]) in text
    assert _compact(truth["customer_id"]) in text


@pytest.mark.parametrize(
    ("turn", "turns", "to_turned"),
    [
        # the photo turned, the quarter turns (numpy.rot90's k) the label then needs, and where a point of
        # the upright photo (1600 x 1200) lands on the turned one
        (cv2.ROTATE_90_CLOCKWISE, 1, lambda x, y: (1199 - y, x)),
        (cv2.ROTATE_180, 2, lambda x, y: (1599 - x, 1199 - y)),
        (cv2.ROTATE_90_COUNTERCLOCKWISE, 3, lambda x, y: (y, 1599 - x)),
    ],
)
def test_inspector__a_slip_laid_sideways_or_upside_down_is_read_as_upright(
    turn: int, turns: int, to_turned: Callable[[float, float], tuple[float, float]]
) -> None:
    """Diverse seed 501 (clean, tuning split), a header table: laid on the bench sideways its boxes stood on
    end and 3 of its 6 fields were read, upside down its values came out left of their labels (3 of 6). The
    label is now turned upright before it is read, and what was read is still placed right on the photo."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.inspect import Inspector

    img, truth = generate_slip(501, "clean", style="diverse")
    t = field_truth(truth)
    ins = Inspector(BenchConfig())
    ins.today = lambda: date.fromisoformat(t["return_date"]) + timedelta(days=1)
    upright = ins.inspect(img)
    res = ins.inspect(np.ascontiguousarray(cv2.rotate(img, turn)))
    assert {k: str(v) for k, v in res.fields.items()} == {k: str(v) for k, v in t.items()}
    assert not res.needs_review and not upright.needs_review, res.review_reasons
    assert ins.reader.read(np.ascontiguousarray(cv2.rotate(img, turn))).turns == turns
    assert ins.reader.read(img).turns == 0
    # the boxes of values read from the text, mapped back to the photo, are where the turned photo shows them
    # (the order number came from its barcode, whose box zxing gives on the photo itself)
    assert res.sources["sku"] == res.sources["customer_id"] == "ocr"
    for name in ("sku", "customer_id"):
        x0, y0 = np.mean(np.asarray(upright.field_boxes[name]), axis=0)
        x1, y1 = np.mean(np.asarray(res.field_boxes[name]), axis=0)
        assert np.hypot(*(np.subtract((x1, y1), to_turned(x0, y0)))) < 15, name


def test_image_reader__blurred_photo_is_read_and_its_measures_kept_as_hints(reader: ImageReader) -> None:
    img, _ = generate_slip(4, "typical", defect="blur")
    out = reader.read(img)
    assert not out.quality.ok and out.quality.reasons[0].startswith("blurry")
    assert out.quality.blank is None
    assert out.lines  # read first, judge after
    assert "det" in out.timing_ms


@pytest.mark.parametrize(
    ("photo", "why"),
    [
        (np.full((1200, 1600, 3), 3, np.uint8), "the photo is black"),
        (np.full((1200, 1600, 3), 128, np.uint8), "nothing on the photo"),
    ],
)
def test_image_reader__photo_with_nothing_on_it_is_refused_at_once(
    reader: ImageReader, photo: np.ndarray, why: str
) -> None:
    noisy = np.clip(photo.astype(np.int16) + np.random.default_rng(0).integers(-2, 3, photo.shape), 0, 255)
    out = reader.read(noisy.astype(np.uint8))
    assert out.quality.blank is not None and out.quality.blank.startswith(why)
    assert out.lines == () and "det" not in out.timing_ms


def test_image_reader__a_dark_photo_with_a_slip_on_it_is_read_not_refused(reader: ImageReader) -> None:
    """Diverse seed 445 (typical): the photo averages 6 of 255, under the black level, but a slip's
    outline shows in it and its lower lines are readable. Dark is a hint, not "nothing on the photo"."""
    img, _ = generate_slip(445, "typical", style="diverse")
    assert img.mean() < 12
    out = reader.read(img)
    assert out.quality.blank is None and out.quality.label_found
    assert any(r.startswith("too dark") for r in out.quality.reasons)
    assert any("运单号" in ln.text for ln in out.lines)


def test_image_reader__a_dark_photo_whose_outline_is_lost_is_read_when_a_sheet_shows(reader: ImageReader) -> None:
    """Diverse seed 77 (hard): the photo averages under the black level and no outline is found in it, but
    the slip stands out from the bench when the photo is shrunk (noise averages out, a sheet does not). It
    used to be refused as black; its return date is readable."""
    img, truth = generate_slip(77, "hard", style="diverse")
    assert img.mean() < 12
    out = reader.read(img)
    assert out.quality.blank is None and not out.quality.label_found
    assert any(r.startswith("too dark") for r in out.quality.reasons)
    assert any(field_truth(truth)["return_date"].replace("-", ".") in ln.text for ln in out.lines)


def test_image_reader__a_black_photo_with_a_noisy_sensor_is_still_refused(reader: ImageReader) -> None:
    """A lens cap on a camera at full gain: dark, vignetted, with noise of 15 grey levels (more than a dark
    slip's own spread at full size). Shrunk, the noise averages out and nothing shows: black."""
    h, w = 1200, 1600
    yy, xx = np.mgrid[0:h, 0:w]
    vignette = 8.0 * (1 - 0.5 * np.clip(np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2)) / 1.41, 0, 1) ** 2)
    grey = np.clip(vignette + np.random.default_rng(1).normal(0, 15, (h, w)), 0, 255).astype(np.uint8)
    photo = np.repeat(grey[:, :, None], 3, axis=2)
    assert photo.std() > 7  # as spread at full size as the dark slip above
    out = reader.read(photo)
    assert out.quality.blank is not None and out.quality.blank.startswith("the photo is black")
    assert out.lines == ()


def test_onnx_ocr__confidence_separates_text_from_noise(reader: ImageReader) -> None:
    engine = reader.engine
    assert isinstance(engine, OnnxOcr)
    img, _ = generate_slip(23, "typical")
    lines, _ = engine.read(reader_label(reader, img))
    noise = np.random.default_rng(3).integers(0, 256, (48, 400, 3), dtype=np.uint8)
    ((_, noise_conf, _, _),) = engine.recognize([noise])
    assert np.median([ln.confidence for ln in lines]) > 0.95
    assert noise_conf < 0.8


def reader_label(reader: ImageReader, img: np.ndarray) -> np.ndarray:
    from edge_agent.pipelines.bench.preprocess import preprocess

    return preprocess(img, reader.cfg.preprocess).image


def test_onnx_ocr__hash_mismatch_names_the_file(tmp_path: Path) -> None:
    data = json.loads(default_manifest_path().read_text(encoding="utf-8"))
    data["models"]["ppocrv6-small"]["cls"]["sha256"] = "0" * 64
    bad = tmp_path / "manifest.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ModelError, match=r"ch_ppocr_mobile_v2\.0_cls_mobile\.onnx: sha256 mismatch .*expected 0{64}"):
        OnnxOcr(OcrConfig(manifest=bad))


def test_load_manifest__missing_file_and_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nope\.json: model manifest not found"):
        load_manifest("ppocrv6-small", tmp_path / "nope.json")
    with pytest.raises(ModelError, match=r"models\.ppocrv9: expected a model set of that name"):
        load_manifest("ppocrv9", default_manifest_path())
    files = load_manifest("ppocrv6-small")
    assert {"det", "rec", "cls"} <= set(files)
    assert all(f.path.exists() for f in files.values())


def test_ctc_decode__collapses_repeats_and_blanks() -> None:
    charset = ["", "1", "2", " "]
    seq = [1, 1, 0, 1, 2, 2, 0, 0]  # "1 1 _ 1 2 2 _ _" -> "112"
    probs = np.full((1, len(seq), 4), 0.01, np.float32)
    for t, k in enumerate(seq):
        probs[0, t, k] = 0.9 if t != 4 else 0.6
    ((text, conf),) = ctc_decode(probs, charset)
    assert text == "112"
    assert conf == pytest.approx((0.9 + 0.9 + 0.6) / 3, abs=1e-5)
    # each character's step is where its run starts: the glyph-width witness places it on the crop by it
    ((text, _, chars, steps, _),) = ctc_decode_steps(probs, charset)
    assert (text, chars, steps) == ("112", (0.9, 0.9, 0.6), (0, 3, 4))
    spaced = np.full((1, 6, 4), 0.01, np.float32)
    for t, k in enumerate([3, 1, 3, 2, 0, 3]):  # " 1 2 " -> "1 2", the end spaces dropped with their steps
        spaced[0, t, k] = 0.9
    ((text, _, chars, steps, _),) = ctc_decode_steps(spaced, charset)
    assert (text, steps) == ("1 2", (1, 2, 3))


def test_ctc_decode_steps__a_character_counts_the_probability_of_its_kin_not_of_a_look_alike() -> None:
    charset = ["", "x", "X", "×", "1", "2", "O", "o", "0", " "]
    rows = [
        {1: 0.47, 2: 0.33, 3: 0.2},  # the times sign, shared among its three forms (clean tuning slip 1174)
        {4: 1.0},
        {0: 1.0},
        {6: 0.5, 7: 0.3, 8: 0.2},  # a letter O in either case
        {8: 0.6, 6: 0.4},  # a zero: the letter is another reading, not its kin
    ]
    probs = np.zeros((1, len(rows), len(charset)), np.float32)
    for t, row in enumerate(rows):
        for k, p in row.items():
            probs[0, t, k] = p
    ((text, conf, chars, _, _),) = ctc_decode_steps(probs, charset)
    assert text == "x1O0"
    assert chars == pytest.approx((1.0, 1.0, 0.8, 0.6), abs=1e-4)
    assert conf == pytest.approx(3.4 / 4, abs=1e-4)


def test_crop_box__a_lone_glyph_gets_paper_around_it_a_column_of_text_stays_turned() -> None:
    label = np.full((200, 400, 3), 255, np.uint8)

    def quad(x: float, y: float, w: float, h: float) -> np.ndarray:
        return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)

    lone = crop_box(label, quad(100, 50, 24, 36))  # a tight box round one tall digit
    assert lone.shape[:2] == (36, 45)  # 0.3 of its height more on each side: 24 + 2 x 10.8
    assert crop_box(label, quad(0, 50, 24, 36)).shape[1] < lone.shape[1]  # the margin stops at the label's edge
    assert crop_box(label, quad(100, 50, 200, 36)).shape[:2] == (36, 200)  # a line of text: as detected
    column = crop_box(label, quad(100, 20, 30, 150))  # vertical text: turned to read left to right, no margin
    assert column.shape[:2] == (30, 150)


@pytest.mark.parametrize(
    ("seed", "tier", "layout", "quantity"),
    [
        # the quantity 1, alone in its cell, was cut so tight that it was taken for vertical text and read at
        # 0.27, below the floor; the slip went to review without it
        (410, "typical", "grid", 1),
        # the border of the quantity's cell came into its box and was read as a 1: 16 passed for 6 (fresh
        # tuning seeds 1150-1299; on the hard photo the cell's lower border comes in too)
        (1194, "typical", "header_table", 6),
        (1297, "hard", "header_table", 6),
    ],
)
def test_inspector__a_lone_digit_in_a_table_cell_is_read(seed: int, tier: str, layout: str, quantity: int) -> None:
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.inspect import Inspector

    img, truth = generate_slip(seed, tier, style="diverse")
    t = field_truth(truth)
    assert truth["layout"] == layout and t["quantity"] == quantity
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    result = Inspector(BenchConfig(), today=lambda: day).inspect(img)
    assert result.fields["quantity"] == quantity
    assert {k: str(v) for k, v in result.fields.items()} == {k: str(v) for k, v in t.items()}


@pytest.mark.parametrize(
    ("seed", "tier", "layout", "field", "doubts"),
    [
        # 商品件数： ends its box, and the 1 under it is in no box: the detector missed the lone glyph
        (1232, "typical", "stacked", "quantity", []),
        # the date under 退货日期 was not boxed either; read there with a character under 0.95, a person confirms it
        (21, "typical", "stacked", "return_date", ["low_confidence"]),
        # 数量 centred over its cell, the lone 2 at the cell's left edge in no box: read under the label from
        # where its column's values start (the date and the product name above and below), not from its own edge
        (161, "typical", "header_table", "quantity", ["low_confidence"]),
    ],
)
def test_inspector__a_value_the_detector_missed_is_read_where_its_label_points(
    seed: int, tier: str, layout: str, field: str, doubts: list[str]
) -> None:
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.inspect import Inspector

    img, truth = generate_slip(seed, tier, style="diverse")
    t = field_truth(truth)
    assert truth["layout"] == layout
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    inspector = Inspector(BenchConfig(), today=lambda: day)
    result = inspector.inspect(img)
    assert str(result.fields[field]) == str(t[field])
    assert [i.code for i in result.review_reasons if i.field == field] == doubts
    assert {k: str(v) for k, v in result.fields.items()} == {k: str(v) for k, v in t.items()}
    assert "look_at" in result.timing_ms


def test_inspector__a_code_the_first_pass_saw_go_on_stays_a_doubt_when_the_finer_pass_reads_no_further() -> None:
    """Hard tuning slip 16 in a face never tuned on: the print fades out after C2842 of the customer id
    C2842380359. Read on past its box, the first pass saw a 3; the finer pass's box ends at C2842 again."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.inspect import Inspector

    img, truth = generate_slip(16, "hard", style="diverse", fonts="unseen")
    t = field_truth(truth)
    assert t["customer_id"] == "C2842380359"
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    result = Inspector(BenchConfig(), today=lambda: day).inspect(img)
    assert "second_pass" in result.timing_ms  # the first pass's doubt sent it to the finer pass
    assert result.fields["customer_id"] == "C2842"
    assert result.needs_review
    assert [(i.code, i.field) for i in result.review_reasons] == [("reads_disagree", "customer_id")]
    assert "C2842 may go on past its box" in result.review_reasons[0].message


def _cell(text: str, rule_x: int | None, h: int = 46, w: int = 90) -> np.ndarray:
    """A box the detector cut around one cell's text, with a cell border (a 2 px bar from its top to its
    bottom) at rule_x."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (w, h), (236, 236, 230))
    font = ImageFont.truetype("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 30)
    ImageDraw.Draw(img).text((30, 6), text, font=font, fill=(20, 20, 20))
    if rule_x is not None:
        ImageDraw.Draw(img).rectangle((rule_x, 0, rule_x + 1, h - 1), fill=(30, 30, 30))
    return np.asarray(img)[:, :, ::-1].copy()


def test_erase_rules__a_cell_border_is_painted_over_and_glyphs_are_kept() -> None:
    ruled, plain = _cell("6", rule_x=12), _cell("6", rule_x=None)
    out = erase_rules(ruled)
    assert (out[:, 12:14] > 200).all()  # the border is paper now
    assert np.array_equal(out[:, 20:], ruled[:, 20:])  # the 6 as it was
    for glyphs in ("1", "I|1", "【1】"):  # strokes of glyphs keep their margin: nothing is a border
        cell = _cell(glyphs, rule_x=None)
        assert erase_rules(cell) is cell
    assert erase_rules(plain) is plain


def _two_cells() -> tuple[np.ndarray, np.ndarray, float]:
    """A label with two table cells' text, 七天无理由 and KH-2024-32019, a few pixels either side of the cells'
    border, the quad the detector gave them as one line and the border's column."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (520, 120), (236, 236, 230))
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 28)
    right = 20 + draw.textlength("七天无理由", font=font) + 8
    draw.text((20, 42), "七天无理由", font=font, fill=(20, 20, 20))
    draw.rectangle((right, 0, right + 1, 119), fill=(20, 20, 20))  # the cells' border, from top to bottom
    draw.text((right + 8, 42), "KH-2024-32019", font=font, fill=(20, 20, 20))
    quad = np.array([[12, 34], [500, 34], [500, 84], [12, 84]], np.float32)
    return np.asarray(img)[:, :, ::-1].copy(), quad, right


def _banner() -> tuple[np.ndarray, np.ndarray]:
    """A shop's name printed light on its coloured banner, and the quad the detector gave it."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (520, 120), (80, 100, 120))
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 34)
    draw.text((20, 39), "山野户外山野户外", font=font, fill=(215, 215, 215))
    right = 28 + draw.textlength("山野户外山野户外", font=font)
    return np.asarray(img)[:, :, ::-1].copy(), np.array([[12, 38], [right, 38], [right, 82], [12, 82]], np.float32)


def test_cut_at_rules__a_box_over_two_cells_is_cut_at_their_border() -> None:
    label, quad, border = _two_cells()
    pieces = cut_at_rules(label, quad)
    assert len(pieces) == 2
    (left, left_crop), (right, right_crop) = pieces
    assert (
        border - 2 <= left[1][0] <= border <= right[0][0] <= border + 4
    )  # the left piece ends at the border, the right one starts there
    assert left[0][0] == quad[0][0] and right[1][0] == quad[1][0]  # and the line's ends are kept
    for q, crop in pieces:
        assert np.array_equal(crop, crop_box(label, q))
    # each piece holds its own text and no border
    engine = OnnxOcr(OcrConfig())
    assert [t for t, _, _, _ in engine.recognize([left_crop, right_crop])] == ["七天无理由", "KH-2024-32019"]
    # the engine reads the two cells as two lines
    lines, _ = engine.read(label)
    assert [ln.text for ln in lines] == ["七天无理由", "KH-2024-32019"]


def test_cut_at_rules__a_box_without_a_border_or_on_a_coloured_band_is_kept_whole() -> None:
    label, quad, border = _two_cells()
    plain = label.copy()
    bx = round(border)
    plain[:, bx - 1 : bx + 3] = label[:, 5:9]  # paper over the border
    assert [q.tolist() for q, _ in cut_at_rules(plain, quad)] == [quad.tolist()]
    # light print on a band: its "ink" is the band, and the band between two glyphs is no border
    banner, bq = _banner()
    assert [q.tolist() for q, _ in cut_at_rules(banner, bq)] == [bq.tolist()]
    assert np.array_equal(crop_box(banner, bq), warp_box(banner, bq))  # nor painted over
    # a line drawn across a label's text, touching its glyphs, is no cells' border (typical tuning slip 21)
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (200, 120), (236, 236, 230))
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", 28)
    draw.text((20, 42), "退货日期", font=font, fill=(20, 20, 20))
    x = round(20 + draw.textlength("退货日", font=font))
    draw.rectangle((x - 1, 0, x, 119), fill=(20, 20, 20))
    crossed, cq = np.asarray(img)[:, :, ::-1].copy(), np.array([[12, 34], [150, 34], [150, 84], [12, 84]], np.float32)
    assert [q.tolist() for q, _ in cut_at_rules(crossed, cq)] == [cq.tolist()]
    # a border at a box's end, with nothing beyond it, leaves the box whole (and erased, as crop_box does)
    left = label.copy()
    left[:, bx + 3 :] = label[:, 5:6]  # paper from just past the border on
    assert (left[:, bx] < 100).all()  # the border is still there
    (q, crop), *more = cut_at_rules(left, quad)
    assert not more and q.tolist() == quad.tolist() and np.array_equal(crop, crop_box(left, quad))


def test_inspector__a_box_the_detector_ran_across_two_cells_is_read_as_both() -> None:
    # clean tuning slip 379: 七天无理由退货 - 赠品未收到 and, past its cell's border, the customer id KH-2024-32019
    # came back as one box under the reason's header, and the customer id was lost
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.inspect import Inspector

    img, truth = generate_slip(379, "clean", style="diverse")
    t = field_truth(truth)
    assert truth["layout"] == "header_table" and t["customer_id"] == "KH-2024-32019"
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    result = Inspector(BenchConfig(), today=lambda: day).inspect(img)
    assert {k: str(v) for k, v in result.fields.items()} == {k: str(v) for k, v in t.items()}
    assert not result.needs_review, result.review_reasons


def test_join_words__cjk_without_spaces_latin_with() -> None:
    assert join_words(["订", "单", "号", ":", "12345"]) == "订单号: 12345"
    assert join_words(["退货", "Order", "No.", "42"]) == "退货Order No. 42"


def test_image_reader__tesseract_engine_reads_digits() -> None:
    reader = ImageReader(BenchConfig(), engine="tesseract")
    img, truth = generate_slip(24, "clean")
    out = reader.read(img)
    assert out.engine == "tesseract"
    assert "tesseract" in out.timing_ms
    text = "".join(_compact(ln.text) for ln in out.lines)
    assert truth["phone"] in text or truth["customer_id"] in text


def test_image_reader__unknown_engine_named() -> None:
    with pytest.raises(ValueError, match="expected one of onnx, tesseract, got 'paddle'"):
        ImageReader(BenchConfig(), engine="paddle")


def test_load_image__broken_files_named(tmp_path: Path) -> None:
    img, _ = generate_slip(1, "clean")
    import cv2

    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    good = tmp_path / "good.jpg"
    good.write_bytes(buf.tobytes())
    assert load_image(good).shape == img.shape
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buf.tobytes()[:200])
    with pytest.raises(ValueError, match=r"cut\.jpg: not a readable image"):
        load_image(cut)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.png: empty file"):
        load_image(empty)
    with pytest.raises(ValueError, match=r"missing\.jpg: image file not found"):
        load_image(tmp_path / "missing.jpg")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2048))
def test_load_image__any_bytes_give_image_or_named_error(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    p = tmp_path_factory.mktemp("b") / "x.jpg"
    p.write_bytes(data)
    try:
        img = load_image(p)
    except ValueError as exc:
        assert "x.jpg" in str(exc)
    else:
        assert img.ndim == 3


def test_ocr_config__errors_name_key_and_expectation() -> None:
    from edge_agent.errors import ConfigError

    with pytest.raises(ConfigError) as ei:
        parse_config(
            {
                "profile": "bench",
                "device": {"id": "b1", "site": "s"},
                "bench": {
                    "ocr": {"engine": "paddle", "rec_squeeze": 2},
                    "preprocess": {"binarize": "yes"},
                    "quality": {"max_glare_frac": 3},
                },
            },
            "config.toml",
        )
    problems = "\n".join(ei.value.problems)
    assert 'config.toml: bench.ocr.engine: expected "onnx" or "tesseract", got "paddle"' in problems
    assert "config.toml: bench.ocr.rec_squeeze: expected a factor 0.4-1.0, got 2" in problems
    assert 'bench.preprocess.binarize: expected "off", "otsu" or "adaptive", got "yes"' in problems
    assert "bench.quality.max_glare_frac: expected a fraction 0-1, got 3" in problems


def test_inspector__field_boxes_land_on_the_slip_in_photo_coordinates() -> None:
    import json
    from datetime import date

    import cv2

    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.inspect import Inspector

    img, truth = generate_slip(5, "typical")  # turned and in perspective: the mapping back must undo both
    res = Inspector(BenchConfig(), today=lambda: date(2030, 1, 1)).inspect(img)
    out = json.loads(json.dumps(res.to_json()))  # what the station page gets
    label = np.asarray(truth["label_quad"], np.float32)
    boxed = {name: quad for name, quad in out["field_boxes"].items() if quad is not None}
    assert len(boxed) >= 5
    for name, quad in boxed.items():
        assert len(quad) == 4
        for x, y in quad:
            assert cv2.pointPolygonTest(label, (float(x), float(y)), True) > -15, (name, quad)
    # distinct fields sit on distinct lines of the slip
    centres = {name: tuple(np.mean(quad, axis=0).round()) for name, quad in boxed.items()}
    assert len(set(centres.values())) >= 4


def test_inspector__cascade_reads_again_at_higher_resolution_when_the_first_read_falls_short() -> None:
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.inspect import Inspector

    img, truth = generate_slip(2, "clean")
    day = date.fromisoformat(truth["return_date"]) + timedelta(days=1)
    coarse = BenchConfig()
    coarse.ocr.det_px = 160  # a first pass too coarse to find the small print
    one_pass = coarse.model_copy(deep=True)
    one_pass.ocr.second_pass_det_px = 0
    first_only = Inspector(one_pass, today=lambda: day).inspect(img)
    assert "second_pass" not in first_only.timing_ms
    assert sum(v is not None for v in first_only.fields.values()) < 6
    cascade = Inspector(coarse, today=lambda: day).inspect(img)
    assert "second_pass" in cascade.timing_ms and "det_2" in cascade.timing_ms
    assert cascade.fields["sku"] == truth["sku"] and cascade.fields["quantity"] == truth["quantity"]
    assert sum(v is not None for v in cascade.fields.values()) > sum(v is not None for v in first_only.fields.values())
    # an easy photo at the default sizes stays on the fast path
    easy = Inspector(BenchConfig(), today=lambda: day).inspect(img)
    assert not easy.needs_review and "second_pass" not in easy.timing_ms


def test_inspector__a_value_only_the_first_pass_read_is_kept_by_the_cascade() -> None:
    """Diverse seed 40 (typical, stacked): the first pass reads the SKU but misreads the quantity's label;
    the finer pass reads the quantity and loses the SKU's line. The slip comes out whole, unreviewed."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.inspect import Inspector

    img, truth = generate_slip(40, "typical", style="diverse")
    day = date.fromisoformat(truth["return_date"]) + timedelta(days=1)
    res = Inspector(BenchConfig(), today=lambda: day).inspect(img)
    assert "second_pass" in res.timing_ms
    assert res.fields["sku"] == truth["sku"] and res.fields["quantity"] == truth["quantity"]
    assert not res.needs_review, res.review_reasons
    assert res.field_boxes["sku"] is not None


def test_inspector__second_pass_cuts_the_label_again_with_a_margin() -> None:
    """Diverse seed 27 (typical, thermal): the label outline found cuts the slip's left edge, so the first
    read loses the start of 'QTY' and '订单号'; the second pass cuts again with a margin and reads them."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.inspect import Inspector

    img, t = generate_slip(27, "typical", style="diverse")
    ins = Inspector(BenchConfig())
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    ins.today = lambda: day
    first = ins.reader.read(img)
    assert not any(ln.text.startswith("QTY") for ln in first.lines)
    again = ins.reader.second_pass(first, img)
    assert again is not None and any(ln.text.startswith("QTY") for ln in again.lines)
    res = ins.inspect(img)
    assert "second_pass" in res.timing_ms
    assert res.fields["order_no"] == t["order_no"] and res.fields["quantity"] == t["quantity"]
    # the boxes of the second read still land on the slip in the photo
    quad = np.asarray(t["label_quad"])
    for corners in (c for c in res.field_boxes.values() if c is not None):
        for x, y in corners:
            assert (
                quad[:, 0].min() - 40 <= x <= quad[:, 0].max() + 40
                and quad[:, 1].min() - 40 <= y <= quad[:, 1].max() + 40
            )


def test_inspector__second_pass_reads_the_whole_photo_when_the_outline_found_holds_no_text() -> None:
    """Diverse seed 409 (hard, waybill): a shadow's edge is taken for the label's outline, and the crop
    along it is bare table top. Grown by a margin it is still bare, so the second pass reads the whole
    photo, and the fields come out with boxes on the slip."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.inspect import Inspector
    from edge_agent.pipelines.bench.reader import FEW_LINES

    img, t = generate_slip(409, "hard", style="diverse")
    ins = Inspector(BenchConfig())
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    ins.today = lambda: day
    first = ins.reader.read(img)
    assert len(first.lines) < FEW_LINES
    again = ins.reader.second_pass(first, img)
    assert again is not None and len(again.lines) >= FEW_LINES
    res = ins.inspect(img)
    assert res.fields["order_no"] == t["order_no"] and res.fields["customer_id"] == t["customer_id"]
    quad = np.asarray(t["label_quad"])
    for name in ("order_no", "customer_id"):
        corners = res.field_boxes[name]
        assert corners is not None
        for x, y in corners:
            assert quad[:, 0].min() <= x <= quad[:, 0].max() and quad[:, 1].min() <= y <= quad[:, 1].max()


def test_inspector__second_pass_reads_the_whole_photo_when_the_outline_cut_through_the_print(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Diverse seed 491 (typical, header table): the outline found runs through the slip and 9 lines
    touch the label image's edge. Cut again with a 5 % margin the customer id's label is still lost;
    the whole photo gives it, and the slip passes whole."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench import reader as reader_mod
    from edge_agent.pipelines.bench.inspect import Inspector

    img, t = generate_slip(491, "typical", style="diverse")
    ins = Inspector(BenchConfig())
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    ins.today = lambda: day
    first = ins.reader.read(img)
    w = first.label_image.shape[1]
    assert len(first.lines) >= reader_mod.FEW_LINES
    assert sum(ln.box[0] <= 1 or ln.box[0] + ln.box[2] >= w - 1 for ln in first.lines) >= reader_mod.CUT_LINES
    res = ins.inspect(img)
    assert res.fields == {k: field_truth(t)[k] for k in res.fields}
    assert not res.needs_review, res.review_reasons
    with monkeypatch.context() as m:
        m.setattr(reader_mod, "CUT_LINES", 10**6)  # the margin's recut only
        margin_only = ins.inspect(img)
    assert margin_only.fields["customer_id"] is None


def test_inspector__second_pass_reads_the_whole_photo_when_the_print_runs_off_the_top(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Diverse seed 472 (hard, colon lines, tuning split): shadows' edges are taken for the outline, and
    the label cut along it turns the print askew, so most lines run off its top edge rather than its
    sides ('退货原因：与描' for 退货原因：与描述不符). The whole photo gives the reason, the customer id and
    the date; the margin's recut alone gives none of them."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench import reader as reader_mod
    from edge_agent.pipelines.bench.inspect import Inspector

    img, t = generate_slip(472, "hard", style="diverse")
    truth = field_truth(t)
    ins = Inspector(BenchConfig())
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    ins.today = lambda: day
    first = ins.reader.read(img)
    w = first.label_image.shape[1]
    assert sum(ln.box[0] <= 1 or ln.box[0] + ln.box[2] >= w - 1 for ln in first.lines) < reader_mod.CUT_LINES
    assert sum(ln.box[1] <= 1 for ln in first.lines) >= reader_mod.CUT_LINES
    read = ("reason", "customer_id", "return_date")
    res = ins.inspect(img)
    assert {k: res.fields[k] for k in read} == {k: truth[k] for k in read}
    with monkeypatch.context() as m:
        m.setattr(reader_mod, "CUT_LINES", 10**6)  # the margin's recut only
        margin_only = ins.inspect(img)
    assert all(margin_only.fields[k] != truth[k] for k in read)


def test_inspector__a_code_the_first_read_saw_cut_off_stays_doubtful_when_the_second_reads_less() -> None:
    """Diverse seed 44 (hard, tuning split): the first read gives '订单编号：DD20240613-', the second
    '订单编号：DD20240613'; the order number is DD20240613-39939 and must not pass as DD20240613."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.inspect import Inspector

    img, t = generate_slip(44, "hard", style="diverse")
    ins = Inspector(BenchConfig())
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    ins.today = lambda: day
    res = ins.inspect(img)
    assert res.fields["order_no"] == t["order_no"] or res.needs_review
    assert any(i.field == "order_no" and i.code == "bad_format" for i in res.review_reasons)


def test_inspector__an_o_read_as_0_in_a_monospaced_font_goes_to_review() -> None:
    """Diverse seed 101 (clean, tuning split, LXGW WenKai Mono): SKU SA-7568-GRY-O1 reads ...-01 with
    probability 0.9999, and in a monospaced font an O is as narrow as a 0: neither settles it."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.inspect import Inspector

    img, t = generate_slip(101, "clean", style="diverse")
    assert t["font"] == "LXGWWenKaiMono-Regular.ttf" and t["sku"] == "SA-7568-GRY-O1"
    ins = Inspector(BenchConfig())
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    ins.today = lambda: day
    res = ins.inspect(img)
    assert res.fields["sku"] == t["sku"] or any(
        i.field == "sku" and i.code == "ambiguous_value" for i in res.review_reasons
    )


def test_image_reader__read_on_reads_what_a_box_cut_short_left_out_up_to_the_next_box(reader: ImageReader) -> None:
    """A line whose box ends two characters before its text does: read_on reads them, from the box's last
    characters on; with another box right after it there is no room, and nothing is read."""
    from PIL import Image, ImageDraw, ImageFont

    from edge_agent.demo.slipgen.layouts import FONTS
    from edge_agent.pipelines.bench.types import ImageReading, QualityReport, TextLine

    font = ImageFont.truetype(FONTS[0][0], 40, index=FONTS[0][2])
    page = Image.new("L", (900, 100), 255)
    ImageDraw.Draw(page).text((20, 30), "AB-1234567890", font=font, fill=0)
    label = np.asarray(page)
    x0, x1 = 20.0, 20.0 + font.getlength("AB-12345678")  # the box ends before "90"
    quad = ((x0, 25.0), (x1, 25.0), (x1, 80.0), (x0, 80.0))
    cut = TextLine("AB-12345678", 0.999, (20, 25, round(x1 - x0), 55), (0.999,) * 11, quad)
    quality = QualityReport(True, (), 900.0, 200.0, 0.0, True)
    reading = ImageReading(quality, (cut,), (), "onnx", label_image=label)
    [(text, chars)] = reader.read_on(reading, [cut])
    assert text.replace(" ", "").endswith("7890") and len(chars) == len(text), text

    beside = TextLine("X", 0.99, (round(x1) + 4, 25, 40, 55))  # the next box on the line, 4 px on
    assert reader.read_on(replace(reading, lines=(cut, beside)), [cut]) == [("", ())]


def test_read_fields__a_date_whose_box_ends_on_a_day_of_one_digit_is_read_on(reader: ImageReader) -> None:
    """Hard tuning slip 85: the 2 of 2025.11.12 was lost at the end of its box, and 2025.11.1 is a date too.
    A box that ends on a day of one digit is read on: more digits after it are a doubt; none, none."""
    from PIL import Image, ImageDraw, ImageFont

    from edge_agent.demo.slipgen.layouts import FONTS
    from edge_agent.pipelines.bench.inspect import Rules, read_fields
    from edge_agent.pipelines.bench.types import ImageReading, QualityReport, TextLine

    font = ImageFont.truetype(FONTS[0][0], 40, index=FONTS[0][2])
    rules = Rules.from_config(BenchConfig())
    quality = QualityReport(True, (), 900.0, 200.0, 0.0, True)

    asked: list[str] = []

    def read_on(
        reading: ImageReading, lines: list[TextLine], back: bool = False
    ) -> list[tuple[str, tuple[float, ...]]]:
        asked.extend(ln.text for ln in lines)
        return reader.read_on(reading, lines, back=back)

    def read(printed: str, boxed: str) -> ReadFields:
        asked.clear()
        page = Image.new("L", (900, 100), 255)
        ImageDraw.Draw(page).text((20, 30), printed, font=font, fill=0)
        x0, x1 = 20.0, 20.0 + font.getlength(boxed)
        quad = ((x0, 25.0), (x1, 25.0), (x1, 80.0), (x0, 80.0))
        line = TextLine(boxed, 0.999, (20, 25, round(x1 - x0), 55), (0.999,) * len(boxed), quad)
        reading = ImageReading(quality, (line,), (), "onnx", label_image=np.asarray(page))
        return read_fields(reading, rules, None, read_on)

    cut = read("退货日期：2025.11.12", "退货日期：2025.11.1")
    assert cut.ext.values["return_date"].value == "2025-11-01"
    assert [i.message for i in cut.disagree] == ["return_date: 2025-11-01 may go on past its box (read wider: ...2)"]
    whole = read("退货日期：2025.11.1", "退货日期：2025.11.1")
    assert whole.ext.values["return_date"].value == "2025-11-01" and not whole.disagree
    assert asked == ["退货日期：2025.11.1"]
    padded = read("退货日期：2025.11.12", "退货日期：2025.11.12")  # a day of two digits is not read on
    assert padded.ext.values["return_date"].value == "2025-11-12" and not padded.disagree and asked == []


def test_image_reader__read_on_back_reads_what_a_box_cut_short_at_its_start_left_out(reader: ImageReader) -> None:
    """A line whose box starts two characters after its text does: read back, the start of the box grown to
    the left gives them before its first characters; with the box before it on the line 4 px off there
    is no room, and nothing is read."""
    from PIL import Image, ImageDraw, ImageFont

    from edge_agent.demo.slipgen.layouts import FONTS
    from edge_agent.pipelines.bench.types import ImageReading, QualityReport, TextLine

    font = ImageFont.truetype(FONTS[0][0], 40, index=FONTS[0][2])
    page = Image.new("L", (900, 100), 255)
    ImageDraw.Draw(page).text((120, 30), "WM-1234567890", font=font, fill=0)
    label = np.asarray(page)
    x0, x1 = 120.0 + font.getlength("WM"), 120.0 + font.getlength("WM-1234567890")  # the box starts at the -
    quad = ((x0, 25.0), (x1, 25.0), (x1, 80.0), (x0, 80.0))
    cut = TextLine("-1234567890", 0.999, (round(x0), 25, round(x1 - x0), 55), (0.999,) * 11, quad)
    quality = QualityReport(True, (), 900.0, 200.0, 0.0, True)
    reading = ImageReading(quality, (cut,), (), "onnx", label_image=label)
    [(text, chars)] = reader.read_on(reading, [cut], back=True)
    assert text.replace(" ", "").startswith("WM-12"), text
    assert len(chars) == len(text)
    [(ahead, _)] = reader.read_on(reading, [cut])
    assert "WM" not in ahead  # read on, the end of the box is read: the other way

    before = TextLine("X", 0.99, (round(x0) - 44, 25, 40, 55))  # the box before it on the line, 4 px off
    assert reader.read_on(replace(reading, lines=(before, cut)), [cut], back=True) == [("", ())]


def test_read_before__the_code_straight_before_the_longest_start_of_the_box_and_how_surely_it_was_read() -> None:
    from edge_agent.pipelines.bench.inspect import _read_before

    sure = (1.0,) * 12
    assert _read_before("7222", "77222", (0.999, *sure[:4])) == ("7", True)  # a customer id that lost C428197
    assert _read_before("6532658", "06532", (0.317, 0.999, 0.993, 1.0, 1.0)) == ("0", False)  # in glare
    assert _read_before("C1034358063", "C103435", sure[:7]) == ("", False)  # the box's start, nothing before
    assert _read_before("M736", "SKU:M736", sure[:8]) == ("", False)  # a label and a colon before it
    assert _read_before("5555B17", "55-5555", sure[:7]) == ("", False)  # its start repeats: held as early as can be
    assert _read_before("6611260", "5 66112", sure[:7]) == ("", False)  # a speck before a gap
    assert _read_before("6532658", "06532", (0.29, *sure[:4])) == ("", False)  # noise, read faintly
    assert _read_before("P532489", "ABC", sure[:3]) == ("", False)  # the box's start not found in the read


def test_read_past__the_code_straight_after_the_longest_end_of_the_box_and_how_surely_it_was_read() -> None:
    from edge_agent.pipelines.bench.inspect import _read_past

    sure = (1.0,) * 12
    assert _read_past("P532489", "3248926", sure[:7]) == ("26", True)  # the box ended at a stain
    assert _read_past("KH2021852", "1-852-27", sure[:8]) == ("27", True)  # a separator between characters
    assert _read_past("SKUM736", ":7362V", (0.53, 0.64, 0.99, 0.99, 0.93, 0.42)) == ("2V", False)  # in shadow
    assert _read_past("U92933659", "33659___", sure[:8]) == ("", False)  # a fill-in line
    assert _read_past("B1755555", "55-55", sure[:5]) == ("", False)  # its end repeats: held as late as it can be
    assert _read_past("251106734265488430831", "30831 =7", sure[:8]) == ("", False)  # a speck after a gap
    assert _read_past("SN61366753114", "531143", (1.0,) * 5 + (0.27,)) == ("", False)  # noise, read faintly
    assert _read_past("P532489", "ABC", sure[:3]) == ("", False)  # the box's end not found in the read
    # A date in 年月日 is anchored by its marks too (hard tuning slip 1617 unseen: the box ended at 2025年10月3,
    # its day's 1日 in a shadow, and read on gave 0月31); its digits alone, 03, are too few to anchor on.
    assert _read_past("2025年10月3", "0月31", sure[:4]) == ("1", True)
    assert _read_past("2025103", "0月31", sure[:4]) == ("", False)
    assert _read_past("2025年10月3", "0月3日", sure[:4]) == ("", False)  # the day was whole


def _read_twice(seed: int, tier: str) -> tuple[Inspector, NDArray[Any], dict[str, Any], ReadFields, ReadFields]:
    """A diverse slip's photo read by a fresh Inspector's reader, and its fields found twice on that reading:
    without (`blind`) and with (`found`) its codes' boxes read on and back. (inspector, photo, truth, blind,
    found)"""
    from edge_agent.pipelines.bench.inspect import Inspector, read_fields

    img, truth = generate_slip(seed, tier, style="diverse")
    ins = Inspector(BenchConfig())
    reading = ins.reader.read(img)
    blind = read_fields(reading, ins.rules, ins.reader.confirm_lines)
    found = read_fields(reading, ins.rules, ins.reader.confirm_lines, ins.reader.read_on)
    return ins, img, field_truth(truth), blind, found


def test_inspector__a_code_whose_box_a_stain_ended_early_is_not_passed_cut_short() -> None:
    """Diverse seed 615 (typical, tuning split): a speckled stain across the end of the SKU P53248926 ends
    the first pass's box two characters early, and the box reads P532489 at 0.9998. The box's end, read
    again grown to the right, gives the 26 after it: a person would look, so the cascade reads again and
    its finer pass reads the whole SKU. The order number and the customer id, whole in their boxes, are
    not doubted; nor is the customer id of seed 840 (clean), which a fill-in line follows (read as ___),
    nor the order number of seed 431 (hard), where the noise before the next box reads as one more
    character, but not surely."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.inspect import read_fields

    ins, img, t, blind, found = _read_twice(615, "typical")
    assert t["sku"] == "P53248926"
    assert blind.ext.values["sku"].value == "P532489" and not blind.ext.issues and not blind.disagree
    assert [(i.code, i.field) for i in found.disagree] == [("reads_disagree", "sku")]
    assert found.disagree[0].message == "sku: P532489 may go on past its box (read wider: ...26)"
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    ins.today = lambda: day
    res = ins.inspect(img)
    assert res.fields["sku"] == "P53248926" and "read_on" in res.timing_ms

    img, truth = generate_slip(840, "clean", style="diverse")
    reading = ins.reader.read(img)
    whole = read_fields(reading, ins.rules, ins.reader.confirm_lines)
    assert whole.ext.values["customer_id"].value == field_truth(truth)["customer_id"]
    [(again, _)] = ins.reader.read_on(reading, [whole.ext.where["customer_id"]])
    assert again.endswith("_"), again  # the fill-in line was read with it
    found = read_fields(reading, ins.rules, ins.reader.confirm_lines, ins.reader.read_on)
    assert not [i for i in found.disagree if i.field == "customer_id"]

    img, truth = generate_slip(431, "hard", style="diverse")
    reading = ins.reader.read(img)
    whole = read_fields(reading, ins.rules, ins.reader.confirm_lines)
    assert whole.ext.values["order_no"].value == field_truth(truth)["order_no"] == "SN61366753114"
    [(again, chars)] = ins.reader.read_on(reading, [whole.ext.where["order_no"]])
    assert again.startswith("53114") and len(again) > 5 and min(chars[5:]) < 0.95, again  # 531143: 3 at 0.27
    found = read_fields(reading, ins.rules, ins.reader.confirm_lines, ins.reader.read_on)
    assert not [i for i in found.disagree if i.field == "order_no"]


def test_inspector__a_code_the_labels_outline_cut_at_its_edge_is_read_again_with_a_margin() -> None:
    """Diverse seed 1450 (hard, tuning split): a shadow's edge across the slip moves the label's outline left,
    through the customer id U53157214, whose box then ends at U5315, at the label image's edge: no room to
    read on. It passed so. Now such a value is a doubt, and the cascade's finer pass, which cuts the label
    again with a margin, reads it whole. The SKU above it, JM3956H, ends at the edge too (whole, as it
    happens): a doubt as well, until the finer pass."""
    from datetime import date, timedelta

    ins, img, t, blind, found = _read_twice(1450, "hard")
    assert t["customer_id"] == "U53157214"
    assert blind.ext.values["customer_id"].value == "U5315" and not blind.disagree
    x, _, w, _ = found.ext.where["customer_id"].box
    assert x + w >= found.reading.label_image.shape[1] - 1  # the box ends where the label image does
    assert [i.message for i in found.disagree] == [
        "sku: JM3956H may go on past the edge of the label as cut",  # it happens to end there, whole
        "customer_id: U5315 may go on past the edge of the label as cut",
    ]
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    ins.today = lambda: day
    res = ins.inspect(img)
    assert "second_pass" in res.timing_ms
    assert {k: str(v) for k, v in res.fields.items()} == {k: str(v) for k, v in t.items()}
    assert not res.needs_review, res.review_reasons


def test_inspector__a_date_in_year_month_day_marks_cut_short_by_a_shadow_is_read_on_by_its_marks() -> None:
    """Hard tuning slip 1617 in a face never tuned on prints 2025年10月31日; a shadow's edge ends the date's box
    at 2025年10月3, and 2025-10-03 passed: read on, the box's end gave 0月31, whose digits alone (03) were
    too few to find the box's end in. Anchored by its marks too, the 1 after it is seen, and the finer pass
    reads the whole date."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.inspect import Inspector

    img, truth = generate_slip(1617, "hard", style="diverse", fonts="unseen")
    t = field_truth(truth)
    assert t["return_date"] == "2025-10-31"
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    result = Inspector(BenchConfig(), today=lambda: day).inspect(img)
    assert "second_pass" in result.timing_ms
    assert str(result.fields["return_date"]) == "2025-10-31"
    assert {k: str(v) for k, v in result.fields.items()} == {k: str(v) for k, v in t.items()}


def test_inspector__a_code_a_shadow_cut_short_is_read_again_though_the_read_on_is_unsure() -> None:
    """Diverse seed 72 (hard, tuning split): a shadow's edge crosses the SKU WM7362V, and the first pass's box
    reads M736 at 0.976. The box's end read on gives the 2V after it, but not surely (0.93 and 0.42): the
    value may go on, so the cascade reads the slip again rather than M736 passing. (Its finer pass reads
    M7362V: the W after the colon is still lost, see docs/records-bench.md.)"""
    _ins, _img, t, blind, found = _read_twice(72, "hard")
    assert t["sku"] == "WM7362V"
    assert blind.ext.values["sku"].value == "M736" and not blind.ext.issues and not blind.disagree
    assert [(i.code, i.field, i.message) for i in found.disagree] == [
        ("reads_disagree", "sku", "sku: M736 may go on past its box (read wider, unsure: ...2V)")
    ]


def test_inspector__a_code_whose_middle_faded_out_is_not_passed_cut_short() -> None:
    """Diverse seed 162 (hard, tuning split): the print fades out across the middle of the SKU CN-1284-BOX-M.
    The first pass boxes CN-128 and, a gap on, -M; read on past its box, CN-128 gives nothing more (the
    paper there is blank). A box after the gap that opens with a separator is the rest of the code: the
    value may go on, so CN-128 does not pass. The fading also took the top of a 6 of the customer id
    4561636763, read as 4561630763 with every character at 0.99 or more: nothing but the SKU's doubt holds
    this slip in review (docs/records-bench.md, "Faint print")."""
    from datetime import date, timedelta

    ins, img, t, blind, found = _read_twice(162, "hard")
    assert t["sku"] == "CN-1284-BOX-M"
    assert blind.ext.values["sku"].value == "CN-128" and not blind.disagree
    assert [(i.code, i.field, i.message) for i in found.disagree] == [
        ("reads_disagree", "sku", "sku: CN-128 may go on past its box (a gap, then -M)")
    ]
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    ins.today = lambda: day
    res = ins.inspect(img)
    assert res.fields["sku"] == "CN-128"
    assert res.needs_review and ("reads_disagree", "sku") in [(i.code, i.field) for i in res.review_reasons]


def test_inspector__a_code_whose_start_glare_washed_out_is_not_passed_without_it() -> None:
    """Diverse seed 836 (hard, tuning split): reflected light washes out the colon and the O of the SKU
    O65326-58, beside its label 产品SKU; the detector boxes 65326-58 alone and reads it at 0.9995. The box's
    start read back gives a faint 0 before it (0.32): the value may start before its box, so a person looks
    rather than 65326-58 passing."""
    from datetime import date, timedelta

    ins, img, t, blind, found = _read_twice(836, "hard")
    assert t["sku"] == "O65326-58"
    assert blind.ext.values["sku"].value == "65326-58" and not blind.ext.issues and not blind.disagree
    assert [(i.code, i.field, i.message) for i in found.disagree] == [
        ("reads_disagree", "sku", "sku: 65326-58 may start before its box (read wider, unsure: 0...)")
    ]
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    ins.today = lambda: day
    res = ins.inspect(img)
    assert res.needs_review and any(i.field == "sku" for i in res.review_reasons)


def test_inspector__the_order_barcode_fills_an_order_whose_label_ocr_lost_and_beats_a_digit_read_in() -> None:
    """Diverse seeds 638 and 652 (typical, tuning split). On 638 OCR reads the label Order# as Order, so no
    label names the order number printed under it, and the order's QR code was ignored as a code the slip
    prints as something else: the order was missing. On 652 the slip text reads a 5 before the order
    number, and the barcode whose digits are printed under it was ignored the same way. Both now give the
    barcode's order number, and a person still confirms each (a barcode alone; the sources disagree)."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.decide import PHOTO_BARCODE_ALONE
    from edge_agent.pipelines.bench.inspect import Inspector

    ins = Inspector(BenchConfig())
    img, truth = generate_slip(638, "typical", style="diverse")
    t = field_truth(truth)
    assert truth["labels"]["order_no"] == "Order#"
    ins.today = lambda: date.fromisoformat(t["return_date"]) + timedelta(days=1)
    res = ins.inspect(img)
    assert res.fields["order_no"] == t["order_no"] == "322-6165130-9460406"
    [why] = [i.message for i in res.review_reasons if i.field == "order_no"]
    assert why.startswith(PHOTO_BARCODE_ALONE), why  # with the likely cause: the photo is dim

    img, truth = generate_slip(652, "typical", style="diverse")
    t = field_truth(truth)
    ins.today = lambda: date.fromisoformat(t["return_date"]) + timedelta(days=1)
    res = ins.inspect(img)
    assert res.fields["order_no"] == t["order_no"] == "8467243867784731752"
    assert "order_mismatch" in [i.code for i in res.review_reasons if i.field == "order_no"]


def test_inspector__a_doubtful_order_gets_its_barcode_read_again_finer_and_the_barcode_settles_it() -> None:
    """Diverse seed 694 (typical, tuning split): the slip text reads the order WO565176 with an O that could be
    a 0, and zxing reads no barcode on the photo nor on the label. Read again on the label doubled and put
    through a 3x3 median, the order's Code 128 comes out, and it settles the letter: no review."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.inspect import Inspector

    img, truth = generate_slip(694, "typical", style="diverse")
    t = field_truth(truth)
    ins = Inspector(BenchConfig())
    reading = ins.reader.read(img)
    assert reading.barcodes == ()
    assert [b.text for b in ins.reader.barcodes_again(reading)] == [t["order_no"]] == ["WO565176"]
    ins.today = lambda: date.fromisoformat(t["return_date"]) + timedelta(days=1)
    res = ins.inspect(img)
    assert res.fields["order_no"] == "WO565176" and res.sources["order_no"] == "barcode"
    # the order is settled; the customer id M35990373 is right, but its second 3 was read at 0.74 with 5 at
    # 0.22 behind it: the recogniser's own doubt, which a person settles
    assert [(i.field, i.code) for i in res.review_reasons] == [("customer_id", "ambiguous_value")], res.review_reasons
    assert "3 or 5 at character 7" in res.review_reasons[0].message
    assert "barcodes_again" in res.timing_ms
    # a photo whose order is read without doubt is not read again
    img, truth = generate_slip(21, "clean")
    ins.today = lambda: date.fromisoformat(field_truth(truth)["return_date"]) + timedelta(days=1)
    assert "barcodes_again" not in ins.inspect(img).timing_ms


def test_reader__a_grainy_photos_barcode_comes_out_of_the_label_image_and_stops_a_short_order_passing() -> None:
    """Diverse seed 413 (hard, tuning split): tape over the end of the order number 548574889923 leaves its
    text 5485748890, which fits the pattern and was read without doubt: it passed. zxing reads the order's
    Code 128 neither on the grainy photo nor on the label as cut; on the label image handed to OCR
    (denoised, contrast evened) it does, and the two sources disagree: review, with the barcode's value."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.barcodes import read_barcodes
    from edge_agent.pipelines.bench.inspect import Inspector
    from edge_agent.pipelines.bench.preprocess import preprocess

    img, truth = generate_slip(413, "hard", style="diverse")
    t = field_truth(truth)
    cfg = BenchConfig()
    prepared = preprocess(img, cfg.preprocess)
    assert prepared.crop is not None
    assert read_barcodes(img) == () and read_barcodes(prepared.crop) == ()
    ins = Inspector(cfg)
    reading = ins.reader.read(img)
    assert [b.text for b in reading.barcodes] == [t["order_no"]] == ["548574889923"]
    assert "barcodes_label" in reading.timing_ms
    ins.today = lambda: date.fromisoformat(t["return_date"]) + timedelta(days=1)
    res = ins.inspect(img)
    assert res.fields["order_no"] == "548574889923"
    [why] = [i for i in res.review_reasons if i.field == "order_no" and i.code == "order_mismatch"]
    assert "slip text 5485748890" in why.message, why


def test_inspector__glare_is_a_hint_a_photo_read_well_passes_one_read_badly_says_why() -> None:
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.inspect import Inspector
    from edge_agent.pipelines.bench.manifest import parse_manifest

    ins = Inspector(BenchConfig())
    results = {}
    for seed in (1, 2):
        img, t = generate_slip(seed, "typical", defect="glare")
        day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
        ins.today = lambda day=day: day
        row = f"{t['order_no']},{t['sku']},9,{t['customer_id']}\n"
        ins.set_manifest(parse_manifest(("order_no,sku,quantity,customer_id\n" + row).encode()))
        results[seed] = (ins.inspect(img, scan=t["order_no"]), t)
    read_well, t = results[2]
    assert not read_well.quality.ok and read_well.quality.reasons[0].startswith("glare on the label")
    assert not read_well.needs_review, read_well.review_reasons  # whatever its glare
    assert read_well.fields["sku"] == t["sku"] and read_well.retakes == ()
    read_badly, _ = results[1]
    assert read_badly.needs_review and read_badly.retakes
    assert all(r.field is not None and r.cause.startswith("glare on the label") for r in read_badly.retakes)
    assert any("(likely cause: glare on the label" in i.message for i in read_badly.review_reasons)


def test_reader__confirm_lines_reads_again_squeezed_and_keeps_the_surer_confidence(reader: ImageReader) -> None:
    """The second look at a doubtful value's line: the same text read squeezed raises what it is surer of;
    a line the second read does not agree with comes back as the full-width first read had it."""
    from dataclasses import replace

    img, _t = generate_slip(6, "clean", style="diverse")
    reading = reader.read(img)
    lines = [ln for ln in reading.lines if ln.quad is not None and len(ln.char_conf) == len(ln.text)]
    assert len(lines) >= 6
    again = reader.confirm_lines(reading, lines)
    assert [a.text for a in again] == [ln.text for ln in lines]
    for ln, a in zip(lines, again, strict=True):
        assert all(x >= y for x, y in zip(a.char_conf, ln.char_conf, strict=True)), ln.text
    assert any(a.char_conf != ln.char_conf for ln, a in zip(lines, again, strict=True))
    # The same place claimed to say something else: the squeezed second read disagrees, and the first
    # (full-width) read stands, doubts and all.
    wrong = replace(lines[0], text="X" * len(lines[0].text))
    assert reader.confirm_lines(reading, [wrong]) == [wrong]
    # After a squeezed first read, the second look is the full-width one: it comes back in the line's
    # place, for the caller to see the difference.
    [back] = reader.confirm_lines(replace(reading, rec_squeeze=0.8), [wrong])
    assert back.text == lines[0].text and back.box == wrong.box and back.quad == wrong.quad


@pytest.mark.parametrize("squeeze", [1.0, 0.8])
def test_inspect__a_repeated_digit_is_not_merged_at_full_width_nor_after_a_squeezed_read(squeeze: float) -> None:
    """Tuning split, seed 9, typical: squeezed to 0.8, the line 'CustomerID:75755552142' reads
    '...7575552142' (two of the four 5s merged) with high confidence, and passed as such. The first pass
    now reads at full width; a bench configured to squeeze reads the digit fields' lines again unsqueezed."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.inspect import Inspector

    ins = Inspector(BenchConfig(ocr=OcrConfig(rec_squeeze=squeeze)))
    img, truth = generate_slip(9, "typical", style="diverse")
    t = field_truth(truth)
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    ins.today = lambda: day
    res = ins.inspect(img)
    assert t["customer_id"] == "75755552142"
    assert res.fields["customer_id"] == "75755552142", (res.fields, res.review_reasons)


def test_evaluate__a_second_look_that_is_sure_settles_a_letter_or_digit_doubt() -> None:
    from datetime import date

    from edge_agent.pipelines.bench.inspect import Rules, evaluate
    from edge_agent.pipelines.bench.types import ImageReading, QualityReport, TextLine

    def line(text: str, y: int, sure_of_zero: bool) -> TextLine:
        conf = tuple(0.99 if c == "0" and not sure_of_zero else 1.0 for c in text)
        quad = ((20.0, y), (600.0, y), (600.0, y + 30.0), (20.0, y + 30.0))
        return TextLine(text, 0.99, (20, y, 580, 30), conf, quad)

    texts = [
        "订单号：123456789012",
        "商品编码：EE-1307-WH0-XL",
        "数量：1",
        "退货原因：质量问题",
        "客户ID：KH-2024-12345",
    ]
    texts.append("日期：2025-01-01")
    quality = QualityReport(True, (), 900.0, 180.0, 0.0, True)
    reading = ImageReading(quality, tuple(line(t, 40 * i, False) for i, t in enumerate(texts)), (), "onnx")
    rules = Rules.from_config(BenchConfig())

    def sure(_r: ImageReading, lines: list[TextLine]) -> list[TextLine]:
        return [line(ln.text, ln.box[1], True) for ln in lines]

    def unsure(_r: ImageReading, lines: list[TextLine]) -> list[TextLine]:
        return lines

    codes = {}
    for confirm in (None, unsure, sure):
        res = evaluate(reading, rules, manifest=None, today=date(2025, 1, 2), confirm=confirm)
        # Unsettled, the doubted 0 among the word's letters is shown as its likelier O (normalize.zeros_in_words);
        # the sure second look's 0 stands, and is no disagreement with the O shown.
        assert res.fields["sku"] == ("EE-1307-WH0-XL" if confirm is sure else "EE-1307-WHO-XL")
        codes[confirm] = {(i.code, i.field) for i in res.review_reasons}
    assert ("ambiguous_value", "sku") in codes[None]
    assert ("ambiguous_value", "sku") in codes[unsure]
    assert codes[sure] == set()

    # A second read that gives another value: the full-width one stands, and a person looks.
    def longer(_r: ImageReading, lines: list[TextLine]) -> list[TextLine]:
        return [line(ln.text.replace("KH-2024-12345", "KH-2024-123455"), ln.box[1], True) for ln in lines]

    # (After a squeezed first read, the lines of the fields with digits are all read again.)
    squeezed = replace(reading, rec_squeeze=0.8)
    res = evaluate(squeezed, rules, manifest=None, today=date(2025, 1, 2), confirm=longer)
    assert res.fields["customer_id"] == "KH-2024-123455" and res.needs_review
    [why] = [i for i in res.review_reasons if i.code == "reads_disagree"]
    assert why.field == "customer_id" and "(KH-2024-12345 / KH-2024-123455)" in why.message

    # A second read that loses the value: the first value stands, and a person looks.
    def lost(_r: ImageReading, lines: list[TextLine]) -> list[TextLine]:
        return [line(ln.text.replace("KH-2024-12345", "--"), ln.box[1], True) for ln in lines]

    res = evaluate(squeezed, rules, manifest=None, today=date(2025, 1, 2), confirm=lost)
    assert res.fields["customer_id"] == "KH-2024-12345" and res.needs_review
    assert [(i.code, i.field) for i in res.review_reasons if i.field == "customer_id"] == [
        ("reads_disagree", "customer_id")
    ]  # not also "missing": the first read's value stands


def test_keep_found__a_value_only_the_first_pass_read_is_kept_and_placed_on_the_photo() -> None:
    from datetime import date

    from edge_agent.pipelines.bench.inspect import Rules, judge, keep_found, read_fields
    from edge_agent.pipelines.bench.types import ImageReading, QualityReport, TextLine

    def line(text: str, y: int, conf: float = 1.0) -> TextLine:
        quad = ((20.0, y), (600.0, y), (600.0, y + 30.0), (20.0, y + 30.0))
        return TextLine(text, conf, (20, y, 580, 30), tuple(conf for _ in text), quad)

    texts = ["订单号：123456789012", "商品编码：EE-1300-WHT-XL", "数量：1", "退货原因：质量问题"]
    texts += ["客户ID：KH-2024-12345", "日期：2025-01-01"]
    quality = QualityReport(True, (), 900.0, 180.0, 0.0, True)
    rules = Rules.from_config(BenchConfig())
    day = date(2025, 1, 2)
    # The first pass's label is the photo at half size; the finer pass's is the photo itself.
    half = ((2.0, 0.0, 0.0), (0.0, 2.0, 0.0), (0.0, 0.0, 1.0))
    same = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    first = ImageReading(quality, tuple(line(t, 40 * i) for i, t in enumerate(texts)), (), "onnx", to_photo=half)
    lost = [t.replace("KH-2024-12345", "") for t in texts]
    finer = ImageReading(quality, tuple(line(t, 80 * i) for i, t in enumerate(lost)), (), "onnx", to_photo=same)

    alone = judge(read_fields(finer, rules), rules, manifest=None, today=day)
    assert alone.fields["customer_id"] is None and alone.needs_review

    res = judge(
        keep_found(read_fields(finer, rules), read_fields(first, rules), rules), rules, manifest=None, today=day
    )
    assert res.fields["customer_id"] == "KH-2024-12345", res.review_reasons
    assert not res.needs_review
    # where the first pass read it (line 4 at y 160..190 of the half-size label), in photo pixels
    xs, ys = zip(*res.field_boxes["customer_id"], strict=True)
    assert (min(xs), max(xs), min(ys), max(ys)) == (40.0, 1200.0, 320.0, 380.0)

    # A value the first pass doubted is not taken over: the finer pass's "missing" stands.
    doubtful = replace(first, lines=tuple(line(t, 40 * i, 0.5 if "KH" in t else 1.0) for i, t in enumerate(texts)))
    res = judge(
        keep_found(read_fields(finer, rules), read_fields(doubtful, rules), rules), rules, manifest=None, today=day
    )
    assert res.fields["customer_id"] is None
    assert ("missing_field", "customer_id") in {(i.code, i.field) for i in res.review_reasons}

    # A value the finer pass read differently is its own: nothing is mixed into it.
    other = [t.replace("KH-2024-12345", "KH-2024-12346") for t in texts]
    finer2 = replace(finer, lines=tuple(line(t, 80 * i) for i, t in enumerate(other)))
    res = judge(
        keep_found(read_fields(finer2, rules), read_fields(first, rules), rules), rules, manifest=None, today=day
    )
    assert res.fields["customer_id"] == "KH-2024-12346"


def test_inspector__the_recognisers_runner_up_sends_a_misread_digit_to_review() -> None:
    """Hard tuning slip 871 prints its customer id VIP52075409 in LXGW WenKai Mono, whose zero is dotted:
    the recogniser read that 0 as 8 at 0.71, with 0 the runner-up at 0.29, and VIP52075489 passed. The
    runner-up of the same kind is a doubt now, named for the reviewer."""
    from datetime import date, timedelta

    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.inspect import Inspector

    img, truth = generate_slip(871, "hard", style="diverse")
    t = field_truth(truth)
    assert t["customer_id"] == "VIP52075409"
    ins = Inspector(BenchConfig())
    ins.today = lambda: date.fromisoformat(t["return_date"]) + timedelta(days=1)
    res = ins.inspect(img)
    assert res.needs_review
    assert res.fields["customer_id"] == "VIP52075489"
    [why] = [i for i in res.review_reasons if i.field == "customer_id"]
    assert why.code == "ambiguous_value" and "8 or 0 at character 10" in why.message, why


def test_surer_alt__a_line_read_twice_keeps_the_runner_ups_of_the_surer_read() -> None:
    from edge_agent.pipelines.bench.reader import _surer_alt
    from edge_agent.pipelines.bench.types import TextLine

    first = TextLine("C808", 0.9, (0, 0, 80, 20), (1.0, 0.7, 0.99, 0.6), alt="  0 ")
    assert _surer_alt(first, (1.0, 0.95, 0.9, 0.65), "    ") == "  0 "  # the second surer of 8 and the last 8
    assert _surer_alt(first, (1.0, 0.8, 0.9, 0.5), " 0 0") == " 00 "  # the second surer of the first 8
    assert _surer_alt(replace(first, alt=""), (1.0, 0.6, 0.9, 0.5), " 0 0") == " 0 0"  # only the second's known
    assert _surer_alt(first, (1.0, 0.6, 0.9, 0.5), "") == "  0 "
