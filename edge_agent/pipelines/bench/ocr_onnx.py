"""PP-OCR text detection, direction and recognition run directly by onnxruntime, from hash-checked model files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_agent.pipelines.bench.glyphs import line_glyphs, settle_o_zero, sure_zeros, zeros_slashed
from edge_agent.pipelines.bench.heap import large_blocks_mapped
from edge_agent.pipelines.bench.image_config import OcrConfig
from edge_agent.pipelines.bench.normalize import RUNNER_UP, runner_up_doubt
from edge_agent.pipelines.bench.types import TextLine

log = logging.getLogger(__name__)

DEFAULT_MANIFEST = Path(__file__).resolve().parents[2] / "models" / "manifest.json"
REC_HEIGHT = 48
CLS_SHAPE = (48, 192)
UNCLIP_RATIO = 1.6
NARROW_BOX = 1.0  # crop_box: boxes narrower than this many heights get a margin
NARROW_PAD = 0.3  # each side, as a share of the box's height
# erase_rules: a table's ruling line a box took in is a bar of ink over at least RULE_COVER of the crop's
# height, at most RULE_WIDTH of it wide, with paper on both sides (under RULE_BESIDE of the height inked).
RULE_COVER = 0.85
RULE_WIDTH = 0.15
RULE_BESIDE = 0.6
# cut_at_rules: a piece of a box beside a ruling line holds text when at least CUT_MIN_INK of the box's height
# in columns is inked over CUT_INKED of it
CUT_MIN_INK = 0.1
CUT_INKED = 0.2
# A crop more than RULE_MAX_INK inked (more ink than paper) is no print on paper but light print on a coloured
# band, whose "ink" is the band: the band between two glyphs is no ruling line (typical tuning slip 289 in
# unseen faces: its shop name 山野户外, 0.81 inked, was cut between 山 and 野, and painted over there with the
# print's colour). The noise of a hard photo inks a crop up to 0.4 (hard tuning slip 392's date).
RULE_MAX_INK = 0.6
# cut_at_rules cuts at a bar that goes on RULE_GOES_ON of RULE_REACH of the box's height above and below it
RULE_REACH = 0.25
RULE_GOES_ON = 0.3
CUT_GAP = 0.1  # and has paper this share of the box's height wide on both sides
CUT_PAPER = 0.05
MAX_CANDIDATES = 1000
# The recognizer's output is [N, W/8, 18710] float32, and as large again inside the model: eight wide lines
# in one batch take 200 MB for a moment. Batches are capped at this many input columns (about 19 MB).
MAX_BATCH_COLUMNS = 1600


class ModelError(RuntimeError):
    """A model file is missing, unreadable or not the one the manifest names."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One model as the manifest describes it, with its path resolved on this machine."""

    role: str  # det | rec | cls
    name: str
    path: Path
    sha256: str


def default_manifest_path() -> Path:
    """models/manifest.json: in the source tree, or installed as edge_agent.resources.models."""
    if DEFAULT_MANIFEST.exists():
        return DEFAULT_MANIFEST
    spec = importlib.util.find_spec("edge_agent.resources.models")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "manifest.json"
    return DEFAULT_MANIFEST


def _package_dir(package: str) -> Path:
    # find_spec locates the package without importing it (rapidocr's import pulls in a lot).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model package {package!r} is not installed (pip install {package})")
    return Path(next(iter(spec.submodule_search_locations)))


def load_manifest(model: str, manifest_path: Path | None = None) -> dict[str, ModelFile]:
    """The model files of one model set, by role; raises ModelError naming the manifest on any problem."""
    path = manifest_path or default_manifest_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["models"][model]
    except FileNotFoundError:
        raise ModelError(f"{path}: model manifest not found") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read the model manifest: {exc}") from None
    except (KeyError, TypeError):
        raise ModelError(f"{path}: models.{model}: expected a model set of that name in the manifest") from None
    files = {}
    for role, entry in entries.items():
        try:
            base = _package_dir(entry["package"]) if entry.get("package") else path.parent
            files[role] = ModelFile(role, entry["name"], base / entry["file"], entry["sha256"].lower())
        except (KeyError, TypeError, AttributeError):
            raise ModelError(f"{path}: models.{model}.{role}: expected name, file and sha256") from None
    for role in ("det", "rec"):
        if role not in files:
            raise ModelError(f"{path}: models.{model}: expected a {role!r} model")
    return files


def verify_model(f: ModelFile) -> None:
    """Raise ModelError naming the file when it is missing or its SHA-256 is not the manifest's."""
    h = hashlib.sha256()
    try:
        with f.path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise ModelError(f"{f.path}: cannot read {f.role} model {f.name}: {exc.strerror or exc}") from None
    got = h.hexdigest()
    if got != f.sha256:
        raise ModelError(f"{f.path}: sha256 mismatch for {f.role} model {f.name}: expected {f.sha256}, got {got}")


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Input shapes change with every photo; the arena would keep the largest buffers forever, and the
    # memory pattern planner caches a plan per input shape (RSS grew 217 -> 372 MB over 120 photos).
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- pure stages


def _normalize(img_bgr: NDArray[Any]) -> NDArray[Any]:
    x = img_bgr.astype(np.float32) * (2.0 / 255.0) - 1.0
    return x.transpose(2, 0, 1)


def det_input(label: NDArray[Any], det_px: int) -> tuple[NDArray[Any], float, float]:
    """The detector's input tensor and the x/y factors that map its pixels back to the label's."""
    h, w = label.shape[:2]
    scale = min(1.0, det_px / max(h, w))
    nh = max(32, round(h * scale / 32) * 32)
    nw = max(32, round(w * scale / 32) * 32)
    img = label if label.ndim == 3 else cv2.cvtColor(label, cv2.COLOR_GRAY2BGR)
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return _normalize(small)[None], w / nw, h / nh


def order_points(pts: NDArray[Any]) -> NDArray[Any]:
    """tl, tr, br, bl of four points of a box turned less than 45 degrees."""
    xs = pts[np.argsort(pts[:, 0])]
    left, right = xs[:2], xs[2:]
    tl, bl = left[np.argsort(left[:, 1])]
    tr, br = right[np.argsort(right[:, 1])]
    return np.array([tl, tr, br, bl], np.float32)


def boxes_from_probmap(
    prob: NDArray[Any], thresh: float, box_thresh: float, fx: float, fy: float
) -> list[tuple[NDArray[Any], float]]:
    """DB post-processing: text boxes (4 points in label pixels) with their mean probability."""
    mask = cv2.dilate((prob > thresh).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    h, w = prob.shape
    for c in contours[:MAX_CANDIDATES]:
        (cx, cy), (rw, rh), ang = cv2.minAreaRect(c)
        if min(rw, rh) < 3:
            continue
        x0, y0, bw, bh = cv2.boundingRect(c)
        sub = np.zeros((bh, bw), np.uint8)
        cv2.fillPoly(sub, [c.reshape(-1, 2) - [x0, y0]], 1)
        score = float(cv2.mean(prob[y0 : y0 + bh, x0 : x0 + bw], sub)[0])
        if score < box_thresh:
            continue
        # Unclip: DB shrinks text regions during training; grow them back by area * ratio / perimeter.
        d = rw * rh * UNCLIP_RATIO / (2 * (rw + rh))
        rw2, rh2 = rw + 2 * d, rh + 2 * d
        if min(rw2, rh2) < 5:
            continue
        pts = cv2.boxPoints(((cx, cy), (rw2, rh2), ang)).astype(np.float32)
        pts[:, 0] = np.clip(pts[:, 0], 0, w) * fx
        pts[:, 1] = np.clip(pts[:, 1], 0, h) * fy
        out.append((order_points(pts), score))
    return out


def sort_reading_order(boxes: list[tuple[NDArray[Any], float]]) -> list[tuple[NDArray[Any], float]]:
    """Top to bottom, then left to right within a line (boxes whose centres are within half a line height)."""
    if not boxes:
        return boxes
    heights = [float(np.linalg.norm(b[3] - b[0])) for b, _ in boxes]
    tol = 0.5 * float(np.median(heights))
    items = sorted(boxes, key=lambda bs: float(bs[0][:, 1].mean()))
    rows: list[list[tuple[NDArray[Any], float]]] = []
    for it in items:
        cy = float(it[0][:, 1].mean())
        if rows and abs(cy - float(np.mean([r[0][:, 1].mean() for r in rows[-1]]))) <= tol:
            rows[-1].append(it)
        else:
            rows.append([it])
    return [it for row in rows for it in sorted(row, key=lambda bs: float(bs[0][:, 0].min()))]


# A box TALL_BOXES times taller than wide is a line of text running down the label; most such boxes (at least
# MIN_STANDING, and more than the boxes as much wider than tall) mean the slip lies sideways.
TALL_BOXES = 2.0
MIN_STANDING = 3


def _standing(quads: Any) -> bool:
    """Do most of the detector's long boxes stand upright (the label's text runs down, not across)?"""
    tall = wide = 0
    for tl, tr, _, bl in quads:
        w, h = float(np.linalg.norm(tr - tl)), float(np.linalg.norm(bl - tl))
        tall += h >= TALL_BOXES * w
        wide += w >= TALL_BOXES * h
    return tall >= MIN_STANDING and tall > wide


def crop_box(label: NDArray[Any], pts: NDArray[Any]) -> NDArray[Any]:
    """The text in one box (warp_box) with the ruling lines of a table it took in erased (erase_rules)."""
    return erase_rules(warp_box(label, pts))


def warp_box(label: NDArray[Any], pts: NDArray[Any]) -> NDArray[Any]:
    """The text in one box, warped upright; tall crops (vertical text) are turned to read left to right.

    A box narrower than NARROW_BOX times its height (a lone character) but not twice as tall as
    wide (a column of vertical text) is cut NARROW_PAD of its height wider on each side: the recogniser
    needs paper around a lone glyph, and a lone tall digit cut tight looks like vertical text (typical
    tuning slip 410: quantity 1 read at 0.27, dropped; 1.0 with the margin)."""
    tl, tr, br, bl = pts
    w = float(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))
    h = float(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))
    if 0 < w < NARROW_BOX * h and h <= 2 * w:
        ux = (tr - tl) / max(np.linalg.norm(tr - tl), 1e-6) * NARROW_PAD * h
        hi = np.array(label.shape[1::-1], np.float32) - 1
        tl, bl = np.clip(tl - ux, 0, hi), np.clip(bl - ux, 0, hi)
        tr, br = np.clip(tr + ux, 0, hi), np.clip(br + ux, 0, hi)
        pts = np.array([tl, tr, br, bl], np.float32)
        w = float(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))
    cw, ch = max(int(w), 1), max(int(h), 1)
    dst = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32)
    m = cv2.getPerspectiveTransform(pts, dst)
    crop = cv2.warpPerspective(label, m, (cw, ch), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    if crop.ndim == 2:
        crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    if ch >= 1.5 * cw:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)


def _ink(crop: NDArray[Any]) -> tuple[NDArray[Any], float]:
    """The crop's ink (Otsu) as a mask, and the grey level that parts it from the paper."""
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    level, ink = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    return ink, float(level)


def rule_bars(ink: NDArray[Any]) -> list[tuple[int, int]]:
    """The columns [start, end) of each ruling line of a table in a crop's ink: a thin bar of ink from the
    crop's top to its bottom is no character (glyphs keep a margin inside their box). A crop mostly inked
    (RULE_MAX_INK) has none."""
    h, w = ink.shape[:2]
    if np.count_nonzero(ink) > RULE_MAX_INK * ink.size:  # light print on a band
        return []
    cover = np.count_nonzero(ink, axis=0) / h
    full = np.flatnonzero(cover >= RULE_COVER)
    bars = []
    for bar in np.split(full, np.flatnonzero(np.diff(full) > 1) + 1) if full.size else []:  # runs of full columns
        x, end = int(bar[0]), int(bar[-1]) + 1
        beside = cover[np.r_[max(0, x - 2) : x, end : min(w, end + 2)]]  # two columns each side
        if end - x <= max(2, int(RULE_WIDTH * h)) and (beside < RULE_BESIDE).all():
            bars.append((x, end))
    return bars


def erase_rules(crop: NDArray[Any]) -> NDArray[Any]:
    """The crop with the ruling lines of a table it took in painted over with its paper: the recogniser
    reads one as a 1 (typical tuning slip 1194: a cell's border beside the quantity 6, read as 16 at 0.88 and
    passed)."""
    ink, _ = _ink(crop)
    return _paint_over(crop, ink, rule_bars(ink))


def _paint_over(crop: NDArray[Any], ink: NDArray[Any], bars: list[tuple[int, int]]) -> NDArray[Any]:
    """The crop with each bar (and a column of antialiasing each side) painted with its paper; the crop itself
    when there is none."""
    if not bars:
        return crop
    out = crop.copy()
    paper = np.median(crop[ink == 0], axis=0) if (ink == 0).any() else 255
    for x, end in bars:
        out[:, max(0, x - 1) : min(crop.shape[1], end + 1)] = paper
    return out


def cut_at_rules(label: NDArray[Any], pts: NDArray[Any]) -> list[tuple[NDArray[Any], NDArray[Any]]]:
    """(quad, crop) of each cell's text in one detected box: the box itself, or its pieces on either side of
    a table's ruling line it crossed. The detector joins two cells' text into one box where little paper
    separates them (clean tuning slip 379: a reason and, beyond its cell's border, the customer id were read
    as one line under the reason's header, and the customer id was lost). A piece holds text when at least
    CUT_MIN_INK of the box's height in columns is inked over CUT_INKED of it; the others are dropped."""
    tl, tr, br, bl = pts
    w = float(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))
    h = float(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))
    crop = warp_box(label, pts)
    if w < 2 * h:  # no room for two cells' text (and a narrow box's crop has a margin, a tall one is turned)
        return [(pts, erase_rules(crop))]
    ink, level = _ink(crop)
    cw, ch = crop.shape[1], crop.shape[0]
    cover = np.count_nonzero(ink, axis=0) / ch
    found = rule_bars(ink)
    bars = [bar for bar in found if _paper_beside(cover, bar, ch) and _runs_on(label, pts, ink.shape, level, bar)]
    inked = cover >= CUT_INKED
    edges = [0, *(e for bar in bars for e in bar), cw]
    pieces = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if inked[a:b].sum() >= CUT_MIN_INK * ch]
    if len(pieces) < 2:
        return [(pts, _paint_over(crop, ink, found))]  # erase_rules(crop), its ink found once
    out = []
    for a, b in pieces:
        fa, fb = a / cw, b / cw
        q = np.array([tl + (tr - tl) * fa, tl + (tr - tl) * fb, bl + (br - bl) * fb, bl + (br - bl) * fa], np.float32)
        out.append((q, crop_box(label, q)))
    return out


def _paper_beside(cover: NDArray[Any], bar: tuple[int, int], height: int) -> bool:
    """Is there paper CUT_GAP of the box's height wide on both sides of a bar (beside a column of antialiasing)?
    A cell's text keeps off its borders; a line drawn across a label's text touches its glyphs (typical tuning
    slip 21: a line between 日 and 期 of 退货日期 was cut there, and 期 came back as a 1). Paper is a column
    inked no more than the crop's emptiest one (a cell's top and bottom borders ink every column) and
    CUT_PAPER."""
    gap = max(2, round(CUT_GAP * height))
    paper = cover <= cover.min() + CUT_PAPER
    left, right = paper[max(0, bar[0] - 1 - gap) : bar[0] - 1], paper[bar[1] + 1 : bar[1] + 1 + gap]
    return len(left) == len(right) == gap and bool(left.all() and right.all())


def _runs_on(
    label: NDArray[Any], pts: NDArray[Any], shape: tuple[int, ...], level: float, bar: tuple[int, int]
) -> bool:
    """Does a bar of ink from a box's top to its bottom go on above and below the box, as a table's ruling
    line goes on to its cell's corners? A glyph's stroke (a 1 or a | set apart) ends inside the box, and the
    box's text is then one cell's. Looked at over RULE_REACH of the box's height each way:
    inked over at least RULE_GOES_ON of those rows, by the crop's own grey level between ink and paper (shape is
    the crop's)."""
    tl, tr, br, bl = pts
    up_l, up_r = (tl - bl) * RULE_REACH, (tr - br) * RULE_REACH
    ch, cw = shape[:2]
    reach = max(1, round(ch * RULE_REACH))
    taller = np.array([tl + up_l, tr + up_r, br - up_r, bl - up_l], np.float32)
    size = (cw, ch + 2 * reach)
    dst = np.array([[0, 0], [size[0], 0], [size[0], size[1]], [0, size[1]]], np.float32)
    m = cv2.getPerspectiveTransform(taller, dst)
    tall = cv2.warpPerspective(label, m, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    gray = cv2.cvtColor(tall, cv2.COLOR_BGR2GRAY) if tall.ndim == 3 else tall
    beyond = np.vstack([gray[:reach], gray[-reach:]])[:, bar[0] : bar[1]] <= level
    return bool(beyond.mean(axis=0).max() >= RULE_GOES_ON)


def rec_width(crop: NDArray[Any], squeeze: float) -> int:
    """The recogniser's input width for one crop: scaled to REC_HEIGHT, then squeezed."""
    return max(8, round(int(crop.shape[1]) * REC_HEIGHT / int(crop.shape[0]) * squeeze))


def rec_batches(crops: list[NDArray[Any]], batch: int, squeeze: float) -> list[tuple[list[int], NDArray[Any]]]:
    """Crops grouped by width (narrow with narrow, so little padding is computed), as rec input tensors."""
    widths = [rec_width(c, squeeze) for c in crops]
    order = sorted(range(len(crops)), key=lambda i: widths[i])
    groups: list[list[int]] = []
    for i in order:
        g = groups[-1] if groups else None
        # On a CPU a batch saves little per column, while padding costs in full: cap the padding at 15 %.
        if (
            g is not None
            and len(g) < batch
            and widths[i] * len(g) - sum(widths[j] for j in g) <= (0.15 * widths[i] * (len(g) + 1))
            and widths[i] * (len(g) + 1) <= MAX_BATCH_COLUMNS
        ):
            g.append(i)
        else:
            groups.append([i])
    out = []
    for idx in groups:
        max_w = (max(widths[i] for i in idx) + 7) // 8 * 8
        x = np.zeros((len(idx), 3, REC_HEIGHT, max_w), np.float32)
        for j, i in enumerate(idx):
            r = cv2.resize(crops[i], (widths[i], REC_HEIGHT), interpolation=cv2.INTER_AREA)
            x[j, :, :, : widths[i]] = _normalize(r)
        out.append((idx, x))
    return out


def ctc_decode(probs: NDArray[Any], charset: list[str]) -> list[tuple[str, float]]:
    """Greedy CTC: collapse repeats, drop blanks (index 0); confidence = mean probability of the kept symbols,
    each with its kin's (_kin)."""
    return [(text, conf) for text, conf, _, _, _ in ctc_decode_steps(probs, charset)]


def ctc_decode_steps(
    probs: NDArray[Any], charset: list[str], kin: dict[int, list[int]] | None = None
) -> list[tuple[str, float, tuple[float, ...], tuple[int, ...], str]]:
    """ctc_decode with each character's probability (its kin's counted: _kin, made from the charset unless
    given), the time step it was read at, and its runner-up reading where that is a doubt of its own
    (normalize.runner_up_doubt; a space where not), all aligned with the text, spaces at the ends dropped;
    empty where a symbol's length breaks the alignment."""
    idx = probs.argmax(axis=2)
    pmax = probs.max(axis=2)
    kin = _kin(charset) if kin is None else kin
    out = []
    for full, row, prow in zip(probs, idx, pmax, strict=True):
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != 0
        chars = [charset[i] if i < len(charset) else "" for i in row[keep]]
        steps = np.flatnonzero(keep)
        ps = [
            float(full[t, kin[k]].sum()) if k in kin else float(p)
            for t, k, p in zip(steps, row[keep], prow[keep], strict=True)
        ]
        conf = float(np.mean(ps)) if ps else 0.0
        # a symbol may be 0 or 2 chars
        quads = [
            (c, p, int(t), _runner_up(full[t], c, kin.get(k, [k]), p, charset) if len(c) == 1 else " ")
            for c, p, t, k in zip(chars, ps, steps, row[keep], strict=True)
            for _ in c
        ]
        while quads and quads[0][0].isspace():
            quads.pop(0)
        while quads and quads[-1][0].isspace():
            quads.pop()
        text = "".join(chars).strip()
        if len(quads) == len(text):
            out.append(
                (
                    text,
                    conf,
                    tuple(round(p, 4) for _, p, _, _ in quads),
                    tuple(t for _, _, t, _ in quads),
                    "".join(a for _, _, _, a in quads),
                )
            )
        else:
            out.append((text, conf, (), (), ""))
    return out


# Symbols that are one reading, whose probabilities the recogniser shares: a letter in either case (codes are
# read in capitals, labels without case) and the times sign's three forms (x8, X8 and ×8 are one count). Clean
# tuning slip 1174 printed x12 and the recogniser read x at 0.47, X 0.33 and × 0.20: its count went to review
# at 0.80 with both digits read at 1.0.
_TIMES = "xX×"


def _kin(charset: list[str]) -> dict[int, list[int]]:
    """Each symbol's index with a kin in the charset (_TIMES, or the other case of a letter): the indices of
    all symbols that are one reading with it, its own included."""
    where = {c: i for i, c in enumerate(charset) if c}
    out = {}
    for c, i in where.items():
        same = set(_TIMES) if c in _TIMES else {c.lower(), c.upper()} if c.isascii() and c.isalpha() else {c}
        group = sorted(where[s] for s in same if s in where)
        if len(group) > 1:
            out[i] = group
    return out


def _runner_up(step: NDArray[Any], read: str, same: list[int], p: float, charset: list[str]) -> str:
    """The best reading at one time step other than the character read and its kin (`same`: their indices),
    when the recogniser gave it RUNNER_UP or more and it is a doubt of its own (runner_up_doubt), else a
    space. A letter's other case is the same reading: taken as the runner-up, it would hide a digit in third
    place."""
    if p > 1.0 - RUNNER_UP or not (read.isascii() and read.isalnum()):
        return " "
    rest = step.copy()
    rest[same] = -1.0
    k = int(rest.argmax())
    other = charset[k] if 0 < k < len(charset) else ""
    return other if float(step[k]) >= RUNNER_UP and runner_up_doubt(read, other) else " "


def cls_input(crops: list[NDArray[Any]]) -> NDArray[Any]:
    """Direction-classifier input: each crop scaled to height 48, width up to 192, padded."""
    ch, cw = CLS_SHAPE
    x = np.zeros((len(crops), 3, ch, cw), np.float32)
    for j, c in enumerate(crops):
        w = min(cw, max(1, round(c.shape[1] * ch / c.shape[0])))
        x[j, :, :, :w] = _normalize(cv2.resize(c, (w, ch)))
    return x


# ---------------------------------------------------------------- the engine


# One recognised line before its O and 0 are settled: text, confidence, character probabilities, runner-up
# readings, and its O and 0 glyphs' widths, rings and aspects (glyphs.line_glyphs).
_Glyphs = tuple[str, float, tuple[float, ...], str, dict[int, float], dict[int, bool], dict[int, float]]
# A recognised line: text, confidence, each character's probability and its runner-up reading (a space where
# none counts), both aligned with the text (empty where unknown).
Recognised = tuple[str, float, tuple[float, ...], str]


def _settled(line: _Glyphs, *, slashed: bool, zeros: tuple[float, float] | None = None) -> Recognised:
    """A recognised line with its O and 0 settled by their glyphs."""
    text, conf, char_conf, alt, ratios, rings, aspects = line
    if ratios or (slashed and rings):
        text, char_conf = settle_o_zero(text, char_conf, ratios, rings, slashed=slashed, zeros=zeros, aspects=aspects)
    return text, conf, char_conf, alt


class OnnxOcr:
    """The three PP-OCR sessions, created once; read() turns a label image into text lines."""

    name = "onnx"

    def __init__(self, cfg: OcrConfig) -> None:
        self.cfg = cfg
        files = load_manifest(cfg.model, cfg.manifest)
        for f in files.values():
            verify_model(f)
        self.det = _session(files["det"].path, cfg.threads)
        self.rec = _session(files["rec"].path, cfg.threads)
        self.cls = _session(files["cls"].path, cfg.threads) if "cls" in files and cfg.direction != "off" else None
        meta = self.rec.get_modelmeta().custom_metadata_map
        if "character" not in meta:
            raise ModelError(f"{files['rec'].path}: rec model has no 'character' metadata (its charset)")
        # index 0 is the CTC blank; the model's last class is a space
        self.charset = ["", *meta["character"].splitlines(), " "]
        self.kin = _kin(self.charset)  # once: the charset holds some 18,000 symbols
        log.info("onnx ocr ready: model %s, %s threads", cfg.model, cfg.threads)

    def detect(self, label: NDArray[Any], det_px: int | None = None) -> list[tuple[NDArray[Any], float]]:
        with large_blocks_mapped():
            x, fx, fy = det_input(label, det_px or self.cfg.det_px)
            prob = self.det.run(None, {"x": x})[0][0, 0]
            return sort_reading_order(boxes_from_probmap(prob, self.cfg.det_thresh, self.cfg.box_thresh, fx, fy))

    def upside_down(self, crops: list[NDArray[Any]]) -> list[bool]:
        """Per crop: does the direction classifier say it reads upside down (with > 0.9 confidence)?"""
        if self.cls is None or not crops:
            return [False] * len(crops)
        p = self.cls.run(None, {"x": cls_input(crops)})[0]
        return [bool(row[1] > 0.9 and row[1] > row[0]) for row in p]

    def recognize(self, crops: list[NDArray[Any]], squeeze: float | None = None) -> list[Recognised]:
        """(text, confidence, each character's probability, its runner-up readings) of each crop. An O or 0
        whose glyph says the same is made sure (1.0), one whose glyph says the other is made doubtful (at most
        0.5) and, in a code, written as the glyph says: by its width beside the line's digits, or by its slash
        where the crops read together slash their zeros; see glyphs.py."""
        read: list[_Glyphs] = [("", 0.0, (), "", {}, {}, {})] * len(crops)
        squeeze = squeeze or self.cfg.rec_squeeze
        for idx, x in rec_batches(crops, self.cfg.rec_batch, squeeze):
            probs = self.rec.run(None, {"x": x})[0]
            for i, (text, conf, cc, steps, alt) in zip(
                idx, ctc_decode_steps(probs, self.charset, self.kin), strict=True
            ):
                ratios, rings, aspects = line_glyphs(crops[i], text, cc, steps, rec_width(crops[i], squeeze))
                read[i] = (text, conf, cc, alt, ratios, rings, aspects)
        slashed = zeros_slashed([(text, rings) for text, _, _, _, _, rings, _ in read])
        zeros = sure_zeros([(text, ratios, aspects) for text, _, _, _, ratios, _, aspects in read])
        return [_settled(line, slashed=slashed, zeros=zeros) for line in read]

    def read(
        self, label: NDArray[Any], det_px: int | None = None, squeeze: float | None = None
    ) -> tuple[tuple[TextLine, ...], dict[str, float]]:
        """Text lines of a (cropped, upright-ish) label image, with the time each stage took in ms.

        det_px and squeeze override the configured detector size and recognition squeeze (the cascade's
        second pass reads at higher resolution)."""
        lines, timing, _ = self._read(label, det_px, squeeze, turning=False)
        return lines, timing

    def read_upright(
        self, label: NDArray[Any], det_px: int | None = None, squeeze: float | None = None
    ) -> tuple[tuple[TextLine, ...], dict[str, float], int]:
        """read(), with the label turned a quarter at a time while its text does not run left to right: a
        slip laid on the bench sideways (most of its boxes stand TALL_BOXES times taller than wide, and more
        than the boxes lying as wide) or upside down (the direction classifier reads most of its widest
        lines upside down). Returns the lines in the pixels of the label turned numpy.rot90(label, k), the
        stage times summed over the reads, and k. An upright label is read once, as by read()."""
        total: dict[str, float] = {}
        turns = 0
        for attempt in range(3):  # sideways one way, then upside down: three reads at most
            img = np.ascontiguousarray(np.rot90(label, turns)) if turns else label
            lines, timing, turn = self._read(img, det_px, squeeze, turning=attempt < 2)
            for k, v in timing.items():
                total[k] = total.get(k, 0.0) + v
            if not turn:
                break
            turns = (turns + turn) % 4
        return lines, total, turns

    def _read(
        self, label: NDArray[Any], det_px: int | None, squeeze: float | None, *, turning: bool
    ) -> tuple[tuple[TextLine, ...], dict[str, float], int]:
        """read(); when turning, a label whose text does not run left to right is not recognised: the
        quarter turns (numpy.rot90's k) it needs come back instead, with no lines."""
        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        cells = [(q, score, crop) for pts, score in self.detect(label, det_px) for q, crop in cut_at_rules(label, pts)]
        boxes = [(q, score) for q, score, _ in cells]
        crops = [crop for _, _, crop in cells]
        t1 = time.perf_counter()
        timing["det"] = (t1 - t0) * 1000
        if turning and _standing(q for q, _ in boxes):
            return (), timing, 1
        flips = [False] * len(crops)
        if self.cfg.direction == "per_line":
            flips = self.upside_down(crops)
        elif self.cfg.direction == "auto" and crops:
            # The label was deskewed as a whole, so its lines share one direction: ask about the widest few.
            sample = sorted(range(len(crops)), key=lambda i: -crops[i].shape[1])[:4]
            votes = self.upside_down([crops[i] for i in sample])
            if sum(votes) * 2 > len(votes):
                if turning:
                    timing["cls"] = (time.perf_counter() - t1) * 1000
                    return (), timing, 2
                flips = [True] * len(crops)
        crops = [np.ascontiguousarray(c[::-1, ::-1]) if f else c for c, f in zip(crops, flips, strict=True)]
        t2 = time.perf_counter()
        timing["cls"] = (t2 - t1) * 1000
        texts = self.recognize(crops, squeeze)
        timing["rec"] = (time.perf_counter() - t2) * 1000
        lines = []
        for (pts, _), (text, conf, char_conf, alt) in zip(boxes, texts, strict=True):
            if not text or conf < self.cfg.min_confidence:
                continue
            x0, y0 = np.floor(pts.min(axis=0)).astype(int)
            x1, y1 = np.ceil(pts.max(axis=0)).astype(int)
            quad = tuple((round(float(x), 1), round(float(y), 1)) for x, y in pts)
            box = (int(x0), int(y0), int(x1 - x0), int(y1 - y0))
            lines.append(TextLine(text, round(conf, 4), box, char_conf, quad, alt))
        if all(flips) and flips:
            lines.reverse()  # an upside-down label reads bottom line first
        return tuple(lines), timing, 0
