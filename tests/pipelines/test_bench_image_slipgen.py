"""The synthetic slip generator: reproducible, varied, and its truth is what the slip says."""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import pytest
import zxingcpp

from edge_agent.demo.slipgen import (
    FIELDS,
    REASONS,
    draw_slip,
    field_truth,
    generate_slip,
    split_of,
    split_seeds,
)
from edge_agent.demo.slipgen import layouts as slip_layouts
from edge_agent.demo.slipgen.__main__ import main as slipgen_main

TEMPLATE = Path(__file__).parents[2] / "config" / "templates" / "default.toml"


def test_generate_slip__same_seed_same_photo_and_truth() -> None:
    a, ta = generate_slip(42, "typical")
    b, tb = generate_slip(42, "typical")
    assert ta == tb
    assert np.array_equal(a, b)
    c, tc = generate_slip(43, "typical")
    assert tc["order_no"] != ta["order_no"]
    assert a.shape == c.shape == (1200, 1600, 3)


def test_generate_slip__truth_formats() -> None:
    layouts = set()
    for seed in range(12):
        _, t = generate_slip(seed, "clean")
        layouts.add(t["layout"])
        assert re.fullmatch(r"\d{12}|\d{19}|\d{6}-\d{15}", t["order_no"])
        assert isinstance(t["quantity"], int)
        assert t["quantity"] >= 1
        assert t["reason_category"] in REASONS
        assert t["reason"].startswith(t["reason_category"])
        assert date.fromisoformat(t["return_date"])
        y, m, d = t["return_date"].split("-")
        assert t["return_date_text"] in (f"{y}-{m}-{d}", f"{y}/{m}/{d}", f"{y}年{m}月{d}日")
        assert re.fullmatch(r"1[3-9]\d{9}", t["phone"])
        assert len(t["label_quad"]) == 4
    assert len(layouts) >= 3


def test_generate_slip__bad_tier_and_defect_named() -> None:
    with pytest.raises(ValueError, match="tier: expected one of clean, typical, hard, got 'easy'"):
        generate_slip(1, "easy")
    with pytest.raises(ValueError, match=r"defect: expected one of blur, .*got 'smudge'"):
        generate_slip(1, "clean", defect="smudge")
    with pytest.raises(ValueError, match="style: expected one of classic, diverse, got 'fancy'"):
        generate_slip(1, "clean", style="fancy")
    with pytest.raises(ValueError, match=r"layout: expected one of colon_lines, .*got 'poster'"):
        generate_slip(1, "clean", style="diverse", layout="poster")


# ---------------------------------------------------------------- diverse style


def test_generate_slip__diverse_deterministic_per_seed_and_tier() -> None:
    a, ta = generate_slip(5, "hard", style="diverse")
    b, tb = generate_slip(5, "hard", style="diverse")
    assert np.array_equal(a, b)
    assert ta == tb
    assert a.shape == (1200, 1600, 3)
    # one seed is one slip: the tiers photograph the same content differently
    c, tc = generate_slip(5, "clean", style="diverse")
    assert field_truth(tc) == field_truth(ta)
    assert tc["layout"] == ta["layout"]
    assert not np.array_equal(a, c)
    _, td = generate_slip(6, "hard", style="diverse")
    assert field_truth(td) != field_truth(ta)


def test_split_of__tune_and_heldout_disjoint() -> None:
    tune = split_seeds("tune", 50)
    held = split_seeds("heldout", 50)
    assert set(tune).isdisjoint(held)
    assert {split_of(s) for s in tune} == {"tune"}
    assert {split_of(s) for s in held} == {"heldout"}
    assert held[0] == 1_000_000
    assert split_seeds("tune", 3, start=10) == range(10, 13)
    with pytest.raises(ValueError, match="outside the tune split"):
        split_seeds("tune", 10, start=999_995)
    with pytest.raises(ValueError, match="split: expected one of tune, heldout, got 'test'"):
        split_seeds("test", 1)
    _, t = generate_slip(1_000_003, "clean", style="diverse")
    assert t["split"] == "heldout"


def test_generate_slip__diverse_covers_layouts_formats_and_fonts() -> None:
    seen: dict[str, Counter[str]] = {k: Counter() for k in ("layout", "font", "platform")}
    units = set()
    for seed in range(80):
        drawn, c = draw_slip(seed)
        seen["layout"][drawn.layout] += 1
        seen["font"][drawn.font] += 1
        seen["platform"][c.platform] += 1
        units.add(re.sub(r"\d+", "N", c.quantity_text))
    assert set(seen["layout"]) == set(slip_layouts.LAYOUTS)
    assert len(seen["font"]) >= 8
    assert len(seen["platform"]) >= 7
    assert {"N", "N件", "Npcs", "N个"} <= units


def test_draw_slip__unseen_fonts_draw_the_same_slip_in_faces_never_tuned_on() -> None:
    seen_names = {slip_layouts.font_name(f) for f in slip_layouts.FONTS}
    fonts: Counter[str] = Counter()
    for seed in range(40):
        drawn, c = draw_slip(seed, fonts="unseen")
        plain, same = draw_slip(seed)
        assert c == same  # only the face changes: the content a seed draws is the content
        assert drawn.font not in seen_names
        assert np.asarray(drawn.image).shape != np.asarray(plain.image).shape or drawn.image != plain.image
        fonts[drawn.font] += 1
    assert len(fonts) >= 10
    with pytest.raises(ValueError, match="fonts: expected one of seen, unseen, got 'other'"):
        generate_slip(1, "clean", style="diverse", fonts="other")
    with pytest.raises(ValueError, match="only the diverse style"):
        generate_slip(1, "clean", fonts="unseen")


def test_generate_slip__diverse_labels_are_open_ended() -> None:
    """Most printed labels are in no synonym list of the shipped template: the matcher must generalise."""
    synonyms = {
        k: {s.casefold() for s in v["labels"]}
        for k, v in tomllib.loads(TEMPLATE.read_text(encoding="utf-8"))["fields"].items()
    }
    printed = [(k, lab) for seed in range(60) for k, lab in draw_slip(seed)[0].printed_labels.items()]
    assert {k for k, _ in printed} == set(FIELDS)
    outside = [lab for k, lab in printed if lab.strip("【】[]").casefold() not in synonyms[k]]
    assert len(outside) / len(printed) > 0.4
    assert any(" " in lab and not lab.isascii() for lab in outside)  # 订 单 号
    assert any(any("\uff01" <= ch <= "\uff5e" for ch in lab) for lab in outside)  # full-width Latin


def test_generate_slip__diverse_skus_hold_confusable_pairs() -> None:
    skus = [draw_slip(seed)[1].sku for seed in range(200)]
    both = [s for s in skus if set("0O") <= set(s) or set("1I") <= set(s)]
    assert len(both) >= 5
    assert any(re.search(r"[_/.]", s) for s in skus)


def test_generate_slip__diverse_barcode_reads_back_as_truth() -> None:
    """zxing-cpp (not our encoder) reads the order number's barcode back from the photo."""
    read = carried = 0
    for seed in range(10):
        img, t = generate_slip(seed, "clean", style="diverse")
        order = [b for b in t["barcodes"] if b["role"] == "order_no"]
        assert all(b["text"] == t["order_no"] for b in order)
        assert order or t["layout"] == "waybill"  # a courier waybill may carry only its own number
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        texts = {r.text for r in zxingcpp.read_barcodes(grey)}
        carried += bool(order)
        read += t["order_no"] in texts
        assert texts <= {b["text"] for b in t["barcodes"]}  # nothing decoded that the truth does not list
    assert carried >= 8
    assert read >= carried - 1


def _fold(text: str) -> str:
    # what OCR may legitimately confuse on a flat, sharp slip: width, case, spaces and confusable glyphs
    text = "".join(chr(ord(c) - 0xFEE0) if "\uff01" <= c <= "\uff5e" else c for c in text).upper()
    return re.sub(r"[\s_:：]", "", text).translate(str.maketrans("OISBZG", "015826"))


@pytest.mark.parametrize("layout", slip_layouts.LAYOUTS)
def test_draw_slip__every_layout_prints_the_truth(layout: str) -> None:
    """Stock RapidOCR on the flat slip finds each of the six values the truth says are printed."""
    from rapidocr import RapidOCR

    engine = RapidOCR(params={"Global.log_level": "error"})
    drawn, c = draw_slip(11, layout)
    assert drawn.layout == layout
    out = engine(cv2.cvtColor(np.asarray(drawn.image), cv2.COLOR_RGB2BGR))
    text = _fold("".join(out.txts or ()))
    values = (c.order_no, c.sku, c.quantity_text, c.reason, c.customer_id, c.return_date_text)
    missing = [v for v in values if _fold(v) not in text]
    assert not missing, (layout, missing, out.txts)


def test_check_fonts__missing_font_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slip_layouts, "FONTS", (("/nonexistent/x.ttf", "fonts-example-cjk", 0),))
    with pytest.raises(RuntimeError, match="expected the Debian packages fonts-example-cjk"):
        slip_layouts.check_fonts()


def test_slipgen_cli__writes_photos_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert slipgen_main(["--split", "tune", "--tier", "clean", "--n", "2", "--start", "7", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "truth.json").read_text(encoding="utf-8"))
    assert [r["file"] for r in rows] == ["tune_clean_7.png", "tune_clean_8.png"]
    img = cv2.imread(str(tmp_path / rows[0]["file"]))
    expected, truth = generate_slip(7, "clean", style="diverse")
    assert np.array_equal(img, expected)  # PNG: the same pixels as the API gives
    assert rows[0]["fields"] == field_truth(truth)
    assert rows[0]["fields"]["reason"] in REASONS
    # the held-out split is refused unless the caller says it is the benchmark
    assert slipgen_main(["--split", "heldout", "--n", "1", "--out", str(tmp_path / "h")]) == 2
    assert "held-out photos are for benchmarks/bench_ocr.py only" in capsys.readouterr().err
    assert not (tmp_path / "h").exists()


def test_generate_slip__diverse_no_label_defect_is_the_empty_bench() -> None:
    slip, t = generate_slip(3, "typical", style="diverse")
    empty, te = generate_slip(3, "typical", "no_label", style="diverse")
    assert te["defect"] == "no_label" and field_truth(te) == field_truth(t)
    quad = np.array(t["label_quad"], np.float32)
    mask = np.zeros(slip.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, quad.astype(np.int32), 255)
    # where the slip lay, the photo with it is far brighter than the bench without it
    assert slip[mask > 0].mean() > empty[mask > 0].mean() + 40
    assert not zxingcpp.read_barcodes(cv2.cvtColor(empty, cv2.COLOR_BGR2GRAY))
