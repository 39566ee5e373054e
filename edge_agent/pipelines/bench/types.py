"""Data passed between the bench stages: image reading (OCR + barcodes) -> fields -> decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TextLine:
    """One line of recognised text with its box (x, y, w, h in the cropped label image) and confidence 0-1.

    `char_conf` holds each character's probability when the engine gives it (aligned with `text`), `quad`
    the text's four corners (tl, tr, br, bl) in the label image, when it is a turned box, and `alt` each
    character's runner-up reading where the recogniser gave one that is a doubt of its own
    (normalize.runner_up_doubt), a space where not (aligned with `text`; empty when unknown).
    """

    text: str
    confidence: float
    box: tuple[int, int, int, int]
    char_conf: tuple[float, ...] = ()
    quad: tuple[tuple[float, float], ...] | None = None
    alt: str = ""


def sides_touched(box: tuple[int, int, int, int], width: int, height: int) -> frozenset[str]:
    """The sides of a width x height image ("left", "top", "right", "bottom") an upright box (x, y, w, h)
    reaches, within a pixel: where the label's outline cut through print."""
    x, y, w, h = box
    near = {"left": x <= 1, "top": y <= 1, "right": x + w >= width - 1, "bottom": y + h >= height - 1}
    return frozenset(side for side, hit in near.items() if hit)


def box_corners(box: tuple[int, int, int, int]) -> tuple[tuple[float, float], ...]:
    """The four corners (tl, tr, br, bl) of an upright box (x, y, w, h)."""
    x, y, w, h = box
    return ((x, y), (x + w, y), (x + w, y + h), (x, y + h))


@dataclass(frozen=True, slots=True)
class Barcode:
    """One barcode decoded from the image."""

    text: str
    symbology: str  # "Code128", "EAN13", "Code39", "QRCode", ...
    box: tuple[int, int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class QualityReport:
    """Quality measures of a photo. They are hints: `ok` False with `reasons` says what may spoil the read,
    and is only acted on when the read falls short. `blank` (nothing on the photo) is the one refusal."""

    ok: bool
    reasons: tuple[str, ...]
    blur_var: float
    brightness: float
    glare_frac: float
    label_found: bool
    blank: str | None = None  # why the photo holds nothing to read (all black, empty bench), else None
    # Spots blown out by glare on a label whose paper is darker (quality.glare_spots): a uint8 mask and
    # its scale from photo pixels; None when there are none. Never serialised.
    glare_spots: tuple[Any, float] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class ImageReading:
    """Everything the image stages produced for one photo."""

    quality: QualityReport
    lines: tuple[TextLine, ...]
    barcodes: tuple[Barcode, ...]
    engine: str  # "onnx" | "tesseract"
    timing_ms: dict[str, float] = field(default_factory=dict)
    # 3x3 homography (rows) from the label image the lines' boxes are in to the photo's pixels
    to_photo: tuple[tuple[float, ...], ...] | None = None
    # the prepared label image itself, for a second pass; never serialised
    label_image: Any = field(default=None, repr=False, compare=False)
    # the horizontal squeeze the lines were recognised at (1.0: full width; the cascade's pass is always 1.0)
    rec_squeeze: float = 1.0
    # quarter turns (numpy.rot90's k) the label image was given to bring a sideways or upside-down slip upright
    turns: int = 0
