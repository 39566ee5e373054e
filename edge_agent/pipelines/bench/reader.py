"""The bench's image reader: quality measures -> barcodes -> preprocessing -> OCR, for one photo at a time."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_agent.drivers.base import FrameError
from edge_agent.drivers.camera.imagefile import read_image_file
from edge_agent.drivers.camera.protocol import decode_image
from edge_agent.pipelines.bench.barcodes import read_barcodes, read_barcodes_finer
from edge_agent.pipelines.bench.config import BenchConfig
from edge_agent.pipelines.bench.preprocess import preprocess
from edge_agent.pipelines.bench.quality import assess
from edge_agent.pipelines.bench.types import Barcode, ImageReading, TextLine, box_corners, sides_touched

log = logging.getLogger(__name__)

ENGINES = ("onnx", "tesseract")
RECUT_MARGIN = 0.05  # the second pass cuts the label again this much larger each way (a share of its size)
# A label that gave fewer lines than this cannot hold the six fields: its outline was probably something
# else (a shadow's edge, tape, the bench), so the second pass reads the whole photo instead.
FEW_LINES = 6
# Lines that touch the label image's edge were cut through by its outline (a shadow's edge across the
# slip, or one that turned the print askew so its lines run off the top); this many of them and the
# second pass reads the whole photo too, as a margin will not reach.
CUT_LINES = 3
CONFIRM_SQUEEZE = 0.8  # the second look at a doubtful line narrows it to this (confirm_lines)
# The end of a value's box is read again, grown this many line heights to the right (read_on): a stain
# across the end of a value can end the detector's box early (typical tuning slip 615: P532489 at 0.9998
# for P53248926; grown by 1.0 or more, the whole code is read). Only the box's last READ_ON_TAIL heights
# are read with it (about three characters to find the place by): a third of the cost of reading the whole
# line again (50-70 against 140-190 ms a photo on one core).
READ_ON = 1.5
READ_ON_TAIL = 2.0


class Engine(Protocol):
    name: str

    def read(self, label: NDArray[Any]) -> tuple[tuple[TextLine, ...], dict[str, float]]: ...


def load_image(path: str | Path) -> NDArray[Any]:
    """A photo as an 8-bit BGR array; ValueError naming the file when it is missing, not a regular file,
    too large (in bytes, or in the pixels its header declares: checked before decoding), or not an image.
    The folder camera's decoding (drivers.camera.protocol), so both say the same of the same file."""
    p = Path(path)
    try:
        img = decode_image(read_image_file(p), str(p))
    except FrameError as exc:
        raise ValueError(str(exc)) from None
    return np.asarray(img, np.uint8)


def make_engine(name: str, cfg: BenchConfig) -> Engine:
    """The OCR engine by name; the ONNX one verifies model hashes and creates its sessions here, once."""
    if name == "onnx":
        from edge_agent.pipelines.bench.ocr_onnx import OnnxOcr

        return OnnxOcr(cfg.ocr)
    if name == "tesseract":
        from edge_agent.pipelines.bench.ocr_tesseract import TesseractOcr

        return TesseractOcr(cfg.ocr)
    raise ValueError(f"ocr engine: expected one of {', '.join(ENGINES)}, got {name!r}")


class ImageReader:
    """Holds the OCR engine (an ONNX session lives as long as the reader); read() handles one photo."""

    def __init__(self, cfg: BenchConfig, engine: str | None = None) -> None:
        self.cfg = cfg
        self.engine_name = engine or cfg.ocr.engine
        self.engine = make_engine(self.engine_name, cfg)

    def read(self, image_bgr: NDArray[Any], debug_dir: Path | None = None) -> ImageReading:
        """Read one photo first, judge it after: quality measures are hints for the verdict, not a gate.

        Only a photo with nothing on it (all black, an empty bench) comes back at once with no lines.
        Barcodes are read on the photo as taken (the decoder's best input), then on the label crop and
        the label image as additions.
        """
        timing: dict[str, float] = {}
        t_start = t = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal t
            now = time.perf_counter()
            timing[stage] = round((now - t) * 1000, 2)
            t = now

        quality, quad = assess(image_bgr, self.cfg.quality)
        lap("quality")
        if debug_dir is not None:
            _write(debug_dir, "00_input.jpg", image_bgr)
        if quality.blank is not None:
            log.info("nothing to read on the photo: %s", quality.blank)
            timing["total"] = round((time.perf_counter() - t_start) * 1000, 2)
            return ImageReading(quality, (), (), self.engine_name, timing)
        barcodes: tuple[Barcode, ...] = ()
        if self.cfg.ocr.barcodes:
            barcodes = read_barcodes(image_bgr, self.cfg.ocr.barcode_formats)
            lap("barcodes")
        prepared = preprocess(image_bgr, self.cfg.preprocess, quad, keep_steps=debug_dir is not None)
        lap("preprocess")
        if self.cfg.ocr.barcodes and prepared.crop is not None:
            # The label as cut, then as handed to OCR (denoised, contrast evened): a grainy or dim photo's
            # bars can come out of the second only (hard tuning slip 413's order number, whose text lost
            # its last two digits under tape and passed). Boxes in either are not photo boxes.
            for stage, label in (("barcodes_crop", prepared.crop), ("barcodes_label", prepared.image)):
                seen = {(b.text, b.symbology) for b in barcodes}
                barcodes += tuple(
                    Barcode(b.text, b.symbology, None)
                    for b in read_barcodes(label, self.cfg.ocr.barcode_formats)
                    if (b.text, b.symbology) not in seen
                )
                lap(stage)
        label, label_to_photo, turns = prepared.image, prepared.to_photo, 0
        if self.cfg.ocr.direction == "auto" and hasattr(self.engine, "read_upright"):
            # a slip laid sideways or upside down is read turned upright, and its label image turned with it
            lines, engine_timing, turns = self.engine.read_upright(label)
            if turns:
                label, moved = turned(label, np.eye(3) if label_to_photo is None else label_to_photo, turns)
                label_to_photo = None if label_to_photo is None else moved
        else:
            lines, engine_timing = self.engine.read(label)
        timing.update({k: round(v, 2) for k, v in engine_timing.items()})
        t = time.perf_counter()
        timing["total"] = round((t - t_start) * 1000, 2)
        if debug_dir is not None:
            for k, (name, img) in enumerate(prepared.steps, start=1):
                _write(debug_dir, f"{k:02d}_{name}.png", img)
            _write(debug_dir, f"{len(prepared.steps) + 1:02d}_lines.png", _draw_lines(label, lines))
        to_photo = None if label_to_photo is None else _rows(label_to_photo)
        squeeze = self.cfg.ocr.rec_squeeze if self.engine_name == "onnx" else 1.0
        return ImageReading(quality, lines, barcodes, self.engine_name, timing, to_photo, label, squeeze, turns)

    def barcodes_again(self, reading: ImageReading) -> tuple[Barcode, ...]:
        """The label's barcodes read finer (read_barcodes_finer), those the reading does not hold already."""
        if reading.label_image is None:
            return ()
        seen = {(b.text, b.symbology) for b in reading.barcodes}
        found = read_barcodes_finer(reading.label_image, self.cfg.ocr.barcode_formats)
        return tuple(b for b in found if (b.text, b.symbology) not in seen)

    def second_pass(self, first: ImageReading, image_bgr: NDArray[Any] | None = None) -> ImageReading | None:
        """The cascade's second pass, for a photo whose first read fell short: the label read again at a
        higher detector size and without the horizontal squeeze. With the photo, the label is cut again
        along the first outline grown RECUT_MARGIN each way, so text a wrong outline cut off is read too;
        when the first label gave fewer than FEW_LINES lines, the outline was not the slip's, and when
        CUT_LINES of them touch one of its edges, it cut through the print: then the whole photo is read
        instead. None when the engine has no such setting or there is no label image."""
        from edge_agent.pipelines.bench.ocr_onnx import OnnxOcr

        if not isinstance(self.engine, OnnxOcr) or first.label_image is None:
            return None
        t0 = time.perf_counter()
        label, to_photo = first.label_image, first.to_photo
        if image_bgr is not None and first.to_photo is not None:
            whole = len(first.lines) < FEW_LINES or _cut_by_outline(first) >= CUT_LINES
            label, to_photo = self._recut(image_bgr, first, whole=whole)
            if whole:  # the outline's corners carry the first read's turns; the photo's do not
                label, recut_to_photo = turned(label, np.asarray(to_photo), first.turns)
                to_photo = _rows(recut_to_photo)
        det_px = max(self.cfg.ocr.det_px, self.cfg.ocr.second_pass_det_px)
        lines, engine_timing = self.engine.read(label, det_px=det_px, squeeze=1.0)
        timing = dict(first.timing_ms)
        timing.update({f"{k}_2": round(v, 2) for k, v in engine_timing.items()})
        timing["second_pass"] = round((time.perf_counter() - t0) * 1000, 2)
        return ImageReading(
            first.quality, lines, first.barcodes, first.engine, timing, to_photo, label, turns=first.turns
        )

    def confirm_lines(self, reading: ImageReading, lines: list[TextLine]) -> list[TextLine]:
        """The lines read again with another horizontal scale: a second view of glyphs the first read had
        doubts about. Lines read at full width (the default, and the cascade's pass) are squeezed to
        CONFIRM_SQUEEZE; lines read squeezed (rec_squeeze below 1.0) are read at full width instead.
        Where both reads give the same text, each character keeps the higher of its two confidences (the
        thresholds that settle a letter/digit ambiguity were measured on exactly this). Where they differ
        beyond spaces, the full-width read is returned (a squeeze can merge repeated characters), for the
        caller to see any difference. A line that cannot be read again is returned as is."""
        from edge_agent.pipelines.bench.ocr_onnx import OnnxOcr, crop_box

        if not isinstance(self.engine, OnnxOcr) or reading.label_image is None:
            return lines
        squeezed_first = reading.rec_squeeze < 1.0
        todo = [ln for ln in lines if ln.quad is not None and len(ln.char_conf) == len(ln.text)]
        crops = [crop_box(reading.label_image, np.asarray(ln.quad, np.float32)) for ln in todo]
        squeeze = 1.0 if squeezed_first else CONFIRM_SQUEEZE
        again = dict(zip(todo, self.engine.recognize(crops, squeeze=squeeze), strict=True)) if crops else {}
        out = []
        for ln in lines:
            text, conf, chars, alt = again.get(ln, ("", 0.0, (), ""))
            if not text:
                out.append(ln)
            elif text == ln.text and len(chars) == len(text):
                surer = tuple(max(a, b) for a, b in zip(ln.char_conf, chars, strict=True))
                out.append(replace(ln, char_conf=surer, alt=_surer_alt(ln, chars, alt)))
            elif "".join(text.split()) == "".join(ln.text.split()) or not squeezed_first:
                out.append(ln)  # only spaces differ ("Cust omer ID"), or this line's first read is the full-width one
            else:
                out.append(replace(ln, text=text, confidence=round(conf, 4), char_conf=chars, alt=alt))
        return out

    def read_on(
        self, reading: ImageReading, lines: list[TextLine], back: bool = False
    ) -> list[tuple[str, tuple[float, ...]]]:
        """The end of each line's box (its last READ_ON_TAIL line heights) read again with the box grown
        READ_ON line heights to the right, but not into the next box on its line nor past the label's edge:
        the text the detector's box may have left out, after the characters the box ended with, with each
        character's probability. With `back`, the start of each box (its first READ_ON_TAIL heights) grown
        to the left likewise, not into the box before it on its line: the text left out before the box's
        first characters. ("", ()) for a line with no room to grow, or when the engine cannot read a box
        again."""
        from edge_agent.pipelines.bench.ocr_onnx import OnnxOcr, crop_box

        if not isinstance(self.engine, OnnxOcr) or reading.label_image is None:
            return [("", ())] * len(lines)
        width = reading.label_image.shape[1]
        todo: list[int] = []
        crops: list[NDArray[Any]] = []
        for i, ln in enumerate(lines):
            if ln.quad is None:
                continue
            q = np.asarray(ln.quad, np.float32)
            along = q[1] - q[0]
            length, height = float(np.linalg.norm(along)), float(np.linalg.norm(q[3] - q[0]))
            if length < 1 or height < 1 or along[0] <= 0:
                continue
            x, y, w, h = ln.box
            room = x if back else width - 1 - (x + w)  # in x, up to the label's edge
            for ox, oy, ow, oh in (o.box for o in reading.lines if o.box != ln.box):
                if min(y + h, oy + oh) - max(y, oy) <= min(h, oh) / 2:
                    continue  # not on this line
                if back and ox + ow <= x + 2:
                    room = min(room, x - (ox + ow) - 1)  # or the box before it on this line
                elif not back and ox >= x + w - 2:
                    room = min(room, ox - (x + w) - 1)  # or the next box on this line
            grow = min(READ_ON * height, room * length / float(along[0]))  # along the line's slant
            if grow < height / 4:
                continue
            unit = along / length
            if back:  # from before the box to its first characters
                cut = unit * min(length, READ_ON_TAIL * height)
                grown = np.array([q[0] - unit * grow, q[0] + cut, q[3] + cut, q[3] - unit * grow], np.float32)
            else:  # from the last characters of the box to past it
                cut = unit * max(0.0, length - READ_ON_TAIL * height)
                grown = np.array([q[0] + cut, q[1] + unit * grow, q[2] + unit * grow, q[3] + cut], np.float32)
            todo.append(i)
            crops.append(crop_box(reading.label_image, grown))
        out: list[tuple[str, tuple[float, ...]]] = [("", ())] * len(lines)
        read = self.engine.recognize(crops, squeeze=1.0) if crops else []
        for i, (text, _conf, chars, _alt) in zip(todo, read, strict=True):
            out[i] = (text, chars)
        return out

    def read_places(
        self, reading: ImageReading, boxes: list[tuple[int, int, int, int]]
    ) -> list[tuple[str, float, tuple[float, ...]]]:
        """The text in each (x, y, w, h) place of the label image, recognised without the detector (a glyph
        it missed), as (text, confidence, character probabilities); ("", 0.0, ()) each when the engine
        cannot read a place on its own."""
        from edge_agent.pipelines.bench.ocr_onnx import OnnxOcr, crop_box

        if not isinstance(self.engine, OnnxOcr) or reading.label_image is None or not boxes:
            return [("", 0.0, ())] * len(boxes)
        crops = [crop_box(reading.label_image, np.array(box_corners(b), np.float32)) for b in boxes]
        return [(text, conf, chars) for text, conf, chars, _ in self.engine.recognize(crops, squeeze=1.0)]

    def _recut(
        self, image_bgr: NDArray[Any], first: ImageReading, whole: bool = False
    ) -> tuple[NDArray[Any], tuple[tuple[float, ...], ...]]:
        """The label cut from the photo again along the first outline grown RECUT_MARGIN each way (or the
        whole photo), and prepared as before (straightened, grey, deskewed, contrast), with its homography
        back to the photo."""
        ph, pw = image_bgr.shape[:2]
        if whole:
            grown = np.array([[0, 0], [pw - 1, 0], [pw - 1, ph - 1], [0, ph - 1]], np.float32)
        else:
            h, w = first.label_image.shape[:2]
            corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], np.float64) @ np.asarray(first.to_photo).T
            pts = corners[:, :2] / corners[:, 2:3]
            centre = pts.mean(axis=0)
            grown = centre + (pts - centre) * (1 + 2 * RECUT_MARGIN)
            grown = np.clip(grown, 0, [pw - 1, ph - 1]).astype(np.float32)
        prepared = preprocess(image_bgr, self.cfg.preprocess, grown)
        return prepared.image, _rows(prepared.to_photo)


def turned(label: NDArray[Any], to_photo: NDArray[Any], k: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """The label turned numpy.rot90(label, k) (k quarter turns counterclockwise), and its homography to
    the photo composed with the turn undone."""
    if k % 4 == 0:
        return label, to_photo
    m = np.eye(3)
    h, w = label.shape[:2]
    for _ in range(k % 4):  # one quarter counterclockwise: (x, y) -> (y, w - 1 - x), and w, h swap
        m = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, w - 1.0], [0.0, 0.0, 1.0]]) @ m
        w, h = h, w
    return np.ascontiguousarray(np.rot90(label, k)), np.asarray(to_photo, np.float64) @ np.linalg.inv(m)


def _rows(matrix: Any) -> tuple[tuple[float, ...], ...]:
    """A homography as ImageReading keeps it: rows of plain floats."""
    return tuple(tuple(float(v) for v in row) for row in np.asarray(matrix))


def _cut_by_outline(reading: ImageReading) -> int:
    """How many lines touch an edge of the label image: print the outline cut through."""
    h, w = reading.label_image.shape[:2]
    return sum(1 for ln in reading.lines if sides_touched(ln.box, w, h))


def _draw_lines(label: NDArray[Any], lines: tuple[TextLine, ...]) -> NDArray[Any]:
    out = cv2.cvtColor(label, cv2.COLOR_GRAY2BGR) if label.ndim == 2 else label.copy()
    for ln in lines:
        x, y, w, h = ln.box
        colour = (0, 160, 0) if ln.confidence >= 0.9 else (0, 140, 255) if ln.confidence >= 0.7 else (0, 0, 255)
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, 2)
    return out


def _write(folder: Path, name: str, img: NDArray[Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(folder / name), img):
        log.warning("cannot write debug image %s", folder / name)


def _surer_alt(line: TextLine, chars: tuple[float, ...], alt: str) -> str:
    """The runner-up readings of a line read twice with the same text: each character's from the read that
    was surer of it (the second's where it was surer, the first's otherwise)."""
    if len(alt) != len(chars):
        return line.alt
    if len(line.alt) != len(line.text):
        return alt
    return "".join(b if q > p else a for a, b, p, q in zip(line.alt, alt, line.char_conf, chars, strict=True))
