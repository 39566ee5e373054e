"""Write N diverse slip photos and truth.json: python -m edge_agent.demo.slipgen --split tune --n 50 --out DIR."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_agent.demo.slipgen import SPLITS, TIERS, encode_png, field_truth, generate_slip, split_seeds
from edge_agent.demo.slipgen.layouts import FONT_SETS, LAYOUTS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m edge_agent.demo.slipgen",
        description="Write diverse return-slip photos (PNG) and truth.json to a folder.",
    )
    ap.add_argument("--split", choices=tuple(SPLITS), default="tune", help="seed range (default tune)")
    ap.add_argument("--tier", choices=(*TIERS, "all"), default="typical", help="photo tier, or all (default typical)")
    ap.add_argument("--n", type=int, default=50, help="slips per tier (default 50)")
    ap.add_argument("--start", type=int, default=0, help="first seed, counted from the split's first seed")
    ap.add_argument("--layout", choices=LAYOUTS, help="only this layout")
    ap.add_argument(
        "--fonts", choices=tuple(FONT_SETS), default="seen", help="unseen: faces the reader was never tuned on"
    )
    ap.add_argument("--out", type=Path, required=True, help="folder to write into (created)")
    ap.add_argument(
        "--i-am-the-benchmark",
        action="store_true",
        help="required for --split heldout: those photos are for the final evaluation, not for looking at",
    )
    args = ap.parse_args(argv)
    if args.split == "heldout" and not args.i_am_the_benchmark:
        print(
            "slipgen: --split heldout: the held-out photos are for benchmarks/bench_ocr.py only; "
            "tune on --split tune (add --i-am-the-benchmark if you really are the benchmark)",
            file=sys.stderr,
        )
        return 2
    if args.n < 1:
        print(f"slipgen: --n: expected 1 or more, got {args.n}", file=sys.stderr)
        return 2
    try:
        seeds = split_seeds(args.split, args.n, args.start)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    tiers = TIERS if args.tier == "all" else (args.tier,)
    rows = []
    for tier in tiers:
        for seed in seeds:
            img, truth = generate_slip(seed, tier, style="diverse", layout=args.layout, fonts=args.fonts)
            name = f"{args.split}_{tier}_{seed}.png"
            (args.out / name).write_bytes(encode_png(img))
            rows.append({"file": name, "fields": field_truth(truth), "truth": truth})
    (args.out / "truth.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"slipgen: wrote {len(rows)} photos and truth.json to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
