"""OpenCV steps from a photo to an upright label image: find and crop the label, grey, denoise, deskew, contrast."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_agent.pipelines.bench.image_config import PreprocessConfig

log = logging.getLogger(__name__)

Quad = NDArray[Any]  # 4 x 2 corners tl, tr, br, bl in photo pixels


@dataclass(frozen=True, slots=True)
class Prepared:
    """The label image handed to OCR, and what was done to get it (intermediates kept for --debug-dir)."""

    image: NDArray[Any]
    quad: Quad | None
    skew_deg: float
    crop: NDArray[Any] | None  # the label cut from the photo, in colour, before any other step
    steps: tuple[tuple[str, NDArray[Any]], ...] = field(default=())
    # 3x3 homography from `image` pixels back to the photo's, so what OCR found can be shown on the photo
    to_photo: NDArray[Any] | None = None


def order_quad(pts: NDArray[Any]) -> Quad:
    """tl, tr, br, bl of four corners of a label turned less than 45 degrees."""
    pts = np.asarray(pts, np.float32).reshape(4, 2)
    s = pts.sum(axis=1)
    d = pts[:, 1] - pts[:, 0]
    return np.array([pts[np.argmin(s)], pts[np.argmin(d)], pts[np.argmax(s)], pts[np.argmax(d)]], np.float32)


def _quad_of_mask(mask: NDArray[Any]) -> tuple[Quad, float] | None:
    """Four corners of the largest sheet-like region of a mask, and that region's area."""
    h, w = mask.shape
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    c = max(contours, key=cv2.contourArea)
    area = cv2.contourArea(c)
    if not 0.04 * h * w <= area <= 0.97 * h * w:
        return None
    hull = cv2.convexHull(c)
    if area < 0.85 * cv2.contourArea(hull):  # not a sheet: a blob of light or clutter
        return None
    peri = cv2.arcLength(hull, True)
    quad = None
    for eps in (0.02, 0.03, 0.05, 0.08):
        approx = cv2.approxPolyDP(hull, eps * peri, True)
        if len(approx) == 4:
            quad = approx.reshape(4, 2).astype(np.float32)
            break
    if quad is None:  # rounded or torn corners: the minimum-area rectangle is close enough
        quad = cv2.boxPoints(cv2.minAreaRect(hull)).astype(np.float32)
    return order_quad(quad), float(area)


def find_label_quad(small_bgr: NDArray[Any]) -> Quad | None:
    """The corners of the slip on the bench in a small BGR photo, or None when there is no sheet in view.

    Two cues, and the larger sheet wins: paper is brighter than the bench under the same light
    (Otsu's threshold), and the sheet's outline is the strongest closed colour edge (which also keeps
    a merchant's coloured header band, darker than the paper, inside the label).
    """
    gray = cv2.cvtColor(small_bgr, cv2.COLOR_BGR2GRAY) if small_bgr.ndim == 3 else small_bgr
    h, w = gray.shape
    k = max(3, (min(h, w) // 40) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    blur = cv2.GaussianBlur(gray, (5, 5), 0)
    _, bright = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # close the holes that printed text and barcodes leave in the paper
    bright = cv2.morphologyEx(bright, cv2.MORPH_CLOSE, kernel)
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, kernel)
    candidates = [q for q in (_quad_of_mask(bright),) if q is not None]
    colour = cv2.GaussianBlur(small_bgr if small_bgr.ndim == 3 else gray, (5, 5), 0)
    gx = cv2.Sobel(colour, cv2.CV_16S, 1, 0)
    gy = cv2.Sobel(colour, cv2.CV_16S, 0, 1)
    mag = cv2.addWeighted(cv2.convertScaleAbs(gx), 0.5, cv2.convertScaleAbs(gy), 0.5, 0)
    if mag.ndim == 3:
        mag = mag.max(axis=2)
    _, edges = cv2.threshold(mag, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    edges = cv2.morphologyEx(edges, cv2.MORPH_CLOSE, kernel)
    outline, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(edges)
    cv2.drawContours(filled, outline, -1, 255, cv2.FILLED)
    filled = cv2.morphologyEx(filled, cv2.MORPH_OPEN, kernel)
    q = _quad_of_mask(filled)
    if q is not None:
        candidates.append(q)
    if not candidates:
        return None
    return max(candidates, key=lambda qa: qa[1])[0]


def label_warp(quad: Quad, long_px: int) -> tuple[NDArray[Any], int, int]:
    """The photo -> label homography for a quad, and the label's width and height."""
    tl, tr, br, bl = quad
    w = max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl))
    h = max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr))
    scale = min(1.0, long_px / max(float(w), float(h), 1.0))
    ow, oh = max(int(w * scale), 16), max(int(h * scale), 16)
    dst = np.array([[0, 0], [ow - 1, 0], [ow - 1, oh - 1], [0, oh - 1]], np.float32)
    return cv2.getPerspectiveTransform(quad.astype(np.float32), dst), ow, oh


def warp_label(image: NDArray[Any], quad: Quad, long_px: int) -> NDArray[Any]:
    """The label cut out along its quad and made rectangular; never larger than its size in the photo."""
    m, ow, oh = label_warp(quad, long_px)
    return cv2.warpPerspective(image, m, (ow, oh), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def estimate_skew_deg(gray: NDArray[Any], max_deg: float) -> float:
    """Residual skew of the text lines in degrees (positive = clockwise), from minimum-area rectangles
    around text lines smeared horizontally; 0 when there is nothing line-like to measure."""
    h, w = gray.shape
    scale = min(1.0, 800 / max(h, w))
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    bw = cv2.adaptiveThreshold(small, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 25, 15)
    kx = max(9, small.shape[1] // 40)
    lines = cv2.morphologyEx(bw, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (kx, 3)))
    contours, _ = cv2.findContours(lines, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    angles, weights = [], []
    for c in contours:
        (_, _), (rw, rh), ang = cv2.minAreaRect(c)
        if rw < rh:
            rw, rh, ang = rh, rw, ang - 90
        if rw < 6 * rh or rw < small.shape[1] / 10:
            continue
        ang = (ang + 90) % 180 - 90
        if abs(ang) <= max_deg:
            angles.append(ang)
            weights.append(rw)
    if len(angles) < 2:
        return 0.0
    order = np.argsort(angles)
    a, wts = np.asarray(angles)[order], np.asarray(weights)[order]
    cum = np.cumsum(wts)
    return float(a[np.searchsorted(cum, cum[-1] / 2)])  # weighted median: long lines count more


def rotate(gray: NDArray[Any], deg: float) -> NDArray[Any]:
    h, w = gray.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    return cv2.warpAffine(gray, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _enhance(gray: NDArray[Any], cfg: PreprocessConfig, keep: Callable[[str, NDArray[Any]], None]) -> NDArray[Any]:
    """Contrast, sharpening and binarisation, each as configured."""
    if cfg.normalize_contrast:
        tiles = max(2, min(8, max(gray.shape) // 160))
        gray = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(tiles, tiles)).apply(gray)
        keep("contrast", gray)
    if cfg.sharpen:
        blur = cv2.GaussianBlur(gray, (0, 0), 1.2)
        gray = cv2.addWeighted(gray, 1.6, blur, -0.6, 0)
        keep("sharpen", gray)
    if cfg.binarize == "otsu":
        _, gray = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        keep("binarize", gray)
    elif cfg.binarize == "adaptive":
        block = max(15, (max(gray.shape) // 40) | 1)
        gray = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, block, 12)
        keep("binarize", gray)
    return gray


def preprocess(
    image_bgr: NDArray[Any], cfg: PreprocessConfig, quad: Quad | None = None, keep_steps: bool = False
) -> Prepared:
    """The label image for OCR: cropped along `quad` (found here when None), grey, cleaned and upright."""
    steps: list[tuple[str, NDArray[Any]]] = []

    def keep(name: str, img: NDArray[Any]) -> None:
        if keep_steps:
            steps.append((name, img))

    img = image_bgr
    crop = None
    to_label = np.eye(3)  # photo -> the image handed on, step by step
    if cfg.crop_label:
        if quad is None:
            s = min(1.0, 640 / max(image_bgr.shape[:2]))
            q = find_label_quad(cv2.resize(image_bgr, None, fx=s, fy=s, interpolation=cv2.INTER_AREA))
            quad = None if q is None else q / s
        if quad is not None:
            m, ow, oh = label_warp(quad, cfg.label_px)
            img = crop = cv2.warpPerspective(
                image_bgr, m, (ow, oh), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE
            )
            to_label = m
            keep("crop", img)
    if not cfg.crop_label or quad is None:
        s = min(1.0, cfg.label_px / max(img.shape[:2]))
        if s < 1:
            img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            to_label = np.diag([s, s, 1.0])
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    keep("gray", gray)
    if cfg.denoise:
        gray = cv2.fastNlMeansDenoising(gray, None, h=7, templateWindowSize=7, searchWindowSize=15)
        keep("denoise", gray)
    skew = 0.0
    if cfg.deskew:
        skew = estimate_skew_deg(gray, cfg.max_deskew_deg)
        if abs(skew) >= 0.3:
            h, w = gray.shape[:2]
            to_label = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), skew, 1.0), [0, 0, 1]]) @ to_label
            gray = rotate(gray, skew)
            keep("deskew", gray)
    gray = _enhance(gray, cfg, keep)
    return Prepared(gray, quad, skew, crop, tuple(steps), np.linalg.inv(to_label))
