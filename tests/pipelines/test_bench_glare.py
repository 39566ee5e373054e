"""Glare that hides part of a value."""

from __future__ import annotations

from datetime import date, timedelta

import cv2
import numpy as np

from edge_agent.demo.slipgen import generate_slip
from edge_agent.pipelines.bench.config import BenchConfig
from edge_agent.pipelines.bench.fields import FieldValue
from edge_agent.pipelines.bench.inspect import Inspector, glare_over_values
from edge_agent.pipelines.bench.quality import GLARE_LEVEL, assess, glare_spots
from edge_agent.pipelines.bench.types import QualityReport


def test_inspector__glare_hiding_the_start_of_a_value_sends_it_to_review() -> None:
    """Seed 24 (typical): a glare spot covers the start of customer id C5366281069; the rest reads 1069,
    which fits the pattern and used to pass. Whether what is left is read (glare over the value) or not (the
    value not found, glare the likely cause), the customer id goes to review with the glare named."""
    ins = Inspector(BenchConfig())
    img, t = generate_slip(24, "typical", style="diverse")
    day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
    ins.today = lambda: day
    res = ins.inspect(img)
    assert res.needs_review
    why = [i for i in res.review_reasons if i.field == "customer_id"]
    assert why and all("glare" in i.message for i in why)
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


def test_glare_spots__blown_paper_around_print_that_kept_its_contrast_is_not_glare() -> None:
    """Clean tuning slip 441 (unseen faces) was lit brighter on its left: the paper there is blown out, yet
    its print stands out dark. Its quantity and customer id went to review for glare over the value; a
    glare spot washes the print out with the paper (seed 24 above)."""
    cfg = BenchConfig().quality
    img, _ = generate_slip(441, "clean", style="diverse", fonts="unseen")
    q, _ = assess(img, cfg)
    assert q.glare_spots is not None  # the bare paper at the label's left edge still counts
    spots, k = q.glare_spots
    gray = cv2.cvtColor(cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    # the blown pixels among the print are no spots
    assert spots.sum() < 0.9 * (gray >= GLARE_LEVEL).sum()
    ins = Inspector(BenchConfig())
    ins.today = lambda: date(2025, 7, 20)
    res = ins.inspect(img)
    assert res.fields["customer_id"] == "HY94540191495" and res.fields["quantity"] == 1
    assert not [i for i in res.review_reasons if i.code == "glare_on_value"]


def test_glare_spots__a_lit_patch_whose_print_shows_is_no_glare_a_washed_one_is() -> None:
    """A blown-out patch with print dark in it here and there is paper lit brighter: print anywhere in it
    would show, though parts of it lie beyond INK_REACH of any. One whose print is gone but for a speck at
    its rim is glare, all but the speck's surroundings."""
    gray = np.full((300, 600), 200, np.uint8)
    gray[50:150, 50:300] = 252  # lit, with two short words of thin dark strokes in it (under 1 % of the patch)
    for x in range(60, 110, 6):
        gray[70:80, x : x + 2] = 40
        gray[120:130, x + 140 : x + 142] = 40
    gray[180:280, 350:550] = 252  # washed out, a speck of print left at its rim
    gray[180:183, 350:356] = 60
    spots = glare_spots(gray, gray.ravel())
    assert spots is not None
    assert not spots[50:150, 50:300].any()
    assert spots[180:280, 350:550].mean() > 0.9
    assert not spots[180:183, 350:356].any()


def test_inspector__a_slip_lit_brighter_on_one_side_has_no_glare_over_its_values() -> None:
    """Clean tuning slip 1994 (the generator's faces) is lit brighter on its left, its print dark there: its
    quantity 3个 went to review for glare over 22 % of its line, and 59 of 86 tuning photos sent to review
    for glare alone with all six right were like it."""
    img, t = generate_slip(1994, "clean", style="diverse")
    ins = Inspector(BenchConfig())
    ins.today = lambda: date.fromisoformat(t["return_date"]) + timedelta(days=1)
    res = ins.inspect(img)
    assert res.fields["quantity"] == t["quantity"] == 3
    assert not [i for i in res.review_reasons if i.code == "glare_on_value"]


def test_glare_over_values__glare_past_a_value_counts_before_its_label_does_not() -> None:
    """A line '客户编号：C5366281069' 400 px wide, the value in its right half: a glare spot just left of the
    box hides none of the value, one just right of it may hide its end."""
    quad = [[100.0, 100.0], [500.0, 100.0], [500.0, 130.0], [100.0, 130.0]]
    values = {"customer_id": FieldValue("customer_id", "C5366281069", 0.99)}

    def issues(x0: int, x1: int) -> list[str]:
        spots = np.zeros((300, 700), np.uint8)
        spots[95:135, x0:x1] = 1
        q = QualityReport(True, (), 500.0, 200.0, 0.02, True, glare_spots=(spots, 1.0))
        got = glare_over_values({"customer_id": quad}, values, q, {"customer_id": (False, True)})
        return [i.code for i in got]

    assert issues(60, 100) == []
    assert issues(500, 540) == ["glare_on_value"]
    # where the value's ends are not known, both sides count
    spots = np.zeros((300, 700), np.uint8)
    spots[95:135, 60:100] = 1
    q = QualityReport(True, (), 500.0, 200.0, 0.02, True, glare_spots=(spots, 1.0))
    assert [i.code for i in glare_over_values({"customer_id": quad}, values, q)] == ["glare_on_value"]
