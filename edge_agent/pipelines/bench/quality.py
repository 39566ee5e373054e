"""The quality gate before OCR: blur, exposure, glare and whether a label is in the photo at all."""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_agent.pipelines.bench.image_config import QualityConfig
from edge_agent.pipelines.bench.preprocess import Quad, find_label_quad
from edge_agent.pipelines.bench.types import QualityReport

log = logging.getLogger(__name__)

GLARE_LEVEL = 250  # grey level treated as blown out
GLARE_PAPER_MAX = 245  # paper at least this bright is white, not a glare spot
INK_SEEN = 110  # print this dark in a blown-out patch was not washed out...
INK_REACH = 6  # ...nor was the paper this many pixels around it (at work_px: about half a line of text)
# ...nor any of a blown-out patch whose pixels are this much print that kept its contrast: the patch is paper
# lit brighter, and print anywhere in it would show. Tuning photos (seeds 650-2049, both face sets): the 7 where
# glare over a value was the only reason a wrong value went to review had patches of 0-0.24 % such print;
# of 86 sent to review for glare alone with all six right, 59 (37 of the 41 clean) had 0.5-14 % (clean 1994:
# its left side lit, its print dark, 22 % of its quantity's line blown out).
INK_SHOWN = 0.005
TILE_PX = 32
# Nothing to read: a photo this dark overall (lens cap, lights off), or this even (empty bench, a wall,
# all white). A slip, even blurred or in dim light, has print on paper: its grey levels spread far wider,
# and a dark photo is not black when a label's outline shows in it (typical tuning slip 445: the whole
# photo at 6, the slip at 23, its print readable), nor when its grey levels spread over COARSE_PX, where a
# sensor's noise averages out and a sheet still shows (hard tuning slip 77: the photo at 11.8, no outline
# found, the slip at about 25 on a bench at 8, spread 7.0; its SKU, quantity and date are readable).
BLACK_LEVEL = 12.0
BLANK_STD = 4.0
COARSE_PX = 80


def blur_variance(gray: NDArray[Any], mask: NDArray[Any] | None = None) -> float:
    """Variance of the Laplacian in the sharpest tiles (90th percentile of 32 px tiles).

    Blank paper has no edges whatever the focus, so a whole-label variance would call a sparse slip
    blurry; the tiles that hold print tell focus apart from emptiness.
    """
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=3)
    h, w = gray.shape
    th, tw = h // TILE_PX, w // TILE_PX
    if th == 0 or tw == 0:
        return float(lap.var())
    tiles = lap[: th * TILE_PX, : tw * TILE_PX].reshape(th, TILE_PX, tw, TILE_PX)
    var = tiles.var(axis=(1, 3))
    if mask is not None:
        inside = mask[: th * TILE_PX, : tw * TILE_PX].reshape(th, TILE_PX, tw, TILE_PX).min(axis=(1, 3)) > 0
        if inside.sum() >= 4:
            var = var[inside]
    return float(np.percentile(var, 90))


def coarse_spread(gray: NDArray[Any]) -> float:
    """The standard deviation of the grey levels with the photo shrunk to COARSE_PX wide: noise averages
    out, a sheet on the bench does not."""
    h, w = gray.shape
    size = (COARSE_PX, max(1, round(h * COARSE_PX / w))) if w > COARSE_PX else (w, h)
    return float(cv2.resize(gray, size, interpolation=cv2.INTER_AREA).std())


def glare_spots(gray: NDArray[Any], label: NDArray[Any]) -> NDArray[Any] | None:
    """Pixels blown out by glare, as a mask of `gray`'s size: those at GLARE_LEVEL on a label whose paper
    (the median of `label`'s pixels) is darker than GLARE_PAPER_MAX, and not within INK_REACH of print
    that keeps its contrast in the blown-out patch (ink darker than INK_SEEN): there the light brightened
    the paper and washed nothing out (clean tuning slip 441 in unseen faces, lit brighter on its left,
    sent its quantity and customer id, whose print stood out, to review), nor in a patch where print keeps its
    contrast over INK_SHOWN of it. None when there are none, or when the paper itself is that white: then a
    value's print still stands out and nothing is hidden."""
    if label.size == 0 or float(np.median(label)) >= GLARE_PAPER_MAX:
        return None
    blown = (gray >= GLARE_LEVEL).astype(np.uint8)
    patch = cv2.morphologyEx(blown, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))  # with the print inside it
    ink = ((gray < INK_SEEN) & (patch > 0)).astype(np.uint8)
    seen = cv2.dilate(ink, np.ones((2 * INK_REACH + 1, 2 * INK_REACH + 1), np.uint8)) > 0
    n, patches = cv2.connectedComponents(patch, connectivity=8)
    lit = np.bincount(patches.ravel(), weights=ink.ravel(), minlength=n) >= INK_SHOWN * np.bincount(patches.ravel())
    lit[0] = False  # outside every patch
    spots = np.where(seen | lit[patches], 0, blown).astype(np.uint8)
    return spots if spots.any() else None


def assess(image_bgr: NDArray[Any], cfg: QualityConfig) -> tuple[QualityReport, Quad | None]:
    """Measure the photo: `ok` False with reasons when something may spoil the read (hints, acted on only
    when the read falls short), `blank` when there is nothing on it to read at all.

    Also returns the label's corners in photo pixels (or None) so preprocessing need not look again.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8 or min(image_bgr.shape[:2]) < 16:
        raise ValueError(
            f"quality gate: expected an 8-bit BGR image of at least 16x16, got shape "
            f"{image_bgr.shape} dtype {image_bgr.dtype}"
        )
    scale = min(1.0, cfg.work_px / max(image_bgr.shape[:2]))
    small = cv2.resize(image_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image_bgr
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    quad_small = find_label_quad(small)
    mask: NDArray[Any] | None = None
    if quad_small is not None:
        mask = np.zeros(gray.shape, np.uint8)
        cv2.fillConvexPoly(mask, quad_small.astype(np.int32), 255)
        mask = cv2.erode(mask, np.ones((9, 9), np.uint8))  # keep the label's edge out of the statistics
        if not mask.any():
            mask = None
    region = gray[mask > 0] if mask is not None else gray.ravel()
    brightness = float(region.mean())
    glare_frac = float((region >= GLARE_LEVEL).mean())
    spots = glare_spots(gray, region)
    blur_var = blur_variance(gray, mask)
    reasons = []
    label_found = quad_small is not None
    blank = None
    if float(gray.mean()) < BLACK_LEVEL and not label_found and coarse_spread(gray) < BLANK_STD:
        blank = f"the photo is black (brightness {gray.mean():.0f}): lens cap on or no light?"
    elif float(gray.std()) < BLANK_STD and not label_found:
        blank = "nothing on the photo (an even surface): put the slip under the camera"
    if cfg.require_label and not label_found:
        reasons.append("no label found: put the slip flat and whole inside the frame")
    if brightness < cfg.min_brightness:
        reasons.append(f"too dark: brightness {brightness:.1f} < {cfg.min_brightness:.0f}")
    if brightness > cfg.max_brightness:
        reasons.append(f"overexposed: brightness {brightness:.1f} > {cfg.max_brightness:.0f}")
    if glare_frac > cfg.max_glare_frac:
        reasons.append(
            f"glare on the label: {glare_frac:.0%} blown out > {cfg.max_glare_frac:.0%}; tilt the slip or the light"
        )
    if blur_var < cfg.min_blur_var:
        reasons.append(f"blurry: sharpness {blur_var:.0f} < {cfg.min_blur_var:.0f}; hold still and refocus")
    if not cfg.enabled:
        reasons = []
    report = QualityReport(
        ok=not reasons,
        reasons=tuple(reasons),
        blur_var=round(blur_var, 1),
        brightness=round(brightness, 1),
        glare_frac=round(glare_frac, 4),
        label_found=label_found,
        blank=blank,
        glare_spots=None if spots is None else (spots, scale),
    )
    quad = None if quad_small is None else quad_small / scale
    return report, quad
