"""Config models for the bench's image stages: quality gate, preprocessing, OCR and barcodes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.schema import Expect

Fraction = Annotated[float, Field(ge=0, le=1), Expect("a fraction 0-1")]
Gray = Annotated[float, Field(ge=0, le=255), Expect("a grey level 0-255")]
Pixels = Annotated[int, Field(ge=160, le=4096), Expect("a size in pixels 160-4096")]

Symbology = Literal["Code128", "EAN13", "Code39", "QRCode", "EAN8", "UPCA", "ITF", "DataMatrix", "PDF417"]


def _default_symbologies() -> list[Symbology]:
    return ["Code128", "EAN13", "Code39", "QRCode"]


class QualityConfig(BaseModel):
    """Quality measures of a photo. They are hints: a photo is read whatever they say, and they name the
    likely cause when a field falls short (enabled = false: no hints). Only a photo with nothing on it
    (all black, an even surface) is refused before OCR."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = True
    # Variance of the Laplacian in the sharpest text tiles of the label, at the gate's working size.
    min_blur_var: Annotated[float, Field(ge=0), Expect("a variance >= 0")] = 600.0
    min_brightness: Gray = 55.0
    max_brightness: Gray = 235.0
    # Share of the label that is blown out to white (specular glare from film or glossy paper).
    max_glare_frac: Fraction = 0.03
    require_label: bool = True
    work_px: Annotated[int, Field(ge=240, le=2000), Expect("a size in pixels 240-2000")] = 640


class PreprocessConfig(BaseModel):
    """OpenCV steps between the photo and the OCR engine; each can be switched off."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    crop_label: bool = True
    # Long side of the cropped label handed on; the crop never upsamples beyond the photo's own pixels.
    label_px: Pixels = 1280
    denoise: bool = False
    deskew: bool = True
    max_deskew_deg: Annotated[float, Field(ge=0, le=45), Expect("degrees 0-45")] = 8.0
    normalize_contrast: bool = True  # CLAHE on the label, evens out uneven light and glare
    binarize: Annotated[Literal["off", "otsu", "adaptive"], Expect('"off", "otsu" or "adaptive"')] = "off"
    sharpen: bool = False


class OcrConfig(BaseModel):
    """Which engine reads the label, and how."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    engine: Annotated[Literal["onnx", "tesseract"], Expect('"onnx" or "tesseract"')] = "onnx"
    threads: Annotated[int, Field(ge=1, le=16), Expect("an integer 1-16")] = 1
    model: Annotated[Literal["ppocrv6-small"], Expect('"ppocrv6-small"')] = "ppocrv6-small"
    # A manifest of your own (name, file, sha256); default: the one shipped in edge_agent.resources.models.
    manifest: Path | None = None
    # Text is detected on the label scaled so that its long side is det_px (rounded to 32).
    det_px: Annotated[int, Field(ge=160, le=2048), Expect("a size in pixels 160-2048")] = 512
    # The cascade: a photo whose fields the first read leaves missing, doubtful or invalid is read again
    # with the detector at this size and no squeeze (0: no second pass). Memory grows with it: peak RSS
    # over six hard photos was 365 MB at 800 and 442 MB at 1024 (one process, one core).
    second_pass_det_px: Annotated[
        int, Field(ge=0, le=2048), Expect("a size in pixels up to 2048, or 0 for no second pass")
    ] = 800
    det_thresh: Fraction = 0.3
    box_thresh: Fraction = 0.5
    # "auto": turn the whole label upright before it is read: a quarter turn when most of its text boxes
    # stand on end (a slip laid sideways), a half turn when the classifier reads most of a few widest lines
    # upside down.
    direction: Annotated[Literal["auto", "off", "per_line"], Expect('"auto", "off" or "per_line"')] = "auto"
    rec_batch: Annotated[int, Field(ge=1, le=64), Expect("an integer 1-64")] = 8
    # Lines are squeezed horizontally by this factor before recognition (fewer columns, faster). Below 1.0
    # the recogniser can merge repeated characters (5555 read 555) and narrow an O towards a 0, so the
    # lines of values with digits are then read again at full width. On the tuning split, 0.8 plus that
    # second read was slower than reading at full width once (median 379 against 329 ms on clean slips).
    rec_squeeze: Annotated[float, Field(ge=0.4, le=1.0), Expect("a factor 0.4-1.0")] = 1.0
    min_confidence: Fraction = 0.3
    tesseract_lang: Annotated[
        str, Field(pattern=r"^[a-z_]+(\+[a-z_]+)*$"), Expect('tesseract languages like "chi_sim+eng"')
    ] = "chi_sim+eng"
    tesseract_psm: Annotated[int, Field(ge=3, le=13), Expect("a page segmentation mode 3-13")] = 6
    tesseract_timeout_s: Annotated[float, Field(gt=0, le=120), Expect("seconds > 0 and <= 120")] = 20.0
    barcodes: bool = True
    barcode_formats: list[Symbology] = Field(default_factory=_default_symbologies)
