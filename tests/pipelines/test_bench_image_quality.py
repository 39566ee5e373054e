"""Quality gate and preprocessing on generated slip photos: sharp ones pass, bad ones are refused with the reason."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge_agent.demo.slipgen import generate_slip
from edge_agent.pipelines.bench.image_config import PreprocessConfig, QualityConfig
from edge_agent.pipelines.bench.preprocess import estimate_skew_deg, find_label_quad, preprocess, rotate
from edge_agent.pipelines.bench.quality import assess


@pytest.mark.parametrize("tier", ["clean", "typical", "hard"])
def test_assess__generated_photos_pass_and_label_is_located(tier: str) -> None:
    located = 0
    for seed in range(900, 904):
        img, truth = generate_slip(seed, tier)
        report, quad = assess(img, QualityConfig())
        assert report.ok, report.reasons
        assert report.label_found
        assert quad is not None
        diag = float(np.hypot(*img.shape[:2]))
        located += float(np.abs(quad - np.array(truth["label_quad"])).max()) < 0.03 * diag
    assert located >= 3


@pytest.mark.parametrize(
    ("defect", "reason"),
    [
        ("blur", "blurry: sharpness"),
        ("dark", "too dark"),
        ("overexposed", "overexposed"),
        ("glare", "glare on the label"),
        ("no_label", "no label found"),
    ],
)
def test_assess__bad_photo_flagged_with_reason(defect: str, reason: str) -> None:
    for seed in (1, 2):
        img, _ = generate_slip(seed, "typical", defect=defect)
        report, _ = assess(img, QualityConfig())
        assert not report.ok
        assert any(r.startswith(reason) for r in report.reasons), report.reasons


def test_assess__disabled_gate_passes_everything() -> None:
    img, _ = generate_slip(1, "typical", defect="blur")
    report, _ = assess(img, QualityConfig(enabled=False))
    assert report.ok
    assert report.blur_var < QualityConfig().min_blur_var  # still measured


def test_assess__not_an_image_is_named() -> None:
    with pytest.raises(ValueError, match=r"expected an 8-bit BGR image.*shape \(10, 10\)"):
        assess(np.zeros((10, 10), np.uint8), QualityConfig())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(np.uint8, st.tuples(st.integers(16, 120), st.integers(16, 120), st.just(3))))
def test_assess__any_pixels_give_a_report(img: np.ndarray) -> None:
    report, quad = assess(img, QualityConfig())
    assert report.ok == (not report.reasons)
    assert quad is None or quad.shape == (4, 2)
    assert 0 <= report.glare_frac <= 1


def test_find_label_quad__none_on_empty_bench() -> None:
    img, _ = generate_slip(3, "clean", defect="no_label")
    assert find_label_quad(cv2.resize(img, (640, 480))) is None


@pytest.mark.parametrize("deg", [-6.0, -2.5, 3.0, 7.0])
def test_estimate_skew_deg__undoes_a_known_rotation(deg: float) -> None:
    img, truth = generate_slip(11, "clean")
    label = preprocess(
        img, PreprocessConfig(deskew=False, normalize_contrast=False), np.array(truth["label_quad"], np.float32)
    ).image
    turned = rotate(label, deg)
    est = estimate_skew_deg(turned, 10)
    assert abs(est + deg) < 0.8, est
    assert abs(estimate_skew_deg(rotate(turned, est), 10)) < 0.8


def test_preprocess__each_step_switchable_and_recorded() -> None:
    img, _ = generate_slip(5, "typical")
    all_on = PreprocessConfig(denoise=True, sharpen=True, binarize="adaptive")
    out = preprocess(img, all_on, keep_steps=True)
    names = [n for n, _ in out.steps]
    assert names[:3] == ["crop", "gray", "denoise"]
    assert {"contrast", "sharpen", "binarize"} <= set(names)
    assert set(np.unique(out.image)) <= {0, 255}
    assert out.crop is not None
    assert out.crop.shape[:2] == out.image.shape[:2]
    off = PreprocessConfig(crop_label=False, deskew=False, normalize_contrast=False, label_px=800)
    plain = preprocess(img, off, keep_steps=True)
    assert [n for n, _ in plain.steps] == ["gray"]
    assert max(plain.image.shape) == 800
    assert plain.crop is None


def test_preprocess__crop_never_upsamples() -> None:
    img, truth = generate_slip(2, "hard")
    quad = np.array(truth["label_quad"], np.float32)
    out = preprocess(img, PreprocessConfig(label_px=4000), quad)
    edge = float(max(np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[3] - quad[0])))
    assert max(out.image.shape) <= edge + 2
