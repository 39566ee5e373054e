"""Tesseract (chi_sim+eng) as the second OCR engine, through pytesseract, grouped into text lines."""

from __future__ import annotations

import logging
import time
import unicodedata
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_agent.pipelines.bench.image_config import OcrConfig
from edge_agent.pipelines.bench.types import TextLine

log = logging.getLogger(__name__)


class TesseractError(RuntimeError):
    """Tesseract is missing, lacks a language, or did not finish in time."""


def _is_cjk(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def join_words(words: list[str]) -> str:
    """Tesseract splits Chinese into one 'word' per character: join CJK neighbours without a space."""
    out = ""
    for w in words:
        if out and not (_is_cjk(out[-1]) or _is_cjk(w[0])):
            out += " "
        out += w
    return out


class TesseractOcr:
    """Runs the tesseract binary per label; checks at construction that it and its languages are installed."""

    name = "tesseract"

    def __init__(self, cfg: OcrConfig) -> None:
        import pytesseract

        self.cfg = cfg
        try:
            langs = set(pytesseract.get_languages(config=""))
        except (pytesseract.TesseractNotFoundError, OSError) as exc:
            raise TesseractError(
                f"tesseract is not installed or not on PATH (apt-get install tesseract-ocr): {exc}"
            ) from None
        missing = [lang for lang in cfg.tesseract_lang.split("+") if lang not in langs]
        if missing:
            raise TesseractError(
                f"tesseract has no language data for {', '.join(missing)} "
                f"(apt-get install tesseract-ocr-{missing[0].replace('_', '-')})"
            )

    def read(self, label: NDArray[Any]) -> tuple[tuple[TextLine, ...], dict[str, float]]:
        import pytesseract

        t0 = time.perf_counter()
        try:
            data = pytesseract.image_to_data(
                np.ascontiguousarray(label),
                lang=self.cfg.tesseract_lang,
                config=f"--psm {self.cfg.tesseract_psm}",
                output_type=pytesseract.Output.DICT,
                timeout=self.cfg.tesseract_timeout_s,
            )
        except RuntimeError as exc:  # pytesseract raises RuntimeError on its timeout
            raise TesseractError(f"tesseract did not finish within {self.cfg.tesseract_timeout_s} s: {exc}") from None
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, word in enumerate(data["text"]):
            if word.strip() and float(data["conf"][i]) >= 0:
                groups.setdefault((data["block_num"][i], data["par_num"][i], data["line_num"][i]), []).append(i)
        lines = []
        for idx in groups.values():
            text = join_words([data["text"][i].strip() for i in idx])
            conf = float(np.mean([float(data["conf"][i]) for i in idx])) / 100.0
            if conf < self.cfg.min_confidence:
                continue
            x0 = min(data["left"][i] for i in idx)
            y0 = min(data["top"][i] for i in idx)
            x1 = max(data["left"][i] + data["width"][i] for i in idx)
            y1 = max(data["top"][i] + data["height"][i] for i in idx)
            lines.append(TextLine(text, round(conf, 4), (x0, y0, x1 - x0, y1 - y0)))
        lines.sort(key=lambda ln: (ln.box[1], ln.box[0]))
        return tuple(lines), {"tesseract": (time.perf_counter() - t0) * 1000}
