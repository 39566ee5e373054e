"""Glare that hides part of a value."""

from __future__ import annotations

from datetime import date, timedelta

from edge_agent.demo.slipgen import generate_slip
from edge_agent.pipelines.bench.config import BenchConfig
from edge_agent.pipelines.bench.inspect import Inspector
from edge_agent.pipelines.bench.quality import assess


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
