"""One slip from photo to verdict: image stages, fields, validation, privacy, decision; the return_inspection body."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from edge_agent.pipelines.bench.config import BenchConfig
from edge_agent.pipelines.bench.decide import (
    PHOTO_BARCODE_ALONE,
    READ_PROBLEMS,
    OrderCheck,
    Retake,
    barcode_alone,
    cross_check_order,
    named_readings,
    order_key,
    retake_advice,
    review_reasons,
    settle_confusables,
)
from edge_agent.pipelines.bench.fields import (
    Extraction,
    FieldValue,
    Issue,
    LabelMatcher,
    Template,
    extract_fields,
    load_reasons,
    load_template,
)
from edge_agent.pipelines.bench.heap import release_freed_memory
from edge_agent.pipelines.bench.locate import SHAPE_ONLY, join_split_labels, next_on_line
from edge_agent.pipelines.bench.manifest import Manifest, Order
from edge_agent.pipelines.bench.normalize import (
    ReasonTable,
    dangling_separator,
    doubts_named,
    to_halfwidth,
    word_zeros_as_read,
)
from edge_agent.pipelines.bench.privacy import mask_text, masked_slip_text
from edge_agent.pipelines.bench.rules_config import FIELD_NAMES
from edge_agent.pipelines.bench.types import (
    Barcode,
    ImageReading,
    QualityReport,
    TextLine,
    box_corners,
    sides_touched,
)
from edge_agent.pipelines.bench.validate import validate_fields

if TYPE_CHECKING:
    from numpy.typing import NDArray

log = logging.getLogger(__name__)

BODY_VERSION = 1
_CODE_RUN = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{5,}")
# A code printed in groups for reading aloud (a waybill number: ZTO8 6598 1113 5951 57), the last group
# as short as one character (YD88 1726 3460 2193 0).
_GROUPED_CODE = re.compile(r"[A-Za-z0-9]{2,6}(?: [A-Za-z0-9]{2,6}){2,}(?: [A-Za-z0-9](?![A-Za-z0-9]))?")
# Engines' line confidences are not equally honest. Measured on 36 generated slips (clean, typical,
# hard): tesseract read 2 of 74 fields wrong at 0.90-0.95, the ONNX engine none of 533 at >= 0.85.
ENGINE_CONFIDENCE = {"onnx": 1.0, "tesseract": 0.9}
MANIFEST_UNREADABLE = "the expected-returns manifest cannot be read, so the order was not checked against it"
# Extraction issues about the order number that a barcode or scan reading makes moot.
_ORDER_ISSUES_FILLED = ("missing_field", "bad_format", "ambiguous_value", "low_confidence")


class ReadOn(Protocol):
    """Reader.read_on: the ends of lines' boxes read on to the right (or, with `back`, their starts read
    back to the left), each as (text, character probabilities)."""

    def __call__(
        self, reading: ImageReading, lines: list[TextLine], back: bool = False
    ) -> list[tuple[str, tuple[float, ...]]]: ...


@dataclass(frozen=True, slots=True)
class Rules:
    """Everything the rules stages need, built once from the config."""

    cfg: BenchConfig
    template: Template
    reasons: ReasonTable
    matcher: LabelMatcher

    @classmethod
    def from_config(cls, cfg: BenchConfig, base_dir: Path | None = None) -> Rules:
        template = load_template(cfg.fields, cfg.privacy, base_dir)
        return cls(cfg, template, load_reasons(cfg.validation), LabelMatcher(template))


@dataclass(frozen=True, slots=True)
class InspectionResult:
    """The verdict on one photo; `fields` hold clean values, None where not found."""

    image: str
    fields: dict[str, str | int | None]
    confidence: dict[str, float]
    sources: dict[str, str]
    barcodes: tuple[Barcode, ...]  # texts already masked
    needs_review: bool
    review_reasons: tuple[Issue, ...]
    timing_ms: dict[str, float]
    engine: str
    masked_text: str
    order_check: OrderCheck
    quality: QualityReport
    manifest_sha256: str | None
    scan: str | None
    retakes: tuple[Retake, ...] = ()  # fields a new photo could give, with the likely cause
    # per field, the four corners (tl, tr, br, bl) of the text or barcode it was read from, in photo pixels
    field_boxes: dict[str, list[list[float]] | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The `edge-agent ocr --json` line for this image."""
        return {
            "image": self.image,
            "fields": dict(self.fields),
            "confidence": dict(self.confidence),
            "barcodes": [{"text": b.text, "symbology": b.symbology} for b in self.barcodes],
            "needs_review": self.needs_review,
            "review_reasons": [i.to_json() for i in self.review_reasons],
            "retake": [r.to_json() for r in self.retakes],
            "field_boxes": dict(self.field_boxes),
            "timing_ms": dict(self.timing_ms),
        }

    def record_body(self) -> dict[str, Any]:
        """The `return_inspection` record body (docs/records-bench.md); no personal data in clear."""
        return {
            "v": BODY_VERSION,
            "fields": dict(self.fields),
            "confidence": dict(self.confidence),
            "field_source": dict(self.sources),
            "order_check": self.order_check.to_json(),
            "barcodes": [{"text": b.text, "symbology": b.symbology} for b in self.barcodes],
            "masked_text": self.masked_text,
            "engine": self.engine,
            "quality": {
                "ok": self.quality.ok,
                "reasons": list(self.quality.reasons),
                "blur_var": round(self.quality.blur_var, 1),
                "brightness": round(self.quality.brightness, 1),
                "glare_frac": round(self.quality.glare_frac, 4),
                "blank": self.quality.blank,
            },
            "retake": [r.to_json() for r in self.retakes],
            "field_boxes": dict(self.field_boxes),
            "manifest_sha256": self.manifest_sha256,
            "review_reasons": [i.to_json() for i in self.review_reasons],
            "timing_ms": dict(self.timing_ms),
            "human_reviewed": False,
        }


class LookAt(Protocol):
    """Reader.read_places: places of the label image recognised without the detector, each as (text,
    confidence, character probabilities)."""

    def __call__(
        self, reading: ImageReading, boxes: list[tuple[int, int, int, int]]
    ) -> list[tuple[str, float, tuple[float, ...]]]: ...


@dataclass(frozen=True, slots=True)
class ReadFields:
    """What one pass found on the slip: the reading (its value lines read twice where `confirm` was given),
    the fields extracted from it, the two reads' disagreements, and the time extraction took (without
    the second read)."""

    reading: ImageReading
    ext: Extraction
    disagree: tuple[Issue, ...] = ()
    took_s: float = 0.0
    # those of `disagree` that say a code's box, read on past its end, showed more of it (_runs_on)
    ran_on: tuple[Issue, ...] = ()


def read_fields(
    reading: ImageReading,
    rules: Rules,
    confirm: Callable[[ImageReading, list[TextLine]], list[TextLine]] | None = None,
    read_on: ReadOn | None = None,
    look_at: LookAt | None = None,
) -> ReadFields:
    """Step 5: the fields found on what the image stages read.

    `confirm` reads the lines of values with a letter/digit ambiguity again (Reader.confirm_lines), and
    after a squeezed read (which can merge repeated digits) those of SECOND_READ_FIELDS whatever their
    doubt; the fields are found again on what it returns. `read_on` reads the boxes of the codes read
    without doubt again, grown to the right, and to the left where the value opens its box
    (Reader.read_on): see _runs_on. `look_at` reads the places beside and under a label whose value was
    not found (Reader.read_places): see _under_bare_labels. A label the detector cut in two boxes is one
    box from here on (locate.join_split_labels)."""
    t0 = time.perf_counter()
    fields = {f.name for f in rules.template.fields}
    reading = replace(reading, lines=join_split_labels(reading.lines, rules.matcher.labels, fields))
    ext = extract_fields(reading.lines, rules.template, rules.reasons, rules.matcher)
    recheck = SECOND_READ_FIELDS if reading.rec_squeeze < 1.0 else ()
    second_read = (
        list(
            {
                ext.where[n]: None
                for n in ext.where
                if n in recheck or any(i.field == n and i.code == "ambiguous_value" for i in ext.issues)
            }
        )
        if confirm is not None
        else []
    )
    disagree: list[Issue] = []
    if confirm is not None and second_read:
        tc = time.perf_counter()
        again = dict(zip(second_read, confirm(reading, second_read), strict=True))
        took = time.perf_counter() - tc
        t0 += took  # the fields stage is timed without the second look
        lines = tuple(again.get(ln, ln) for ln in reading.lines)
        reading = replace(reading, lines=lines, timing_ms={**reading.timing_ms, "confirm": round(took * 1000, 2)})
        if any(again[ln] != ln for ln in second_read):
            first, ext = ext, extract_fields(reading.lines, rules.template, rules.reasons, rules.matcher)
            disagree, restored = _reads_disagree(first, ext)
            # A value the full-width read lost stands from the first read: not also "missing" or malformed.
            kept = tuple(i for i in ext.issues if not (i.field in restored and i.code in READ_PROBLEMS))
            ext = replace(ext, issues=kept)
    if look_at is not None and any(v.value is None for v in ext.values.values()):
        tc = time.perf_counter()
        reading, ext = _under_bare_labels(reading, ext, rules, look_at)
        took = time.perf_counter() - tc
        t0 += took
        reading = replace(reading, timing_ms={**reading.timing_ms, "look_at": round(took * 1000, 2)})
    ran_on: list[Issue] = []
    if read_on is not None:
        tc = time.perf_counter()
        ran_on, ran_back, at_edge = _runs_on(reading, ext, read_on)
        disagree += ran_on + ran_back + at_edge
        took = time.perf_counter() - tc
        t0 += took
        reading = replace(reading, timing_ms={**reading.timing_ms, "read_on": round(took * 1000, 2)})
    return ReadFields(reading, ext, tuple(disagree), time.perf_counter() - t0, tuple(ran_on))


# A label that ends its box with no value found for it (商品件数：, and under it a 1 the detector did not box:
# typical tuning slip 1232) points at where its value is: the place right of it, LOOK_RIGHT of its heights
# long, and the place under it, LOOK_BELOW heights down and LOOK_WIDE heights wide from its left edge (less
# a quarter height), are each read without the detector, up to the next box. What is read there with a
# character under READ_ON_SEEN is taken for the noise of empty paper (1232's place right of its label read 21
# at 0.25); a value read there with a character under READ_ON_SURE is no surer than one found by its shape.
LOOK_RIGHT = 8.0
LOOK_BELOW = 1.8
LOOK_WIDE = 6.0
_LABEL_END = re.compile(r"[\s:：)）\]】]*")


def _bare_label_places(
    reading: ImageReading, ext: Extraction, rules: Rules
) -> list[tuple[str, tuple[int, int, int, int]]]:
    """(field, place) right of and under each label of a field with no value that ends its box, clipped
    where another box begins; places less than half a label height high or wide are left out."""
    if reading.label_image is None:
        return []
    ih, iw = reading.label_image.shape[:2]
    missing = {n for n, v in ext.values.items() if v.value is None}
    boxes = [ln.box for ln in reading.lines]
    out: list[tuple[str, tuple[int, int, int, int]]] = []
    for ln in reading.lines:
        hits = [h for h in rules.matcher.labels.find(ln.text) if h.role in missing]
        if not hits or not _LABEL_END.fullmatch(ln.text[hits[-1].end :]):
            continue
        x, y, w, h = ln.box
        right = min([iw - 1, *(bx for bx, by, bw, bh in boxes if bx >= x + w - 2 and by < y + h and by + bh > y)])
        right = min(right, x + w + round(LOOK_RIGHT * h))
        x0, x1 = max(0, _column_start(ln.box, boxes) - round(h / 4)), min(iw - 1, x + max(w, round(LOOK_WIDE * h)))
        bottom = min([ih - 1, *(by for bx, by, bw, bh in boxes if by >= y + h - 2 and bx < x1 and bx + bw > x0)])
        bottom = min(bottom, y + h + round(LOOK_BELOW * h))
        if right - (x + w) >= h / 2:
            out.append((hits[-1].role, (x + w, y, right - (x + w), h)))
        if bottom - (y + h) >= h / 2:
            out.append((hits[-1].role, (x0, y + h, x1 - x0, bottom - (y + h))))
    return out


def _column_start(label: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]]) -> int:
    """Where the text of a label's column starts: the label's own left edge or, for a label set in the
    middle of its column (a table's header over values written from the cell's left), the leftmost edge
    that two or more boxes above or below it start at (within half its height) and reach under it from,
    not past the box before it on its line (typical tuning slip 161: 数量 centred over a lone 2 at its
    cell's left edge, which the detector missed, and under the date and the product name that start there)."""
    x, y, _, h = label
    floor = max((bx + bw for bx, by, bw, bh in boxes if bx + bw <= x and by < y + h and by + bh > y), default=0)
    starts = sorted(
        bx for bx, by, bw, bh in boxes if floor <= bx < x and bx + bw > x and (by >= y + h - 2 or by + bh <= y + 2)
    )
    aligned = [a for a, b in pairwise(starts) if b - a <= h / 2]
    return aligned[0] if aligned else x


def _under_bare_labels(
    reading: ImageReading, ext: Extraction, rules: Rules, look_at: LookAt
) -> tuple[ImageReading, Extraction]:
    """The reading and extraction with each missing value read at the places its label points at
    (_bare_label_places): a field is taken from those places only, the rest stay as they were."""
    places = _bare_label_places(reading, ext, rules)
    if not places:
        return reading, ext
    seen = [
        TextLine(text, round(conf, 4), box, chars, box_corners(box))
        for (_, box), (text, conf, chars) in zip(places, look_at(reading, [b for _, b in places]), strict=True)
        if text.strip() and min(chars, default=0.0) >= READ_ON_SEEN  # not the faint noise of empty paper
    ]
    if not seen:
        return reading, ext
    more = extract_fields((*reading.lines, *seen), rules.template, rules.reasons, rules.matcher)
    values, where, issues, taken = dict(ext.values), dict(ext.where), list(ext.issues), []
    for name in dict.fromkeys(n for n, _ in places):  # in the lines' order, the same on every run
        line = more.where.get(name)
        if more.values[name].value is None or line not in seen:
            continue
        fv = more.values[name]
        if min(line.char_conf, default=0.0) < READ_ON_SURE:
            fv = replace(fv, confidence=round(fv.confidence * SHAPE_ONLY, 4))
        values[name], where[name] = fv, line
        issues = [i for i in issues if i.field != name] + [i for i in more.issues if i.field == name]
        taken.append(line)
    if not taken:
        return reading, ext
    ext = replace(ext, values=values, where=where, issues=tuple(issues))
    return replace(reading, lines=(*reading.lines, *taken)), ext


# The codes whose box may end before the value does (read_on).
READ_ON_CODES = ("order_no", "sku", "customer_id")
# A date whose box ends on a day of one digit is read on too: on hard tuning slip 85 the 2 of 2025.11.12 was
# lost at the box's end, and 2025.11.1 is a date.
READ_ON_FIELDS = (*READ_ON_CODES, "return_date")
_ONE_DIGIT_AT_END = re.compile(r"(?<![0-9])[0-9]$")


def _code_chars(text: str) -> str:
    """The letters and digits of a text, full-width ones too: a code without its separators (KH-2021-852 ->
    KH2021852; a fill-in line after a value, read as ___, adds nothing)."""
    return order_key(to_halfwidth(text))


# read_on's text must hold at least the last this many characters of the box, for the characters straight
# after them to be the value's going on. What follows is more code when its first character is read with
# at least READ_ON_SEEN, and surely so when every character is read with at least READ_ON_SURE: the noise of
# a hard photo between a value and the next box reads as a character too, but faintly (hard tuning slip
# 431: SN61366753114, then a 3 at 0.27). Code read on unsurely is still a doubt: on hard tuning slip 72 a
# shadow's edge across the SKU WM7362V ended its box at M736 (read at 0.976), and the read on gave 2V at
# 0.93 and 0.42. On the 450 tuning photos (seeds 0-149) every read-on run of 0.5 or more was the value
# going on.
READ_ON_ANCHOR = 3
READ_ON_SEEN = 0.5
READ_ON_SURE = 0.95


# A value that opens its box is read back to the left too: glare or a stain over the start of a value can
# leave it out of the box, and the rest still fits its pattern (hard tuning slip 836: O65326-58 read as
# 65326-58 at 0.9995, its O and the colon before it washed out by reflected light; read back, a faint 0 at
# 0.32 comes before it). What comes straight before counts when its last character is read with at least
# READ_BACK_SEEN: on the 900 tuning photos of seeds 0-149 and 800-949, 7 of the 8 reads back that gave code
# before the box were of values that had lost their start (0.32-0.999); the eighth, a 5 at 0.56 from the
# label's edge before a right order number, the cascade's finer pass cleared.
READ_BACK_SEEN = 0.3


def _runs_on(reading: ImageReading, ext: Extraction, read_on: ReadOn) -> tuple[list[Issue], list[Issue], list[Issue]]:
    """reads_disagree for each code read without doubt at the end of its box when the end of that box, read
    again grown to the right, gives its last characters and more after them: the value went on past the
    box, which a stain across its end can cut short (typical tuning slip 615: P532489 read at 0.9998 for
    P53248926). Likewise for a code that opens its box, read back to the left: the value may start before
    its box (READ_BACK_SEEN). A code that read on gives nothing more past its end is doubted all the same
    when the next box on its line, after a gap, is a piece of code (_piece_after_a_gap), and so is one whose
    box ends at the label image's edge, with no room to read on: the photo's outline may have cut it there
    (hard tuning slip 1450: a shadow's edge across the slip moved the outline into U53157214, and U5315
    passed), for the cascade's finer pass, which cuts the label again with a margin. Returns the issues of
    the three: past the end, before the start, at the label's edge."""
    ends, starts = _boxed_whole(ext)
    past: list[Issue] = []
    before: list[Issue] = []
    edge: list[Issue] = []
    h, w = reading.label_image.shape[:2] if reading.label_image is not None else (0, 0)
    for back, todo, out in ((False, ends, past), (True, starts, before)):
        if not todo:
            continue
        went_on = {i.field for i in past + edge}  # a value already read on past its box is doubted once
        again = read_on(reading, [ln for _, _, ln, _ in todo], back=back)
        for (name, value, ln, boxed), (text, chars) in zip(todo, again, strict=True):
            more, sure = (_read_before if back else _read_past)(boxed, text, chars)
            if more and name not in went_on:
                how = "read wider" if sure else "read wider, unsure"
                where = f"start before its box ({how}: {more}...)" if back else f"go on past its box ({how}: ...{more})"
                out.append(Issue("reads_disagree", name, f"{name}: {value} may {where}"))
            elif not back and name in READ_ON_CODES and (piece := _piece_after_a_gap(ln, reading.lines)):
                where = f"go on past its box (a gap, then {piece})"
                out.append(Issue("reads_disagree", name, f"{name}: {value} may {where}"))
            elif name not in went_on and w and ("left" if back else "right") in sides_touched(ln.box, w, h):
                where = "start before" if back else "go on past"
                edge.append(Issue("reads_disagree", name, f"{name}: {value} may {where} the edge of the label as cut"))
    return past, before, edge


_Boxed = tuple[str, str, TextLine, str]  # field, value, its line, the line's letters and digits


def _boxed_whole(ext: Extraction) -> tuple[list[_Boxed], list[_Boxed]]:
    """The codes read without doubt that end their box (and the dates that end it on a day of one digit), and
    the codes that open it: those _runs_on reads on, and back."""
    doubted = {i.field for i in ext.issues}
    ends: list[_Boxed] = []
    starts: list[_Boxed] = []
    for name in READ_ON_FIELDS:
        fv, ln = ext.values.get(name), ext.where.get(name)
        if fv is None or fv.value is None or ln is None or name in doubted:
            continue
        boxed, value = _code_chars(ln.text), _code_chars(str(fv.value))
        if len(boxed) < READ_ON_ANCHOR or not value:
            continue
        if name == "return_date":
            if _ONE_DIGIT_AT_END.search(to_halfwidth(ln.text).rstrip()):
                ends.append((name, str(fv.value), ln, _anchor_chars(to_halfwidth(ln.text).upper())))
            continue
        if boxed.endswith(value):
            ends.append((name, str(fv.value), ln, boxed))
        if boxed.startswith(value) and to_halfwidth(ln.text).strip().upper()[:1] == value[0]:
            starts.append((name, str(fv.value), ln, boxed))
    return ends, starts


# A box after a code's, on its line and apart from it, that holds only code and opens with a separator (-M) is
# the rest of that code with its middle lost: hard tuning slip 162 printed CN-1284-BOX-M, faded to CN-128 and,
# a gap on, -M; CN-128 passed at 0.93.
_CODE_PIECE = re.compile(r"[-_/.][A-Z0-9][-_/.A-Z0-9]*")


def _piece_after_a_gap(ln: TextLine, lines: Sequence[TextLine]) -> str:
    """The text of the next box on ln's line when it starts after ln ends and is a _CODE_PIECE, else ""."""
    nxt = next_on_line(ln, lines)
    if nxt is None or nxt.box[0] <= ln.box[0] + ln.box[2]:
        return ""
    piece = to_halfwidth(nxt.text).strip().upper()
    return piece if _CODE_PIECE.fullmatch(piece) else ""


# A date written 2025年10月31日 anchors its read on by its marks too: its box's end 0月3 is three characters
# of the date's, where its digits alone (03) are too few (hard tuning slip 1617 in unseen faces: the 1日 of
# the day was lost in a shadow, read on as 0月31, and 2025-10-03 passed).
_DATE_MARKS = "年月日"


def _anchors(c: str, marks: str = _DATE_MARKS) -> bool:
    """Does a character of an upper-cased, half-width text anchor a read on: a letter, a digit, or one of
    `marks`?"""
    return "A" <= c <= "Z" or "0" <= c <= "9" or c in marks


def _anchor_chars(text: str) -> str:
    """The letters, digits and date marks of an upper-cased, half-width text: what a date's read on is
    anchored by."""
    return "".join(c for c in text if _anchors(c))


def _anchored(boxed: str, text: str, chars: tuple[float, ...], first: bool) -> tuple[str, list[int], int, int]:
    """`text` upper-cased and half-width, the places of its letters and digits (and date marks, where `boxed`
    holds any: _DATE_MARKS), and where in those the
    longest start (`first`) or end of `boxed` it holds begins and how long it is: at least READ_ON_ANCHOR,
    as early (a start) or as late (an end) as it can. (raw, [], -1, 0) when it holds none."""
    raw = to_halfwidth(text).upper()
    if len(chars) != len(raw):
        return raw, [], -1, 0
    marks = _DATE_MARKS if any(c in _DATE_MARKS for c in boxed) else ""
    at = [i for i, c in enumerate(raw) if _anchors(c, marks)]
    code = "".join(raw[i] for i in at)
    for k in range(min(len(boxed), len(code)), READ_ON_ANCHOR - 1, -1):
        pos = code.find(boxed[:k]) if first else code.rfind(boxed[-k:])
        if pos >= 0:
            return raw, at, pos, k
    return raw, [], -1, 0


def _read_past(boxed: str, text: str, chars: tuple[float, ...]) -> tuple[str, bool]:
    """The code read past the end of a box, and whether surely: `text` (the box's end read on, with `chars`,
    its characters' probabilities) holds the longest end of `boxed` (the box's letters and digits) it can, at
    least READ_ON_ANCHOR long and as late as it can (a value ending 5-55 is not going on because the read
    holds 55-5 before its last 5); what follows straight after, with no space between (a speck of a stain
    read after a gap, "30831 =7", is not the value's), its first character read with at least READ_ON_SEEN,
    is returned, sure when every character is at least READ_ON_SURE. ("", False) when nothing is."""
    raw, at, pos, k = _anchored(boxed, text, chars, first=False)
    if pos < 0:
        return "", False
    end = at[pos + k - 1] + 1
    run = re.match(r"[-_/.]?((?:[A-Z0-9]|[-_/.](?=[A-Z0-9]))+)", raw[end:])
    if run is None or chars[end + run.start(1)] < READ_ON_SEEN:
        return "", False
    return _code_chars(run.group(1)), min(chars[end + run.start(1) : end + run.end(1)]) >= READ_ON_SURE


def _read_before(boxed: str, text: str, chars: tuple[float, ...]) -> tuple[str, bool]:
    """_read_past the other way: the code read before the start of a box (`text`, its start read back, holds
    the longest start of `boxed` it can, as early as it can), straight before it with no space between, its
    last character read with at least READ_BACK_SEEN; sure when every character is at least READ_ON_SURE."""
    raw, at, pos, _k = _anchored(boxed, text, chars, first=True)
    if pos < 0:
        return "", False
    start = at[pos]
    run = re.search(r"((?:[A-Z0-9]|[-_/.](?=[A-Z0-9]))+)[-_/.]?$", raw[:start])
    if run is None or chars[run.end(1) - 1] < READ_BACK_SEEN:
        return "", False
    return _code_chars(run.group(1)), min(chars[run.start(1) : run.end(1)]) >= READ_ON_SURE


def keep_found(finer: ReadFields, first: ReadFields, rules: Rules) -> ReadFields:
    """The finer pass's fields, with each value it did not find at all taken from the first pass, when that
    pass found it with no doubt of its own (no issue, confidence over the field's review threshold): a
    finer detector can lose a line the first one read well.
    The value's line is carried over into the finer reading's label, so its box and glare checks hold."""
    if finer.reading.to_photo is None or first.reading.to_photo is None:
        return finer
    to_finer = np.linalg.inv(np.asarray(finer.reading.to_photo, np.float64)) @ np.asarray(
        first.reading.to_photo, np.float64
    )
    values, where, taken = dict(finer.ext.values), dict(finer.ext.where), set()
    doubted = {i.field for i in (*first.ext.issues, *first.disagree)}
    scale = ENGINE_CONFIDENCE.get(first.reading.engine, 0.9)
    for name in FIELD_NAMES:
        mine, theirs = values.get(name), first.ext.values.get(name)
        if mine is None or mine.value is not None or theirs is None or theirs.value is None or name in doubted:
            continue
        if theirs.confidence * scale < rules.cfg.fields.threshold(name):
            continue
        values[name] = theirs
        line = first.ext.where.get(name)
        if line is not None:
            where[name] = _moved(line, to_finer)
        taken.add(name)
    if not taken:
        return finer
    issues = tuple(i for i in finer.ext.issues if i.field not in taken)
    ext = replace(finer.ext, values=values, where=where, issues=issues)
    return replace(finer, ext=ext, disagree=tuple(i for i in finer.disagree if i.field not in taken))


def _corners(line: TextLine, h: NDArray[Any]) -> tuple[tuple[float, float], ...]:
    """The four corners of `line` (its quad, else its box) taken through the homography `h`."""
    quad = line.quad or box_corners(line.box)
    p = np.asarray([[qx, qy, 1.0] for qx, qy in quad]) @ h.T
    return tuple((float(px / pw), float(py / pw)) for px, py, pw in p)


def _moved(line: TextLine, h: NDArray[Any]) -> TextLine:
    """`line` with its corners taken through the homography `h` (one label's pixels to another's)."""
    pts = _corners(line, h)
    xs, ys = [q[0] for q in pts], [q[1] for q in pts]
    box = (round(min(xs)), round(min(ys)), round(max(xs) - min(xs)), round(max(ys) - min(ys)))
    return replace(line, box=box, quad=pts)


def evaluate(
    reading: ImageReading,
    rules: Rules,
    *,
    manifest: Manifest | None,
    today: date,
    scan: str | None = None,
    image_name: str = "",
    confirm: Callable[[ImageReading, list[TextLine]], list[TextLine]] | None = None,
    read_on: ReadOn | None = None,
) -> InspectionResult:
    """Steps 5-8 on what the image stages read: fields, cross-check, validation, masking, verdict."""
    found = read_fields(reading, rules, confirm, read_on)
    return judge(found, rules, manifest=manifest, today=today, scan=scan, image_name=image_name)


def _printed_codes(lines: Sequence[TextLine]) -> set[str]:
    """The code-like runs printed in `lines` (grouped ones joined)."""
    codes = {m.group(0) for ln in lines for m in _CODE_RUN.finditer(to_halfwidth(ln.text))}
    return codes | {m.group(0).replace(" ", "") for ln in lines for m in _GROUPED_CODE.finditer(to_halfwidth(ln.text))}


def judge(
    found: ReadFields,
    rules: Rules,
    *,
    manifest: Manifest | None,
    today: date,
    scan: str | None = None,
    image_name: str = "",
) -> InspectionResult:
    """Steps 6-8 on the fields one pass found: cross-check, validation, masking, verdict."""
    reading, ext = found.reading, found.ext
    scale = ENGINE_CONFIDENCE.get(reading.engine, 0.9)
    values = {n: FieldValue(n, fv.value, round(fv.confidence * scale, 4), fv.source) for n, fv in ext.values.items()}
    t1 = time.perf_counter()
    order_spec = rules.template.spec("order_no")
    codes = _printed_codes(reading.lines)
    labelled = None
    if values["order_no"].value is None:  # only then are the codes a label names the other codes
        free = {id(ln) for ln in ext.unclaimed()}
        labelled = _printed_codes([ln for ln in reading.lines if id(ln) not in free])
    check, order_value, order_issues = cross_check_order(
        values["order_no"], scan, reading.barcodes, order_spec.pattern, codes, labelled_codes=labelled
    )
    issues = [*ext.issues, *found.disagree]
    orders = _manifest_orders(manifest, order_value, issues)
    order = orders[0] if len(orders) == 1 else None
    if len(orders) > 1 and manifest is not None:  # the readings name several orders: the one as read, for a person
        order = manifest.get(str(order_value.value))
    if order_value.source != "ocr" and not order_issues:
        issues = [i for i in issues if not (i.field == "order_no" and i.code in _ORDER_ISSUES_FILLED)]
    if barcode_alone(check) and order is None and not order_issues:
        # a courier's waybill barcode is order-shaped too: a person confirms, unless the manifest knows it
        order_issues = [*order_issues, Issue("low_confidence", "order_no", PHOTO_BARCODE_ALONE)]
    values["order_no"] = order_value
    issues += order_issues
    # Letter/digit ambiguities a barcode in the photo or the manifest settles (issue 13, class 3).
    machine = {n: [(b.text, "barcode") for b in reading.barcodes] for n in ("sku", "customer_id")}
    if order_value.source == "ocr":  # an order number the slip's text doubts, which one manifest order settles
        machine["order_no"] = [(o.order_no, "manifest") for o in orders]
    if order is not None:
        machine["sku"] += [(sku, "manifest") for sku in order.items]
        machine["customer_id"] += [(order.customer_id, "manifest")] if order.customer_id else []
    issues = settle_confusables(values, issues, machine)
    issues += validate_fields(
        values, rules.template, rules.cfg.validation, rules.reasons, manifest=manifest, today=today
    )
    t2 = time.perf_counter()
    keep = [str(values[n].value) for n in ("order_no", "sku", "customer_id") if values[n].value is not None]
    privacy = rules.cfg.privacy
    labels = rules.template.privacy_labels
    masked = masked_slip_text(ext, privacy, keep=keep, labels=labels)
    # A QR code can hold a whole address label: barcodes go through the same masking as the slip's text.
    barcodes = tuple(
        Barcode(mask_text(b.text, privacy, keep=keep, labels=labels), b.symbology, b.box) for b in reading.barcodes
    )
    boxes = _field_boxes(values, ext.where, reading)
    issues += glare_over_values(boxes, values, reading.quality, _value_ends(values, ext.where))
    reasons = review_reasons(values, issues, rules.cfg.fields, reading.quality)
    # A reviewer reads these; the text of a value can carry a phone number, so mask them too.
    reasons = tuple(Issue(i.code, i.field, mask_text(i.message, privacy, keep=keep, labels=labels)) for i in reasons)
    t3 = time.perf_counter()
    timing = dict(reading.timing_ms)
    timing.update(
        fields=round(found.took_s * 1000, 2), validate=round((t2 - t1) * 1000, 2), decide=round((t3 - t2) * 1000, 2)
    )
    return InspectionResult(
        image=image_name,
        fields={n: values[n].value for n in FIELD_NAMES},
        confidence={n: round(values[n].confidence, 4) for n in FIELD_NAMES},
        sources={n: values[n].source for n in FIELD_NAMES if values[n].value is not None},
        barcodes=barcodes,
        needs_review=bool(reasons),
        review_reasons=reasons,
        timing_ms=timing,
        engine=reading.engine,
        masked_text=masked,
        order_check=check,
        quality=reading.quality,
        manifest_sha256=manifest.sha256 if manifest is not None else None,
        scan=scan,
        retakes=retake_advice(reasons, reading.quality),
        field_boxes=boxes,
    )


def _manifest_orders(manifest: Manifest | None, order_no: FieldValue, issues: Sequence[Issue]) -> list[Order]:
    """The manifest's orders for the order number read: those of the readings its doubts name when it was read
    from the slip's text (decide.named_readings: S0317235 or SO317235), else the order of the number as given."""
    if manifest is None or order_no.value is None:
        return []
    doubts = [i for i in issues if i.field == "order_no" and i.code == "ambiguous_value"]
    readings = named_readings(str(order_no.value), doubts) if order_no.source == "ocr" else [str(order_no.value)]
    return list({o.order_no: o for r in readings if (o := manifest.get(r)) is not None}.values())


# Glare that blows out part of a line can hide the start or end of a value, and the rest then reads as a
# shorter value that still fits its pattern (a customer id C5366281069 read as 1069 passed that way).
GLARE_REACH = 1.5  # line heights either side of a value's box where glare may have hidden part of it
GLARE_ON_VALUE = 0.03  # share of that stretch blown out that makes the reading doubtful


def glare_over_values(
    boxes: dict[str, list[list[float]] | None],
    values: dict[str, FieldValue],
    quality: QualityReport,
    ends: dict[str, tuple[bool, bool]] | None = None,
) -> list[Issue]:
    """A read problem for each value read from text whose line, stretched GLARE_REACH line heights either
    way, lies partly under a glare spot (QualityReport.glare_spots). The line is stretched only past the
    ends the value reaches (`ends`, by field: does it start the line, does it end it): glare before a label
    hides none of the value after it."""
    if quality.glare_spots is None:
        return []
    spots, k = quality.glare_spots
    out = []
    for name, quad in boxes.items():
        if quad is None or values[name].source != "ocr":
            continue
        tl, tr, br, bl = np.asarray(quad, np.float64) * k
        along = tr - tl
        length = float(np.linalg.norm(along))
        if length < 1:
            continue
        reach = along / length * GLARE_REACH * max(float(np.linalg.norm(bl - tl)), 1.0)
        first, last = (ends or {}).get(name, (True, True))
        left, right = reach * first, reach * last
        stretch = np.zeros(spots.shape, np.uint8)
        cv2.fillConvexPoly(stretch, np.rint([tl - left, tr + right, br + right, bl - left]).astype(np.int32), 1)
        area = int(stretch.sum())
        frac = int((spots & stretch).sum()) / area if area else 0.0
        if frac >= GLARE_ON_VALUE:
            out.append(
                Issue("glare_on_value", name, f"{name}: glare over the value ({frac:.0%} of its line blown out)")
            )
    return out


def _value_ends(values: dict[str, FieldValue], where: dict[str, TextLine]) -> dict[str, tuple[bool, bool]]:
    """For each value read from a line: does it start the line, and does it end it (nothing but spaces and
    punctuation before or after it)? A value not found in its line's text as read reaches both ends."""
    out = {}
    for name, line in where.items():
        value = values[name].value
        text = to_halfwidth(line.text).upper()
        at = text.find(str(value).upper()) if value is not None else -1
        if at < 0:
            continue
        before, after = text[:at], text[at + len(str(value)) :]
        out[name] = (not any(c.isalnum() for c in before), not any(c.isalnum() for c in after))
    return out


def _field_boxes(
    values: dict[str, FieldValue], where: dict[str, TextLine], reading: ImageReading
) -> dict[str, list[list[float]] | None]:
    """Where each value was read, as four corners in the photo: the OCR box mapped back, or the barcode's."""
    out: dict[str, list[list[float]] | None] = {}
    h = None if reading.to_photo is None else np.asarray(reading.to_photo, np.float64)
    for name in FIELD_NAMES:
        fv = values[name]
        pts: list[tuple[float, float]] | None = None
        if fv.source == "ocr" and name in where and h is not None:
            pts = list(_corners(where[name], h))
        elif fv.source == "barcode":
            bar = next((b for b in reading.barcodes if b.box and b.text.strip().upper() == str(fv.value).upper()), None)
            if bar is not None and bar.box is not None:
                bx, by, bw, bh = (float(v) for v in bar.box)
                if bh < 0.1 * bw:  # zxing places a 1D code by its scan line: show the bars around it
                    by, bh = by - 0.15 * bw, bh + 0.3 * bw
                pts = [(bx, by), (bx + bw, by), (bx + bw, by + bh), (bx, by + bh)]
        out[name] = None if pts is None else [[round(px, 1), round(py, 1)] for px, py in pts]
    return out


# Fields whose values hold digits: after a squeezed first read (rec_squeeze below 1.0) their lines are read
# again at full width, because a squeeze can merge repeated characters (75755552142 read as 7575552142 at
# 0.8 on the tuning split, seed 9).
SECOND_READ_FIELDS = ("order_no", "sku", "customer_id", "quantity", "return_date")


def _reads_disagree(first: Extraction, second: Extraction) -> tuple[list[Issue], set[str]]:
    """A review reason for each value the two reads of its line give differently. The full-width read's
    value stands (it keeps repeated characters), or the first one's when the second gives none: those
    are put back into `second` and their fields returned too."""
    out, restored = [], set()
    for name in SECOND_READ_FIELDS:
        a, b = first.values[name], second.values[name]
        if a.value is None or a.value == b.value:
            continue
        doubts = [d for i in first.issues if i.field == name for d in doubts_named(i.message, str(a.value))]
        if b.value is not None and str(b.value) == word_zeros_as_read(str(a.value), doubts):
            continue  # the first read's 0 was shown as a word's O (zeros_in_words); the second read is sure of it
        if b.value is None:
            second.values[name] = a
            restored.add(name)
        out.append(Issue("reads_disagree", name, f"{name}: two reads of its line differ ({a.value} / {b.value})"))
    return out, restored


# What a second, finer read can fix, and how much each falls short: a value not read at all, or read
# as no value, weighs more than one read doubtfully, which a reviewer can at least confirm.
_SHORTFALL = {
    "missing_field": 2,
    "found_by_shape": 2,  # its label was not read: as short as a value not found, for the finer pass to find
    "bad_format": 2,
    "low_confidence": 1,
    "conflicting_values": 1,
    "reads_disagree": 1,
}


def _shortfall(result: InspectionResult) -> int:
    return sum(_SHORTFALL.get(i.code, 0) for i in result.review_reasons)


def _still_cut_off(first: ImageReading, first_fields: ReadFields, second: InspectionResult) -> InspectionResult:
    """The second reading, unless a code it gives was printed cut off in the first reading's lines
    ("DD20240613-" where the second reads "DD20240613"): then still a read problem, not a shorter code.
    Likewise when the first pass's box of a code (or of a date that ends on a day of one digit), read on past
    its end, showed more of it (`first_fields.ran_on`) and the second pass gives the same value without a
    doubt: it read no further, so the doubt stands (hard tuning slip 16 in an unseen face: the customer id
    C2842380359 fades out after C2842; read on, the first pass saw a 3 at 0.945; the finer pass's box ended at
    C2842 again and, read on, showed nothing after it).
    Not for a start read back (READ_BACK_SEEN is lower, and the label's margin reads as a faint character:
    clean tuning slip 76, a 5 before U60886068 that the finer pass did not see)."""
    more = []
    for name in READ_ON_FIELDS:
        value = second.fields.get(name)
        if value is None or second.sources.get(name) != "ocr":
            continue
        if name in READ_ON_CODES and any(
            (at := ln.text.find(str(value))) >= 0 and dangling_separator(ln.text[at:]) is not None for ln in first.lines
        ):
            # the value itself only: the rest of the line may hold personal data, and this is not masked
            more.append(Issue("bad_format", name, f"{name}: the first read showed more of this code after {value}"))
            continue
        before = first_fields.ext.values.get(name)
        doubted = any(i.field == name for i in second.review_reasons)
        if before is None or doubted or _code_chars(str(before.value)) != _code_chars(str(value)):
            continue
        more += [i for i in first_fields.ran_on if i.field == name]
    if not more:
        return second
    reasons = (*second.review_reasons, *more)
    return replace(second, review_reasons=reasons, needs_review=True, retakes=retake_advice(reasons, second.quality))


def _order_in_doubt(result: InspectionResult) -> bool:
    """No barcode gave the order number, and it is missing or a person must look at it."""
    missing = result.fields.get("order_no") is None
    return result.order_check.barcode is None and (missing or any(i.field == "order_no" for i in result.review_reasons))


def _falls_short(result: InspectionResult) -> bool:
    return result.quality.blank is None and _shortfall(result) > 0


def _today_utc() -> date:
    return datetime.now(UTC).date()


class Inspector:
    """Holds the OCR engine (one ImageReader) and the rules; inspect() turns a photo into a verdict."""

    def __init__(
        self,
        cfg: BenchConfig,
        *,
        engine: str | None = None,
        manifest: Manifest | None = None,
        base_dir: Path | None = None,
        today: Callable[[], date] = _today_utc,
    ) -> None:
        from edge_agent.pipelines.bench.reader import ImageReader

        self.rules = Rules.from_config(cfg, base_dir)
        self.reader = ImageReader(cfg, engine=engine)
        self.manifest = manifest
        self.manifest_problem: str | None = None
        self.today = today

    def set_manifest(self, manifest: Manifest | None, problem: str | None = None) -> None:
        """Swap the expected-returns manifest (e.g. after central replaced it). With `problem`, the bench has a
        manifest it cannot read: the slips it cannot check against one go to a person (`manifest_unreadable`)."""
        self.manifest = manifest
        self.manifest_problem = problem

    def inspect(
        self,
        image_bgr: NDArray[np.uint8],
        *,
        scan: str | None = None,
        image_name: str = "",
        debug_dir: Path | None = None,
    ) -> InspectionResult:
        t0 = time.perf_counter()
        reading = self.reader.read(image_bgr, debug_dir=debug_dir)
        today = self.today()
        confirm, read_on, look_at = self.reader.confirm_lines, self.reader.read_on, self.reader.read_places
        first = read_fields(reading, self.rules, confirm, read_on, look_at)
        result = judge(first, self.rules, manifest=self.manifest, today=today, scan=scan, image_name=image_name)
        chosen, cut_off = first, False
        if _falls_short(result) and self.rules.cfg.ocr.second_pass_det_px > 0:
            # The cascade: easy photos stay fast, a hard one gets the resolution it needs. What the first
            # pass freed goes back to the kernel first, so the finer pass's tensors do not stack on it.
            release_freed_memory()
            again = self.reader.second_pass(reading, image_bgr)
            if again is not None:
                finer = keep_found(read_fields(again, self.rules, confirm, read_on, look_at), first, self.rules)
                second = judge(finer, self.rules, manifest=self.manifest, today=today, scan=scan, image_name=image_name)
                if _shortfall(second) < _shortfall(result):
                    result, chosen, cut_off = _still_cut_off(reading, first, second), finer, True
                else:
                    result.timing_ms.update({k: v for k, v in again.timing_ms.items() if k not in result.timing_ms})
        if _order_in_doubt(result) and self.rules.cfg.ocr.barcodes:
            # The order number is missing or doubtful and no barcode in the photo gave it: the label's
            # barcodes are read once more, finer (a blurred photo's bars), and the verdict is taken again.
            t1 = time.perf_counter()
            more = self.reader.barcodes_again(chosen.reading)
            took = round((time.perf_counter() - t1) * 1000, 2)
            if more:
                reading_more = replace(chosen.reading, barcodes=(*chosen.reading.barcodes, *more))
                redone = judge(
                    replace(chosen, reading=reading_more),
                    self.rules,
                    manifest=self.manifest,
                    today=today,
                    scan=scan,
                    image_name=image_name,
                )
                # the stages already timed stay (a second pass that was run but not kept, too)
                redone.timing_ms.update({k: v for k, v in result.timing_ms.items() if k not in redone.timing_ms})
                result = _still_cut_off(reading, first, redone) if cut_off else redone
            result.timing_ms["barcodes_again"] = took
        if self.manifest_problem is not None and self.manifest is None:
            unchecked = Issue("manifest_unreadable", None, f"{MANIFEST_UNREADABLE}: {self.manifest_problem}"[:300])
            result = replace(result, needs_review=True, review_reasons=(*result.review_reasons, unchecked))
        result.timing_ms["total"] = round((time.perf_counter() - t0) * 1000, 2)
        del reading, first
        release_freed_memory()
        log.debug(
            "inspected %s: review %s (%s reasons)",
            image_name or "image",
            result.needs_review,
            len(result.review_reasons),
        )
        return result
