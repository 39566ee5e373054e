"""OCR benchmark on diverse generated slips, tuning and held-out splits, against stock RapidOCR and Tesseract.

Photos come from edge_agent.demo.slipgen's diverse style (layouts, labels, fonts, code formats and
photo tiers are listed in its docstring). Seeds below 1,000,000 are the TUNING split the reader may
be tuned on; seeds from 1,000,000 are HELD OUT: nobody looks at them while tuning, and this benchmark
is the only thing that draws them. One seed is one slip in all three tiers.

Engines, each in its own process (so peak RSS is per engine), on the same PNG photos:

* ours: the agent's `edge-agent ocr` path (Inspector: reader, fields, validation, review decision),
  with a return window that accepts each slip's date (the date rule alone must not send it to review);
* ours+manifest: the same, with the expected-returns manifest a bench has loaded in production (each
  slip's order: its SKU, quantity and customer id): the letter/digit doubts it settles, and the wrong
  reads it catches, show what a site with a manifest sees; the issue's measure is the row without;
* stock: RapidOCR 3.10 with its default settings on the full frame, and a plain regex field
  extractor written here (label keyword, then the value on the same line or the line below);
* tesseract: Tesseract chi_sim+eng on the full frame (one thread), with the same regex extractor.

Prints markdown tables: per split and tier, all six right, per-field accuracy, review rate, wrong
values (and wrong values passed without review), median and p95 per photo; per-stage latency;
a reliability table (per confidence bucket, the share of values actually right); peak RSS; with
--memory, RSS after 1, 10, 100 and 500 photos in one process; with --barcodes, real barcode photos
read by zxing-cpp alone against what comes out of `edge-agent ocr`.

    taskset -c 0 python benchmarks/bench_ocr.py --n 50 --memory 500 --barcodes      # the full run
    taskset -c 0 python benchmarks/bench_ocr.py --n 5 --splits tune --engines ours  # a quick look
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import unicodedata
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("order_no", "sku", "quantity", "reason", "customer_id", "return_date")
SHORT = dict(zip(FIELDS, ("order", "sku", "qty", "reason", "cust", "date"), strict=True))
STAGE_ORDER = ("quality", "preprocess", "barcodes", "det", "cls", "rec", "ocr", "fields", "validate", "decide", "total")
TIERS = ("clean", "typical", "hard")
SPLITS = ("tune", "heldout")
ENGINES = ("ours", "ours+manifest", "stock", "tesseract")
MEMORY_MARKS = (1, 10, 100, 500)
BUCKETS = (0.0, 0.5, 0.7, 0.85, 0.95, 0.99, 1.0001)


# ---------------------------------------------------------------- photos


def make_set(
    folder: Path, splits: list[str], tiers: list[str], n: int, start: int = 0, *, fonts: str = "seen"
) -> list[dict[str, Any]]:
    """Write n photos per split and tier (PNG, lossless: every engine sees the same pixels) with their truth.
    fonts "unseen" draws every slip in faces no rule of the reader was tuned on (slipgen's UNSEEN_FONTS)."""
    from edge_agent.demo.slipgen import encode_png, field_truth, generate_slip, split_seeds

    items = []
    for split in splits:
        for seed in split_seeds(split, n, start):
            for tier in tiers:
                img, truth = generate_slip(seed, tier, style="diverse", fonts=fonts)
                path = folder / f"{split}_{tier}_{seed}.png"
                path.write_bytes(encode_png(img))
                items.append(
                    {
                        "path": str(path),
                        "split": split,
                        "tier": tier,
                        "seed": seed,
                        "truth": field_truth(truth),
                        "layout": truth["layout"],
                        "fonts": fonts,
                    }
                )
    return items


# ---------------------------------------------------------------- plain regex extractor (for the stock engines)


def _load_reasons() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "config" / "reasons.toml").read_text(encoding="utf-8"))
    return {r["name"]: [r["name"], *r.get("synonyms", [])] for r in data["reason"]}


REASONS = _load_reasons()
_LABELS = {
    "order_no": r"订单|order\s*(?:no|id|#|number)",
    "sku": r"sku|商品编[码号]|货号|物料编码|item\s*(?:code|no)",
    "quantity": r"数量|件数|qty|quantity",
    "reason": r"原因|理由|reason",
    "customer_id": r"客户|会员|用户|买家|customer|member",
    "return_date": r"日期|时间|date",
}
_VALUES = {
    "order_no": r"[A-Z]{0,4}\d[\d-]{5,30}\d|[A-Z]{2,4}\d{4,}",
    "sku": r"[A-Z0-9][A-Z0-9_/.-]{2,30}",
    "quantity": r"\d{1,4}",
    "customer_id": r"[A-Z]{0,4}-?\d[\dA-Z-]{3,20}",
    "return_date": r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})",
}


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _value(name: str, rest: str) -> Any:  # noqa: PLR0911 - one return per kind of value
    rest = rest.strip(" :：]】)）")
    if name == "reason":
        for reason, words in REASONS.items():
            if any(w.casefold() in rest.casefold() for w in words):
                return reason
        return None
    m = re.search(_VALUES[name], rest.upper() if name != "return_date" else rest)
    if m is None:
        return None
    if name == "return_date":
        y, mo, d = (int(g) for g in m.groups())
        try:
            return date(y, mo, d).isoformat()
        except ValueError:
            return None
    if name == "quantity":
        return int(m.group(0))
    return m.group(0).strip("-")


def regex_fields(lines: list[tuple[str, float]]) -> tuple[dict[str, Any], dict[str, float]]:
    """A plain extractor as a user would write it: find the label keyword, read the value after it on
    the same line, else on the next line; confidence = the line's recognition score."""
    texts = [(_norm(t), s) for t, s in lines]
    fields: dict[str, Any] = dict.fromkeys(FIELDS)
    conf: dict[str, float] = dict.fromkeys(FIELDS, 0.0)
    for name, label in _LABELS.items():
        for i, (text, line_score) in enumerate(texts):
            m = re.search(label, text, re.IGNORECASE)
            if m is None:
                continue
            value, score = _value(name, text[m.end() :]), line_score
            if value is None and i + 1 < len(texts):
                value = _value(name, texts[i + 1][0])
                score = min(score, texts[i + 1][1])
            if value is not None:
                fields[name], conf[name] = value, float(score)
                break
    return fields, conf


# ---------------------------------------------------------------- engines (child processes)


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB, from /proc (VmHWM is this process image's own peak)."""
    from edge_agent.proc import memory_mb

    return memory_mb("VmRSS"), memory_mb("VmHWM")


class _Ours:
    def __init__(self) -> None:
        from edge_agent.pipelines.bench.config import BenchConfig
        from edge_agent.pipelines.bench.inspect import Inspector

        self.inspector = Inspector(BenchConfig())

    def __call__(self, img: Any, truth: dict[str, Any]) -> dict[str, Any]:
        day = date.fromisoformat(truth["return_date"]) + timedelta(days=1)
        self.inspector.today = lambda: day  # the return window accepts the slip's own date
        t = time.perf_counter()
        res = self.inspector.inspect(img, image_name="bench")
        total = (time.perf_counter() - t) * 1000
        timing = {k: float(v) for k, v in res.timing_ms.items()}
        timing["end_to_end"] = total
        return {
            "fields": dict(res.fields),
            "confidence": {k: float(v) for k, v in res.confidence.items()},
            "review": bool(res.needs_review),
            "reasons": sorted({i.code for i in res.review_reasons}),
            "timing": timing,
            "refused": not res.quality.ok,
            "barcodes": [b.text for b in res.barcodes],
        }


class _OursManifest(_Ours):
    """Ours with a manifest holding the slip's order, as the bench's expected returns would."""

    def __call__(self, img: Any, truth: dict[str, Any]) -> dict[str, Any]:
        from edge_agent.pipelines.bench.manifest import Manifest, Order

        order_no = str(truth["order_no"]).upper()
        order = Order(order_no, {str(truth["sku"]).upper(): int(truth["quantity"])}, str(truth["customer_id"]).upper())
        self.inspector.set_manifest(Manifest({order_no: order}, "bench", "0" * 64))
        return super().__call__(img, truth)


class _Stock:
    def __init__(self) -> None:
        from rapidocr import RapidOCR

        # One inference thread, as ours runs. With its default (-1) onnxruntime starts a worker thread per
        # core and pins each one itself, which overrides taskset: under `taskset -c 0` a worker ran on core
        # 1 (567 ms a clean photo, against 880 ms on one core), and under `taskset -c 1` the pinning made
        # it slower still (1453 ms). run_engine records the cores every thread was allowed on.
        self.engine = RapidOCR(
            params={
                "Global.log_level": "error",
                "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
        )

    def __call__(self, img: Any, truth: dict[str, Any]) -> dict[str, Any]:
        t = time.perf_counter()
        out = self.engine(img)
        t_ocr = time.perf_counter()
        lines = list(zip(out.txts or (), (float(s) for s in out.scores or ()), strict=False))
        fields, conf = regex_fields(lines)
        t_end = time.perf_counter()
        ms = {"ocr": (t_ocr - t) * 1000, "fields": (t_end - t_ocr) * 1000, "end_to_end": (t_end - t) * 1000}
        return {"fields": fields, "confidence": conf, "review": None, "timing": ms, "refused": False}


class _Tesseract:
    def __init__(self) -> None:
        import pytesseract

        self.tess = pytesseract
        self.tess.get_tesseract_version()

    def __call__(self, img: Any, truth: dict[str, Any]) -> dict[str, Any]:
        import cv2

        t = time.perf_counter()
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        data = self.tess.image_to_data(rgb, lang="chi_sim+eng", output_type=self.tess.Output.DICT)
        t_ocr = time.perf_counter()
        groups: dict[tuple[int, int, int], list[tuple[str, float]]] = {}
        for k, word in enumerate(data["text"]):
            if word.strip():
                key = (data["block_num"][k], data["par_num"][k], data["line_num"][k])
                groups.setdefault(key, []).append((word, float(data["conf"][k])))
        lines = []
        for words in groups.values():
            text = ""
            for w, _ in words:  # Chinese words come one glyph apiece: no space between CJK neighbours
                text += w if not text or (not text[-1].isascii() or not w[0].isascii()) else " " + w
            lines.append((text, min(c for _, c in words) / 100))
        fields, conf = regex_fields(lines)
        t_end = time.perf_counter()
        ms = {"ocr": (t_ocr - t) * 1000, "fields": (t_end - t_ocr) * 1000, "end_to_end": (t_end - t) * 1000}
        return {"fields": fields, "confidence": conf, "review": None, "timing": ms, "refused": False}


def _engine(name: str) -> Any:
    return {"ours": _Ours, "ours+manifest": _OursManifest, "stock": _Stock, "tesseract": _Tesseract}[name]()


def run_engine(name: str, items: list[dict[str, Any]], memory: bool) -> dict[str, Any]:
    """Child process: read every photo with one engine; per-photo results, RSS marks and peak RSS."""
    import cv2

    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # Tesseract: one thread, like the others on one core
    t = time.perf_counter()
    engine = _engine(name)
    load_ms = (time.perf_counter() - t) * 1000
    results = []
    marks = {}
    for k, it in enumerate(items, start=1):
        img = cv2.imread(it["path"], cv2.IMREAD_COLOR)
        try:
            r = engine(img, it["truth"])
        except Exception as exc:  # noqa: BLE001 - a crash on one photo is a result, not the end of the run
            r = {"error": f"{type(exc).__name__}: {exc}", "fields": dict.fromkeys(FIELDS), "confidence": {}}
            r |= {"review": True, "timing": {}, "refused": False}
        if memory:
            r = {"timing": r["timing"]}  # the memory run only needs time and RSS
        results.append(r)
        if k in MEMORY_MARKS or k == len(items):
            marks[k] = _rss_mb()
    return {
        "engine": name,
        "results": results,
        "rss_marks": marks,
        "peak_rss_mb": _rss_mb()[1],
        "load_ms": load_ms,
        "cores": _thread_cores(),
    }


def _thread_cores() -> str:
    """The cores this process's threads may run on, all of them together (Cpus_allowed_list per thread):
    a library that pins its own threads can leave the core taskset gave the process."""
    cores: set[str] = set()
    for status in Path("/proc/self/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:  # the thread ended meanwhile
            continue
        for line in text.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                cores.add(line.split(":", 1)[1].strip())
    return ",".join(sorted(cores)) or "unknown"


def _child(name: str, items: list[dict[str, Any]], folder: Path, memory: bool = False) -> dict[str, Any]:
    path = folder / f"items_{name}_{'mem' if memory else 'acc'}.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    cmd = [sys.executable, __file__, "--child", name, "--items", str(path)] + (["--child-memory"] if memory else [])
    t = time.perf_counter()
    commit = code_commit()  # what this process is about to import
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=6 * 3600)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"bench_ocr: engine {name} failed (exit {out.returncode})")
    print(f"  {name}{' (memory)' if memory else ''}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return {**res, "commit": commit}


# ---------------------------------------------------------------- report


def _same(value: Any, truth: Any) -> bool:
    return value is not None and str(value).strip() == str(truth)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _fmt_pct(x: float) -> str:
    return "—" if x != x else f"{x:.0%}"  # noqa: PLR0124 - NaN check


def _table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def accuracy_table(items: list[dict[str, Any]], runs: dict[str, dict[str, Any]], split: str) -> str:
    head = ["engine", "tier", "all six", *[SHORT[f] for f in FIELDS], "review", "quality hint", "wrong values"]
    head += ["wrong passed", "median ms", "p95 ms"]
    rows = []
    for name, run in runs.items():
        for tier in TIERS:
            pairs = [
                (it, r)
                for it, r in zip(run.get("items", items), run["results"], strict=True)
                if (it["split"], it["tier"]) == (split, tier)
            ]
            if not pairs:
                continue
            n = len(pairs)
            right = {f: sum(_same(r["fields"].get(f), it["truth"][f]) for it, r in pairs) / n for f in FIELDS}
            six = sum(all(_same(r["fields"].get(f), it["truth"][f]) for f in FIELDS) for it, r in pairs) / n
            wrong = sum(
                r["fields"].get(f) is not None and not _same(r["fields"].get(f), it["truth"][f])
                for it, r in pairs
                for f in FIELDS
            )
            has_review = pairs[0][1]["review"] is not None
            review = sum(bool(r["review"]) for _, r in pairs) / n if has_review else float("nan")
            passed = (
                str(
                    sum(
                        not r["review"] and not _same(r["fields"].get(f), it["truth"][f])
                        for it, r in pairs
                        for f in FIELDS
                    )
                )
                if has_review
                else "— (no review)"
            )
            lat = [r["timing"]["end_to_end"] for _, r in pairs if "end_to_end" in r["timing"]]
            refused = sum(bool(r["refused"]) for _, r in pairs) / n if has_review else float("nan")
            row = [name, tier, f"**{six:.0%}**", *[f"{right[f]:.0%}" for f in FIELDS], _fmt_pct(review)]
            row += [_fmt_pct(refused), str(wrong), passed, f"{_pct(lat, 50):.0f}", f"{_pct(lat, 95):.0f}"]
            rows.append(row)
    return _table(head, rows)


def layout_table(items: list[dict[str, Any]], runs: dict[str, dict[str, Any]]) -> str:
    """All six right per layout (all tiers), so a weakness shows where it lives."""
    layouts = sorted({it["layout"] for it in items})
    rows = []
    for name, run in runs.items():
        for split in SPLITS:
            cells = []
            for lay in layouts:
                pairs = [
                    (it, r)
                    for it, r in zip(run.get("items", items), run["results"], strict=True)
                    if (it["split"], it["layout"]) == (split, lay)
                ]
                ok = sum(all(_same(r["fields"].get(f), it["truth"][f]) for f in FIELDS) for it, r in pairs)
                cells.append(f"{ok}/{len(pairs)}" if pairs else "—")
            if any(c != "—" for c in cells):
                rows.append([name, split, *cells])
    return _table(["engine", "split", *layouts], rows)


def wrong_passed_list(items: list[dict[str, Any]], runs: dict[str, dict[str, Any]], limit: int = 20) -> str:
    """Values ours passed without review that are wrong, TUNING split only (seed, tier, field, got, want):
    what to look at next. Held-out cases are only counted above, never listed."""
    lines = []
    run = runs.get("ours")
    if run is None:
        return ""
    for it, r in zip(run.get("items", items), run["results"], strict=True):
        if it["split"] != "tune" or r["review"] is not False:
            continue
        for f in FIELDS:
            if not _same(r["fields"].get(f), it["truth"][f]):
                got, want = r["fields"].get(f), it["truth"][f]
                lines.append(f"- seed {it['seed']} {it['tier']} ({it['layout']}): {f} {got!r}, slip says {want!r}")
    if not lines:
        return "None on the tuning split."
    more = f"\n- ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


def review_table(items: list[dict[str, Any]], runs: dict[str, dict[str, Any]]) -> str:
    """Why photos went to review: review-reason codes per split and tier, most common first."""
    rows = []
    for name, run in runs.items():
        for split in SPLITS:
            for tier in TIERS:
                counts: dict[str, int] = {}
                for it, r in zip(run.get("items", items), run["results"], strict=True):
                    if (it["split"], it["tier"]) == (split, tier):
                        for code in r.get("reasons", ()):
                            counts[code] = counts.get(code, 0) + 1
                if counts:
                    top = sorted(counts.items(), key=lambda kv: -kv[1])
                    rows.append([name, split, tier, ", ".join(f"{k} {v}" for k, v in top)])
    return _table(["engine", "split", "tier", "review reasons (photos)"], rows)


def stage_table(items: list[dict[str, Any]], runs: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, run in runs.items():
        for tier in TIERS:
            stages: dict[str, list[float]] = {}
            for it, r in zip(run.get("items", items), run["results"], strict=True):
                if it["tier"] == tier:
                    for k, v in r["timing"].items():
                        stages.setdefault(k, []).append(v)
            if stages:
                keys = sorted(stages, key=lambda k: (*STAGE_ORDER, k).index(k) if k != "end_to_end" else 99)
                cells = ", ".join(f"{k} {_pct(stages[k], 50):.0f} / {_pct(stages[k], 95):.0f}" for k in keys)
                rows.append([name, tier, cells])
    return _table(["engine", "tier", "stage median / p95 ms (both splits)"], rows)


def reliability_table(items: list[dict[str, Any]], runs: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, run in runs.items():
        for split in SPLITS:
            counts = [[0, 0, 0] for _ in BUCKETS[:-1]]  # values, right, passed without review
            for it, r in zip(run.get("items", items), run["results"], strict=True):
                if it["split"] != split:
                    continue
                for f in FIELDS:
                    v = r["fields"].get(f)
                    if v is None:
                        continue
                    c = float(r["confidence"].get(f, 0.0))
                    b = next(i for i in range(len(BUCKETS) - 1) if BUCKETS[i] <= c < BUCKETS[i + 1])
                    counts[b][0] += 1
                    counts[b][1] += _same(v, it["truth"][f])
                    counts[b][2] += r["review"] is False
            if not any(c[0] for c in counts):
                continue
            cells = [f"{c[1] / c[0]:.0%} of {c[0]}" if c[0] else "—" for c in counts]
            rows.append([name, split, *cells])
    head = ["engine", "split"] + [f"{lo:.2f}-{min(hi, 1.0):.2f}" for lo, hi in itertools.pairwise(BUCKETS)]
    return _table(head, rows)


def memory_table(mem: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, run in mem.items():
        marks = {int(k): v for k, v in run["rss_marks"].items()}
        cells = [f"{marks[m][0]:.0f} / {marks[m][1]:.0f}" if m in marks else "—" for m in MEMORY_MARKS]
        lat = [r["timing"].get("end_to_end", float("nan")) for r in run["results"]]
        rows.append([name, str(len(run["results"])), *cells, f"{_pct(lat, 50):.0f}"])
    return _table(["engine", "photos", *[f"RSS / peak MB after {m}" for m in MEMORY_MARKS], "median ms"], rows)


def barcode_table() -> tuple[str, int, int, int]:
    """Real barcode photos: zxing-cpp alone on the full photo vs what `edge-agent ocr` puts out."""
    import cv2
    import zxingcpp

    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.inspect import Inspector

    photos: dict[str, tuple[Path, str]] = {}
    data = ROOT / "tests" / "data" / "barcodes"
    for txt in sorted(data.glob("*.txt")):
        if txt.with_suffix(".png").exists():  # not the .metadata.txt files
            photos[txt.stem] = (txt.with_suffix(".png"), txt.read_text(encoding="utf-8").rstrip("\n"))
    inspector = Inspector(BenchConfig())
    rows = []
    alone = ours = lost = masked = 0
    for stem, (path, expected) in sorted(photos.items()):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            continue
        zx = {r.text for r in zxingcpp.read_barcodes(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))}
        # what the pipeline decoded, and what `edge-agent ocr` prints (personal data in a code is masked)
        decoded = {b.text for b in inspector.reader.read(img).barcodes}
        printed = {b.text for b in inspector.inspect(img, image_name=stem).barcodes}
        a, o = expected in zx, expected in decoded
        alone += a
        ours += o
        lost += a and not o
        masked += o and expected not in printed
        if a != o or (o and expected not in printed):
            rows.append([stem, "yes" if a else "no", "yes" if o else "no", "yes" if expected in printed else "masked"])
    head = f"{len(photos)} photos: zxing-cpp alone read {alone}; `edge-agent ocr`'s pipeline decoded {ours} "
    head += f"(lost on the way: {lost}); printed {masked} of those masked, as they hold a name, phone or e-mail"
    cols = ["photo (where they differ)", "zxing-cpp alone", "edge-agent ocr decoded", "printed as is"]
    table = _table(cols, rows) if rows else ""
    return head + ("\n\n" + table if table else ""), len(photos), alone, ours


def code_commit() -> str:
    """HEAD of this checkout, short, marked when tracked files differ from it."""
    head = ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(head, check=False, capture_output=True, text=True).stdout.strip() or "unknown"
    status = ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]
    dirty = subprocess.run(status, check=False, capture_output=True, text=True).stdout.strip()
    return f"{commit} with uncommitted changes" if dirty else commit


def report(
    args: argparse.Namespace,
    items: list[dict[str, Any]],
    runs: dict[str, dict[str, Any]],
    mem: dict[str, dict[str, Any]],
    elapsed_s: dict[str, float],
) -> None:
    per = args.n
    # The code each engine's process ran: taken as it started, as a commit made during the run would not be.
    commits = {name: r.get("commit") or "unknown" for name, r in runs.items()}
    if len(set(commits.values())) <= 1:
        code = f"Code at commit {next(iter(commits.values()), 'unknown')}"
    else:
        code = "Code at commit " + ", ".join(f"{c} ({name})" for name, c in commits.items())
    fonts = items[0].get("fonts", "seen") if items else "seen"
    faces = "" if fonts == "seen" else ", every slip in a face the reader was never tuned on (slipgen UNSEEN_FONTS)"
    print(
        f"## OCR on diverse generated slips\n\n{code}. {per} slips per split{faces}, "
        "each photographed in the three tiers "
        f"(1600x1200); one core (affinity {sorted(os.sched_getaffinity(0))}); "
        f"generated in {elapsed_s['generate']:.0f} s, read in {elapsed_s['read']:.0f} s"
        + (f", memory run {elapsed_s['memory']:.0f} s" if mem else "")
        + ".\n"
    )
    for split in args.splits:
        title = "tuning split (seeds 0-)" if split == "tune" else "held-out split (seeds 1,000,000-; never looked at)"
        print(f"### {title}\n")
        print(accuracy_table(items, runs, split) + "\n")
    print("### All six right per layout (photos, all tiers)\n")
    print(layout_table(items, runs) + "\n")
    if "ours" in runs and "tune" in args.splits:
        print("### Wrong values ours passed without review (tuning split only)\n")
        print(wrong_passed_list(items, runs) + "\n")
    print("### Why photos went to review\n")
    print(review_table(items, runs) + "\n")
    print("### Latency per stage\n")
    print(stage_table(items, runs) + "\n")
    print("### Reliability: per confidence bucket, the share of values actually right\n")
    print(reliability_table(items, runs) + "\n")
    print("### Memory\n")
    rows = [
        [n, f"{r['peak_rss_mb']:.0f}", f"{r['load_ms']:.0f}", r.get("cores", "not recorded")] for n, r in runs.items()
    ]
    heads = ["engine", f"peak RSS MB after the {len(items)} photos above", "load ms", "cores its threads ran on"]
    print(_table(heads, rows) + "\n")
    if mem:
        count = max(len(r["results"]) for r in mem.values())  # also right for --combine, where --memory is 0
        print(f"{count} distinct photos (all tiers, tuning split) in one process:\n")
        print(memory_table(mem) + "\n")


def main() -> int:  # noqa: PLR0915 - one linear script: parse, generate or reuse, run, report
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "--n", type=int, default=30, help="slips per split; each is photographed in every tier (default 30)"
    )
    ap.add_argument("--splits", default="tune,heldout", help="comma list of tune, heldout (default both)")
    ap.add_argument("--tiers", default=",".join(TIERS), help="comma list of clean, typical, hard")
    ap.add_argument(
        "--fonts",
        choices=("seen", "unseen"),
        default="seen",
        help="unseen: draw the slips in faces the reader was never tuned on (other weights, mono cuts, JP/TW forms)",
    )
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma list of ours, stock, tesseract")
    ap.add_argument("--memory", type=int, default=0, help="also run this many distinct photos in one process (500)")
    ap.add_argument("--memory-engines", default="ours", help="engines for --memory (default ours)")
    ap.add_argument("--barcodes", action="store_true", help="also compare zxing-cpp alone with edge-agent ocr")
    ap.add_argument("--reuse", type=Path, help="a folder of photos an interrupted run left (with its items json)")
    ap.add_argument("--save", type=Path, help="also write the raw results as JSON to this file")
    ap.add_argument("--combine", type=Path, nargs="+", help="print the tables of runs saved with --save")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--items", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        items = json.loads(Path(args.items).read_text(encoding="utf-8"))
        print(json.dumps(run_engine(args.child, items, args.child_memory)))
        return 0
    args.splits = [s for s in args.splits.split(",") if s]
    if args.combine:
        parts = [json.loads(f.read_text(encoding="utf-8")) for f in args.combine]
        for part in parts:  # each engine is scored on the photos it read (a quick engine may have read more)
            for v in part["runs"].values():
                v["items"] = part["items"]
        runs = {k: v for p in parts for k, v in p["runs"].items()}
        mem = {k: v for p in parts for k, v in p["mem"].items()}
        elapsed = {k: max(p["elapsed"].get(k, 0.0) for p in parts) for k in ("generate", "read", "memory")}
        report(args, parts[0]["items"], runs, mem, elapsed)
        if args.barcodes:
            print("### Real barcode photos (tests/data/barcodes)\n")
            print(barcode_table()[0] + "\n")
        return 0
    tiers = [t for t in args.tiers.split(",") if t]
    engines = [e for e in args.engines.split(",") if e]
    bad = [x for x in args.splits if x not in SPLITS] + [x for x in tiers if x not in TIERS]
    bad += [x for x in engines if x not in ENGINES]
    if bad:
        ap.error(f"unknown split, tier or engine: {', '.join(bad)}")
    t_all = time.perf_counter()
    elapsed: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_ocr_") as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        if args.reuse:  # the photos of an interrupted run (its folder, kept): same seeds, same pixels
            items = json.loads(next(args.reuse.glob("items_*_acc.json")).read_text(encoding="utf-8"))
            items = [it for it in items if it["seed"] % 1_000_000 < args.n and it["split"] in args.splits]
            for it in items:
                it["path"] = str(args.reuse / Path(it["path"]).name)
        else:
            items = make_set(folder, args.splits, tiers, args.n, fonts=args.fonts)
        elapsed["generate"] = time.perf_counter() - t
        print(f"generated {len(items)} photos in {elapsed['generate']:.0f} s", file=sys.stderr)
        t = time.perf_counter()
        runs = {name: _child(name, items, folder) for name in engines}
        elapsed["read"] = time.perf_counter() - t
        mem: dict[str, dict[str, Any]] = {}
        if args.memory:
            t = time.perf_counter()
            mem_items = make_set(folder, ["tune"], list(TIERS), -(-args.memory // len(TIERS)), start=500_000)
            mem_items = mem_items[: args.memory]
            mem = {
                name: _child(name, mem_items, folder, memory=True) for name in args.memory_engines.split(",") if name
            }
            elapsed["memory"] = time.perf_counter() - t
    if args.save:  # engines run apart (e.g. on two cores at once) are printed together with --combine
        args.save.write_text(
            json.dumps({"items": items, "runs": runs, "mem": mem, "elapsed": elapsed}), encoding="utf-8"
        )
    report(args, items, runs, mem, elapsed)
    if args.barcodes:
        print("### Real barcode photos (tests/data/barcodes)\n")
        print(barcode_table()[0] + "\n")
    print(f"The whole run took {time.perf_counter() - t_all:.0f} s (wall clock) on one core.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
