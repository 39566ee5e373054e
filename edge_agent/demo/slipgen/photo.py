"""A flat slip into a bench photo: augraphy paper/print effects, placement on a desk, albumentations camera effects."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

FRAME_W, FRAME_H = 1600, 1200

_MISSING = (
    "slipgen: the diverse style needs augraphy and albumentations (bench/test dependencies): pip install -e '.[test]'"
)


@dataclass(frozen=True, slots=True)
class Tier:
    """How hard a tier makes the photo (see the package docstring)."""

    rotation_deg: float
    perspective: float  # corner jitter as a fraction of the slip size
    fill: tuple[float, float]  # slip height as a fraction of the frame height
    paper_effects: int  # how many augraphy paper/ink effects at most
    tape_p: float
    glare_p: float  # augraphy ReflectedLight on the slip
    shadow_p: float
    dim_p: float
    blur: tuple[float, float]  # Gaussian sigma range; motion/defocus blur chosen sometimes in hard
    noise_std: tuple[float, float]  # as a fraction of 255
    jpeg: tuple[int, int]


TIERS = {
    "clean": Tier(3.0, 0.01, (0.8, 0.92), 1, 0.0, 0.0, 0.0, 0.0, (0.1, 0.4), (0.0, 0.01), (88, 95)),
    "typical": Tier(12.0, 0.035, (0.7, 0.88), 2, 0.25, 0.3, 0.25, 0.2, (0.4, 1.0), (0.01, 0.025), (70, 88)),
    "hard": Tier(25.0, 0.07, (0.6, 0.82), 3, 0.5, 0.7, 0.5, 0.5, (0.8, 1.6), (0.02, 0.04), (50, 70)),
}


def _paper_effects(
    rng: random.Random, slip_rgb: NDArray[Any], tier: str, thermal: bool, defect: str | None
) -> tuple[NDArray[Any], list[str]]:
    """augraphy ink and paper effects on the flat slip; deterministic for the rng's state."""
    try:
        import augraphy as ag
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(_MISSING) from exc
    spec = TIERS[tier]
    # (name, factory, allowed in clean): mild ink and paper effects only in the clean tier
    menu: list[tuple[str, Any, bool]] = [
        (
            "InkBleed",
            lambda: ag.InkBleed(intensity_range=(0.1, 0.3), kernel_size=(3, 3), severity=(0.2, 0.4), p=1),
            True,
        ),
        ("BrightnessTexturize", lambda: ag.BrightnessTexturize(texturize_range=(0.9, 0.99), deviation=0.03, p=1), True),
        ("SubtleNoise", lambda: ag.SubtleNoise(subtle_range=8, p=1), True),
        ("NoiseTexturize", lambda: ag.NoiseTexturize(sigma_range=(2, 5), turbulence_range=(2, 5), p=1), True),
        ("ColorPaper", lambda: ag.ColorPaper(hue_range=(0, 255), saturation_range=(5, 25), p=1), True),
        (
            "LowInkRandomLines",
            lambda: ag.LowInkRandomLines(count_range=(3, 10), use_consistent_lines=False, p=1),
            False,
        ),
        ("LowInkPeriodicLines", lambda: ag.LowInkPeriodicLines(count_range=(2, 5), period_range=(16, 32), p=1), False),
        ("InkMottling", lambda: ag.InkMottling(ink_mottling_alpha_range=(0.2, 0.35), p=1), False),
        ("DirtyDrum", lambda: ag.DirtyDrum(line_width_range=(1, 3), noise_intensity=0.3, p=1), False),
        (
            "BleedThrough",
            lambda: ag.BleedThrough(intensity_range=(0.05, 0.15), alpha=0.15, offsets=(10, 20), p=1),
            False,
        ),
        (
            "NoisyLines",
            lambda: ag.NoisyLines(noisy_lines_number_range=(2, 5), noisy_lines_thickness_range=(1, 2), p=1),
            False,
        ),
        ("LightingGradient", lambda: ag.LightingGradient(max_brightness=255, min_brightness=120, p=1), False),
    ]
    if thermal:  # receipt printers fade in streaks
        menu.append(
            ("LowInkPeriodicLines", lambda: ag.LowInkPeriodicLines(count_range=(4, 8), period_range=(8, 16), p=1), True)
        )
    allowed = [m for m in menu if m[2] or tier != "clean"]
    k = rng.randrange(0, spec.paper_effects + 1)
    chosen = rng.sample(allowed, k)
    if defect == "glare" or rng.random() < spec.glare_p:  # light reflected off the glossy slip
        big = defect == "glare" or tier == "hard"
        chosen.append(
            (
                "ReflectedLight",
                lambda: ag.ReflectedLight(
                    reflected_light_internal_radius_range=(0.02, 0.1) if big else (0.0, 0.05),
                    reflected_light_external_radius_range=(0.15, 0.4) if big else (0.08, 0.25),
                    reflected_light_internal_max_brightness_range=(0.9, 1.0) if big else (0.75, 0.9),
                    reflected_light_external_max_brightness_range=(0.6, 0.8) if big else (0.4, 0.6),
                    p=1,
                ),
                False,
            )
        )
    applied = []
    out = slip_rgb
    # augraphy draws from the global random and numpy states: seed them from our rng, then restore
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        for name, make, _ in chosen:
            s = rng.randrange(2**31)
            random.seed(s)
            np.random.seed(s)
            res = make()(np.ascontiguousarray(out))
            arr = np.asarray(res)
            if arr.ndim == 2:
                arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
            out = arr[..., :3].astype(np.uint8)
            applied.append(name)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return out, applied


# desk grey, wood, dark bench mat, green cutting mat, steel, cardboard (BGR)
SURFACES = ((95, 95, 98), (70, 105, 140), (45, 45, 50), (70, 115, 75), (140, 140, 135), (90, 140, 175))


def background(rng: np.random.Generator, surfaces: tuple[tuple[int, int, int], ...] = SURFACES) -> NDArray[Any]:
    """The bench surface around the slip: one of `surfaces`, with low-frequency shading and grain."""
    palette = np.array(surfaces, np.float32)
    base = palette[rng.integers(len(palette))] + rng.normal(0, 10, 3).astype(np.float32)
    low = cv2.resize(
        rng.normal(0, 14, (6, 8, 1)).astype(np.float32), (FRAME_W, FRAME_H), interpolation=cv2.INTER_CUBIC
    )[..., None]
    grain = rng.normal(0, 5, (FRAME_H, FRAME_W, 1)).astype(np.float32)
    out: NDArray[Any] = np.clip(base + low + grain, 0, 255)
    return out


def place(rng: random.Random, slip_w: int, slip_h: int, spec: Any) -> NDArray[Any]:
    """Frame corners (tl, tr, br, bl) where the slip lands: rotated, tilted, wholly inside the frame."""
    fill = rng.uniform(*spec.fill)
    scale = min(fill * FRAME_H / slip_h, 0.92 * FRAME_W / slip_w)
    ang = np.deg2rad(rng.uniform(-spec.rotation_deg, spec.rotation_deg))
    hw, hh = slip_w * scale / 2, slip_h * scale / 2
    c, s = np.cos(ang), np.sin(ang)
    pts = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]], np.float32)
    pts = pts @ np.array([[c, s], [-s, c]], np.float32)
    jitter = spec.perspective * max(hw, hh) * 2
    pts += np.array([[rng.uniform(-jitter, jitter), rng.uniform(-jitter, jitter)] for _ in range(4)], np.float32)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = hi - lo
    pts *= min(1.0, (FRAME_W - 40) / span[0], (FRAME_H - 40) / span[1])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    cx = rng.uniform(20 - lo[0], FRAME_W - 20 - hi[0])
    cy = rng.uniform(20 - lo[1], FRAME_H - 20 - hi[1])
    out: NDArray[Any] = pts + np.array([cx, cy], np.float32)
    return out


def _tape(rng: random.Random, img: NDArray[Any], quad: NDArray[Any]) -> None:
    """A strip of clear packing tape across the slip: a faint tint and sheen, not an opaque strip."""
    t0, t1 = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)
    p0 = quad[0] + (quad[3] - quad[0]) * t0
    p1 = quad[1] + (quad[2] - quad[1]) * t1
    mask = np.zeros((FRAME_H, FRAME_W), np.uint8)
    cv2.line(mask, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 255, int(rng.uniform(35, 80)))
    m = cv2.GaussianBlur(mask, (0, 0), 2).astype(np.float32)[..., None] / 255
    tint = np.array([rng.uniform(200, 240), rng.uniform(215, 245), rng.uniform(225, 250)], np.float32)
    img[:] = img * (1 - 0.2 * m) + tint * 0.2 * m + rng.uniform(8, 20) * m


def _camera(rng: random.Random, frame: NDArray[Any], tier: str) -> tuple[NDArray[Any], list[str]]:
    """albumentations light, shadow, glare, blur, noise and JPEG on the whole photo."""
    try:
        import albumentations as A
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(_MISSING) from exc
    spec = TIERS[tier]
    steps: list[tuple[str, Any]] = [
        ("brightness", A.RandomBrightnessContrast(brightness_limit=(-0.1, 0.08), contrast_limit=(-0.15, 0.1), p=1)),
        (
            "illumination",
            A.Illumination(
                mode=rng.choice(("linear", "corner", "gaussian")),
                intensity_range=(0.03, 0.1 if tier == "clean" else 0.2),
                p=1,
            ),
        ),
    ]
    if rng.random() < spec.dim_p:
        steps.append(
            ("dim", A.RandomBrightnessContrast(brightness_limit=(-0.3, -0.15), contrast_limit=(-0.25, -0.1), p=1))
        )
        steps.append(("gamma", A.RandomGamma(gamma_limit=(105, 130), p=1)))
    if rng.random() < spec.shadow_p:
        steps.append(
            (
                "shadow",
                A.RandomShadow(
                    shadow_roi=(0, 0, 1, 1),
                    num_shadows_limit=(1, 2),
                    shadow_dimension=5,
                    shadow_intensity_range=(0.25, 0.5),
                    p=1,
                ),
            )
        )
    blur = rng.uniform(*spec.blur)
    if tier == "hard" and rng.random() < 0.4:
        steps.append(("motion_blur", A.MotionBlur(blur_limit=(3, 7), p=1)))
    elif tier == "hard" and rng.random() < 0.3:
        steps.append(("defocus", A.Defocus(radius=(2, 4), alias_blur=(0.1, 0.3), p=1)))
    else:
        steps.append(("blur", A.GaussianBlur(sigma_limit=(blur, blur), p=1)))
    if tier != "clean" and rng.random() < 0.5:
        steps.append(
            ("iso_noise", A.ISONoise(color_shift=(0.01, 0.03), intensity=(0.1, 0.3 if tier == "typical" else 0.5), p=1))
        )
    steps.append(("noise", A.GaussNoise(std_range=spec.noise_std, p=1)))
    steps.append(("jpeg", A.ImageCompression(quality_range=spec.jpeg, p=1)))
    pipeline = A.Compose([t for _, t in steps], seed=rng.randrange(2**31))
    out = pipeline(image=frame)["image"]
    return np.asarray(out, np.uint8), [n for n, _ in steps]


def photograph(
    rng: random.Random, slip_rgb: NDArray[Any], tier: str, thermal: bool, defect: str | None = None
) -> tuple[NDArray[Any], dict[str, Any]]:
    """The bench camera's BGR photo of the slip, and how it was made (quad, effects)."""
    spec = TIERS[tier]
    flat, paper = _paper_effects(rng, slip_rgb, tier, thermal, defect)
    slip_bgr = cv2.cvtColor(flat, cv2.COLOR_RGB2BGR)
    sh, sw = slip_bgr.shape[:2]
    quad = place(rng, sw, sh, spec)
    nrng = np.random.default_rng(rng.randrange(2**32))
    frame = background(nrng)
    if defect != "no_label":
        src = np.array([[0, 0], [sw - 1, 0], [sw - 1, sh - 1], [0, sh - 1]], np.float32)
        m = cv2.getPerspectiveTransform(src, quad)
        warped = cv2.warpPerspective(slip_bgr, m, (FRAME_W, FRAME_H), flags=cv2.INTER_AREA).astype(np.float32)
        mask = cv2.warpPerspective(np.full((sh, sw), 255, np.uint8), m, (FRAME_W, FRAME_H))
        a = mask.astype(np.float32)[..., None] / 255
        frame = frame * (1 - a) + warped * a
    scene = []
    if defect != "no_label" and rng.random() < spec.tape_p:
        _tape(rng, frame, quad)
        scene.append("tape")
    if defect == "dark":
        frame *= 0.12
    elif defect == "overexposed":
        frame = frame * 1.9 + 90
    elif defect == "blur":
        frame = cv2.GaussianBlur(frame, (0, 0), 7.0)
    photo_in = cv2.cvtColor(np.clip(frame, 0, 255).astype(np.uint8), cv2.COLOR_BGR2RGB)
    out_rgb, camera = _camera(rng, photo_in, tier)
    photo = cv2.cvtColor(out_rgb, cv2.COLOR_RGB2BGR)
    return photo, {
        "label_quad": [[round(float(x), 1), round(float(y), 1)] for x, y in quad],
        "effects": paper + scene + camera,
    }
