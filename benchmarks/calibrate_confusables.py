"""How often the recogniser swaps confusable letters and digits, per character as read: the thresholds'
evidence (edge_agent.pipelines.bench.normalize.SURE_AS_READ).

Runs the bench's Inspector on diverse generated slips of the TUNING split only (seeds below 1,000,000;
the held-out split is bench_ocr.py's alone) in all three tiers. For every code field whose value has the
truth's length, each confusable character the pattern allows either way (O/0, I/1, S/5, B/8, Z/2, G/6) is
counted with its final probability (after the second look at full width) as right, or wrong when the
truth holds its pair. Prints, per character as read: how many, how many wrong and the highest
probability of a wrong one, how many right ones each threshold would call sure, and which wrong ones
the current thresholds pass.

    taskset -c 0 python benchmarks/calibrate_confusables.py --n 300          # seeds 0-299, about 15 min
    taskset -c 0 python benchmarks/calibrate_confusables.py --n 20 --start 500

With --glyphs it measures the glyph-width witness instead (edge_agent.pipelines.bench.glyphs): for every
O and 0 the recogniser read in a line that holds a code value, its width over the line's digits, per font
and per printed character, and what settle_o_zero did with it: made sure (right or WRONG), made doubtful
(a right or a wrong read), or left alone; and of the doubtful ones, how many it wrote as the width says
(right, or WRONG). A line read again (the second look, the cascade) counts again.

    taskset -c 0 python benchmarks/calibrate_confusables.py --glyphs --n 150   # about 13 min
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CODE_FIELDS = ("order_no", "sku", "customer_id")
THRESHOLDS = (0.9, 0.99, 0.999, 0.9999, 0.99995)


def collect(n: int, start: int) -> list[dict[str, Any]]:
    """One row per confusable character in a final code value: as read, truth, probability, font."""
    sys.path.insert(0, str(ROOT))
    import edge_agent.pipelines.bench.fields as fields_mod
    from edge_agent.demo.slipgen import field_truth, generate_slip, split_seeds
    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.inspect import Inspector
    from edge_agent.pipelines.bench.normalize import CONFUSABLE_PAIRS

    try:
        seeds = split_seeds("tune", n, start)  # refuses to reach into the held-out split
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    seen: dict[str, tuple[tuple[float, ...], Any]] = {}
    judge = fields_mod.ambiguous_positions

    def watching(value: str, pattern: Any, conf: tuple[float, ...] = (), alt: str = "") -> list[tuple[int, str, str]]:
        seen[value] = (tuple(conf), pattern)  # the last look at each value is the one decided on
        return judge(value, pattern, conf, alt)

    fields_mod.ambiguous_positions = watching  # type: ignore[assignment]
    inspector = Inspector(BenchConfig())
    rows = []
    for seed in seeds:
        for tier in ("clean", "typical", "hard"):
            img, truth = generate_slip(seed, tier, style="diverse")
            t = field_truth(truth)
            day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
            inspector.today = lambda day=day: day  # the return window accepts the slip's own date
            seen.clear()
            res = inspector.inspect(img, image_name="calibrate")
            for name in CODE_FIELDS:
                value, want = res.fields.get(name), str(t[name]).upper()
                if value is None or value not in seen or len(want) != len(value):
                    continue
                conf, pattern = seen[value]
                for i, ch in enumerate(value):
                    other = CONFUSABLE_PAIRS.get(ch)
                    if other is None or not pattern.fullmatch(value[:i] + other + value[i + 1 :]):
                        continue
                    if want[i] not in (ch, other):
                        continue  # another misreading, not this pair's
                    p = conf[i] if len(conf) == len(value) else 0.0
                    font = Path(str(truth.get("font") or "?")).name
                    rows.append({"seed": seed, "tier": tier, "read": ch, "p": p, "right": want[i] == ch, "font": font})
        print(f"seed {seed}: {len(rows)} characters", file=sys.stderr, flush=True)
    return rows


def collect_glyphs(n: int, start: int) -> list[dict[str, Any]]:
    """One row per O or 0 read inside a code value's line: font, printed, read, width ratio, outcome."""
    sys.path.insert(0, str(ROOT))
    import edge_agent.pipelines.bench.ocr_onnx as onnx_mod
    from edge_agent.demo.slipgen import field_truth, generate_slip, split_seeds
    from edge_agent.pipelines.bench.config import BenchConfig
    from edge_agent.pipelines.bench.inspect import Inspector

    try:
        seeds = split_seeds("tune", n, start)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    settled: list[tuple[str, tuple[float, ...], dict[int, float], tuple[float, ...], str]] = []
    settle = onnx_mod.settle_o_zero

    def watching(
        text: str, conf: tuple[float, ...], ratios: dict[int, float], *args: Any, **kw: Any
    ) -> tuple[str, tuple[float, ...]]:
        written, out = settle(text, conf, ratios, *args, **kw)
        settled.append((text, conf, ratios, out, written))
        return written, out

    onnx_mod.settle_o_zero = watching  # type: ignore[assignment]
    inspector = Inspector(BenchConfig())
    rows = []
    for seed in seeds:
        for tier in ("clean", "typical", "hard"):
            img, truth = generate_slip(seed, tier, style="diverse")
            t = field_truth(truth)
            day = date.fromisoformat(t["return_date"]) + timedelta(days=1)
            inspector.today = lambda day=day: day
            settled.clear()
            inspector.inspect(img, image_name="calibrate")
            font = Path(str(truth.get("font") or "?")).name
            for name in CODE_FIELDS:
                want = str(t[name]).upper()
                for text, before, ratios, after, written in settled:
                    k = text.upper().replace("O", "0").find(want.replace("O", "0"))
                    if k < 0:
                        continue  # not this value's line
                    for i in range(k, k + len(want)):
                        printed = want[i - k]
                        if i not in ratios or printed not in "O0":
                            continue
                        right = text[i] == printed
                        outcome = (
                            ("sure, right" if right else "sure, WRONG")
                            if after[i] > before[i]
                            else ("doubtful, right read" if right else "doubtful, wrong read")
                            if after[i] < before[i]
                            else "left alone"
                        )
                        rows.append(
                            {
                                "font": font,
                                "printed": printed,
                                "ratio": ratios[i],
                                "outcome": outcome,
                                "rewritten": written[i] != text[i],
                                "rewritten_right": written[i] != text[i] and written[i] == printed,
                            }
                        )
        print(f"seed {seed}: {len(rows)} characters", file=sys.stderr, flush=True)
    return rows


def glyph_table(rows: list[dict[str, Any]]) -> str:
    outcomes = ("sure, right", "sure, WRONG", "doubtful, right read", "doubtful, wrong read", "left alone")
    head = [
        "font",
        "printed O: n, width min / median / max",
        "printed 0: n, width min / median / max",
        *outcomes,
        "doubtful and written as the width says: right / WRONG",
    ]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def spread(rs: list[dict[str, Any]]) -> str:
        xs = sorted(r["ratio"] for r in rs)
        return f"{len(xs)}: {xs[0]:.2f} / {xs[len(xs) // 2]:.2f} / {xs[-1]:.2f}" if xs else "0"

    for font in [*sorted({r["font"] for r in rows}), "all"]:
        rs = [r for r in rows if font in ("all", r["font"])]
        cells = [
            font,
            spread([r for r in rs if r["printed"] == "O"]),
            spread([r for r in rs if r["printed"] == "0"]),
            *(str(sum(r["outcome"] == o for r in rs)) for o in outcomes),
            f"{sum(r['rewritten_right'] for r in rs)} / {sum(r['rewritten'] and not r['rewritten_right'] for r in rs)}",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def table(rows: list[dict[str, Any]]) -> str:
    from edge_agent.pipelines.bench.normalize import SURE_AS_READ, SURE_DEFAULT

    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[r["read"]].append(r)
    head = [
        "as read",
        "n",
        "wrong",
        "highest p wrong",
        *(f"right ≥ {t}" for t in THRESHOLDS),
        "threshold",
        "wrong passed",
    ]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ch in sorted(by):
        rs = by[ch]
        wrong = [r for r in rs if not r["right"]]
        sure = SURE_AS_READ.get(ch, SURE_DEFAULT)
        passed = [r for r in wrong if r["p"] >= sure]
        cells = [
            ch,
            str(len(rs)),
            str(len(wrong)),
            f"{max(r['p'] for r in wrong):.4f}" if wrong else "—",
            *(str(sum(r["right"] and r["p"] >= t for r in rs)) for t in THRESHOLDS),
            str(sure),
            ", ".join(f"seed {r['seed']} {r['tier']} ({r['font']})" for r in passed) or "none",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="slips (seeds) from --start (default 300)")
    ap.add_argument("--start", type=int, default=0, help="first seed of the tuning split (default 0)")
    ap.add_argument("--glyphs", action="store_true", help="measure the O/0 glyph-width witness instead")
    args = ap.parse_args()
    seeds = f"{args.start}-{args.start + args.n - 1}"
    if args.glyphs:
        rows = collect_glyphs(args.n, args.start)
        print(f"O and 0 in code lines by glyph width over the line's digits, tuning split seeds {seeds}\n")
        print(glyph_table(rows))
        return 0
    rows = collect(args.n, args.start)
    print(f"Confusable characters in code values, tuning split seeds {seeds}, three tiers\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
