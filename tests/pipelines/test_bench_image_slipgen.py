"""The synthetic slip generator: reproducible, varied, and its truth is what the slip says."""

from __future__ import annotations

import re
from datetime import date

import numpy as np
import pytest

from edge_agent.demo.slipgen import REASONS, generate_slip


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
