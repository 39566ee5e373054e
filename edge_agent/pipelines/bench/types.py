"""Data passed between the bench stages: image reading (OCR + barcodes) -> fields -> decision."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TextLine:
    """One line of recognised text with its box (x, y, w, h in the cropped label image) and confidence 0-1."""

    text: str
    confidence: float
    box: tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Barcode:
    """One barcode decoded from the image."""

    text: str
    symbology: str  # "Code128", "EAN13", "Code39", "QRCode", ...
    box: tuple[int, int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class QualityReport:
    """Result of the quality gate; `ok` False means retake the photo, `reasons` says why."""

    ok: bool
    reasons: tuple[str, ...]
    blur_var: float
    brightness: float
    glare_frac: float
    label_found: bool


@dataclass(frozen=True, slots=True)
class ImageReading:
    """Everything the image stages produced for one photo."""

    quality: QualityReport
    lines: tuple[TextLine, ...]
    barcodes: tuple[Barcode, ...]
    engine: str  # "onnx" | "tesseract"
    timing_ms: dict[str, float] = field(default_factory=dict)
