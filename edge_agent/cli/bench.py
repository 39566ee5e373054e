"""`edge-agent ocr` (slips from image files, no broker or key needed) and `edge-agent review` (the review queue)."""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.cli.common import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, add_config_arg, fail, load_or_exit
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.pipelines.bench.config import BenchConfig
from edge_agent.pipelines.bench.fields import load_reasons
from edge_agent.pipelines.bench.manifest import ManifestError, load_manifest, parse_manifest
from edge_agent.pipelines.bench.review import ReviewError, ReviewItem, ReviewQueue, ReviewRequest, decide, queue_path
from edge_agent.pipelines.bench.rules_config import FIELD_NAMES

if TYPE_CHECKING:
    from edge_agent.pipelines.bench.inspect import Inspector
    from edge_agent.settings import AgentConfig


def register(subparsers: Any) -> None:
    """Add `ocr` and `review` to the edge-agent command."""
    p = subparsers.add_parser(
        "ocr", help="read return slips from image files and print the fields (no broker, key or config needed)"
    )
    p.add_argument("--engine", choices=("onnx", "tesseract"), default=None, help="OCR engine (default: config)")
    p.add_argument("--json", action="store_true", help="one JSON object per image and line")
    p.add_argument(
        "--debug-dir", metavar="DIR", type=Path, default=None, help="write each stage's intermediate images there"
    )
    p.add_argument(
        "--scan", metavar="ORDER_NO", default=None, help="order number from the RF scanner, cross-checked with the slip"
    )
    p.add_argument(
        "--samples",
        action="store_true",
        help="read the sample slips shipped with edge-agent, with their expected returns (each judged on "
        "the day after its printed date)",
    )
    add_config_arg(p)
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.set_defaults(func=cmd_ocr)

    r = subparsers.add_parser("review", help="list, show and decide items in the bench's review queue")
    rsub = r.add_subparsers(dest="review_cmd", required=True, metavar="{list,show,accept,correct,reject}")
    rl = rsub.add_parser("list", help="items waiting for a person (or --status decided|emitted|all)")
    rl.add_argument("--status", choices=("pending", "decided", "emitted", "all"), default="pending")
    rl.add_argument("--json", action="store_true")
    add_config_arg(rl)
    rl.set_defaults(func=cmd_review_list)
    rs = rsub.add_parser("show", help="one item: fields, confidences, reasons, masked text")
    rs.add_argument("id", type=int)
    rs.add_argument("--json", action="store_true")
    add_config_arg(rs)
    rs.set_defaults(func=cmd_review_show)
    ra = rsub.add_parser("accept", help="the values are right as read")
    ra.add_argument("id", type=int)
    ra.add_argument("--reviewer", default=None, help="who decides (default: the login name)")
    ra.add_argument("--note", default="", help="optional note kept with the decision")
    add_config_arg(ra)
    ra.set_defaults(func=cmd_review_accept)
    rc = rsub.add_parser("correct", help="fix values: --set field=value ... --why TEXT")
    rc.add_argument("id", type=int)
    rc.add_argument(
        "--set",
        dest="changes",
        action="append",
        required=True,
        metavar="FIELD=VALUE",
        help=f"a corrected value; FIELD is one of {', '.join(FIELD_NAMES)} (repeat for several)",
    )
    rc.add_argument("--why", required=True, help="why the values were changed")
    rc.add_argument("--reviewer", default=None, help="who decides (default: the login name)")
    add_config_arg(rc)
    rc.set_defaults(func=cmd_review_correct)
    rj = rsub.add_parser("reject", help="not a return to book: --why 'not a return slip' | 'duplicate' | ...")
    rj.add_argument("id", type=int)
    rj.add_argument("--why", required=True, help="why the item is rejected")
    rj.add_argument("--reviewer", default=None, help="who decides (default: the login name)")
    add_config_arg(rj)
    rj.set_defaults(func=cmd_review_reject)


# ---------------------------------------------------------------- ocr


def _ocr_config(args: argparse.Namespace) -> tuple[BenchConfig, Path | None, Path | None]:
    """(bench config, folder relative paths resolve against, state dir); defaults without --config."""
    if not args.config:
        return BenchConfig(), None, None
    cfg = load_or_exit(args)
    base = cfg.source.parent.resolve() if cfg.source is not None else None
    return cfg.bench, base, cfg.state_dir


def _same_day(day: date) -> date:
    return day


def _ocr_images(args: argparse.Namespace) -> list[tuple[str, date | None]]:
    """(image path, day to judge it on or None for today): the files given, then --samples' slips."""
    images: list[tuple[str, date | None]] = [(name, None) for name in args.images]
    if args.samples:
        from edge_agent.demo.bench import demo_slips, sample_day

        folder, truth = demo_slips()
        print(f"sample slips: {folder}", file=sys.stderr)
        images += [(str(folder / name), sample_day(t)) for name, t in sorted(truth.items())]
    return images


def _ocr_inspector(args: argparse.Namespace) -> Inspector | int:
    """The inspector for `ocr` (config, manifest, engine), or the exit code after saying what is wrong."""
    from edge_agent.pipelines.bench.inspect import Inspector

    bench, base, _state = _ocr_config(args)
    manifest = None
    if bench.validation.manifest is not None:
        path = bench.validation.manifest
        try:
            manifest = load_manifest(path if path.is_absolute() or base is None else base / path)
        except ManifestError as exc:
            for line in exc.problems:
                print(line, file=sys.stderr)
            if more := exc.more(len(exc.problems)):
                print(more, file=sys.stderr)
            return EXIT_CONFIG
    if manifest is None and args.samples:
        # The sample slips come with their expected returns, as a bench gets them from central.
        from edge_agent.demo.bench import demo_slips, sample_manifest

        manifest = parse_manifest(sample_manifest(demo_slips()[1]), "sample slips' expected returns")
    try:
        return Inspector(bench, engine=args.engine, manifest=manifest, base_dir=base)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    except (EdgeAgentError, RuntimeError, OSError, ImportError) as exc:
        return fail(f"ocr: cannot start the OCR engine: {exc}")


def cmd_ocr(args: argparse.Namespace) -> int:
    from edge_agent.pipelines.bench.reader import load_image

    if not args.images and not args.samples:
        return fail("ocr: expected one or more IMAGE files, or --samples for the shipped sample slips", EXIT_FAIL)
    if args.debug_dir is not None:
        try:
            args.debug_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # checked once here: else each image's failure would be blamed on the image
            got = "a file" if args.debug_dir.exists() else exc.strerror or exc
            return fail(f"ocr: --debug-dir {args.debug_dir}: expected a folder it can write, got {got}")
    images = _ocr_images(args)
    inspector = _ocr_inspector(args)
    if isinstance(inspector, int):
        return inspector
    rc = EXIT_OK
    live_today = inspector.today
    for name, day in images:
        inspector.today = live_today if day is None else functools.partial(_same_day, day)
        try:
            image = load_image(Path(name))
            debug = args.debug_dir / Path(name).stem if args.debug_dir else None
            result = inspector.inspect(image, scan=args.scan, image_name=name, debug_dir=debug)
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the others
            rc = EXIT_FAIL
            msg = str(exc).strip() or type(exc).__name__
            if not msg.startswith(name):
                msg = f"{name}: {msg}"
            if args.json:
                print(json.dumps({"image": name, "error": msg}, ensure_ascii=False), flush=True)
            print(f"edge-agent: ocr: {msg}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(result.to_json(), ensure_ascii=False), flush=True)
        else:
            _print_result(result.to_json())
    return rc


def _print_result(data: dict[str, Any]) -> None:
    verdict = "NEEDS REVIEW" if data["needs_review"] else "ok"
    print(f"{data['image']}: {verdict}")
    for name in FIELD_NAMES:
        value = data["fields"][name]
        shown = "-" if value is None else str(value)
        print(f"  {name:<12} {shown:<28} {data['confidence'][name]:.2f}")
    for b in data["barcodes"]:
        print(f"  barcode      {b['text']} ({b['symbology']})")
    for reason in data["review_reasons"]:
        print(f"  review: {reason['message']}")
    if data.get("retake"):
        fields = ", ".join(r["field"] or "the photo" for r in data["retake"])
        print(f"  retake would help with: {fields} (likely cause: {data['retake'][0]['cause']})")
    total = data["timing_ms"].get("total")
    if total is not None:
        print(f"  time: {total:.0f} ms")


# ---------------------------------------------------------------- review


def _bench_only(cfg: AgentConfig) -> None:
    """Another profile has no review queue (on a truck's config `review list` said the queue was empty)."""
    if cfg.profile != "bench":
        raise ReviewError(
            f"{cfg.source}: profile {cfg.profile!r} has no review queue (only a bench's slips are reviewed)"
        )


def _queue(args: argparse.Namespace, cfg: AgentConfig | None = None) -> ReviewQueue:
    """The bench's review queue. One the daemon has not made yet is not made here: a `sudo edge-agent review`
    would leave a root-owned review.db the agent cannot open."""
    cfg = cfg or load_or_exit(args)
    _bench_only(cfg)
    path = queue_path(cfg.state_dir)
    if not path.exists():
        raise ReviewError(f"no review queue yet at {path} (the bench has queued nothing)")
    return ReviewQueue(path, review_cfg=cfg.bench.review)


def _item_json(item: ReviewItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "created_at": item.created_at,
        "status": item.status,
        "decision": item.decision,
        "reviewer": item.reviewer,
        "reviewed_at": item.reviewed_at,
        "changes": item.changes,
        "why": item.why,
        "image": str(item.image_path) if item.image_path else None,
        "body": item.body,
    }


def cmd_review_list(args: argparse.Namespace) -> int:
    cfg = load_or_exit(args)
    try:
        _bench_only(cfg)
    except ReviewError as exc:
        return fail(f"review: {exc}")
    if not queue_path(cfg.state_dir).exists():
        if not args.json:  # JSON lines: none
            print("the review queue is empty (the bench has queued nothing yet)")
        return EXIT_OK
    try:
        with _queue(args, cfg) as q:
            items = q.list(args.status)
    except (ReviewError, OSError) as exc:
        return fail(f"review: {exc}")
    if args.json:
        for item in items:
            print(json.dumps(_item_json(item), ensure_ascii=False))
        return EXIT_OK
    if not items:
        print(f"no {args.status} items" if args.status != "all" else "the review queue is empty")
        return EXIT_OK
    for item in items:
        f = item.body.get("fields", {})
        codes = ",".join(sorted({r["code"] for r in item.body.get("review_reasons", [])}))
        print(f"{item.id:>6}  {item.created_at}  {item.status:<8} order {f.get('order_no') or '-'}  [{codes}]")
    return EXIT_OK


def _order_check_line(check: Any) -> str:
    """`scan 123, barcode -, slip 123: they agree` from the record's {scan, barcode, ocr, agree}."""
    if not isinstance(check, dict):
        return "-"
    sources = ", ".join(
        f"{label} {check.get(key) or '-'}" for key, label in (("scan", "scan"), ("barcode", "barcode"), ("ocr", "slip"))
    )
    agree = check.get("agree")
    verdict = "only one source" if agree is None else "they agree" if agree else "THEY DISAGREE"
    return f"{sources}: {verdict}"


def cmd_review_show(args: argparse.Namespace) -> int:
    try:
        with _queue(args) as q:
            item = q.get(args.id)
    except (ReviewError, OSError) as exc:
        return fail(f"review: {exc}")
    if args.json:
        print(json.dumps(_item_json(item), ensure_ascii=False, indent=2))
        return EXIT_OK
    body = item.body
    print(f"item {item.id} ({item.status}), queued {item.created_at}")
    for name in FIELD_NAMES:
        value = body["fields"].get(name)
        conf = body.get("confidence", {}).get(name, 0.0)
        print(f"  {name:<12} {'-' if value is None else value!s:<28} {conf:.2f}")
    print(f"  order check: {_order_check_line(body.get('order_check'))}")
    for r in body.get("review_reasons", []):
        print(f"  review: {r['message']}")
    if item.image_path:
        print(f"  image: {item.image_path}")
    if item.status != "pending":
        print(f"  {item.decision} by {item.reviewer} at {item.reviewed_at}: {item.why or ''}")
        for f, ch in item.changes.items():
            print(f"    {f}: {ch['from']} -> {ch['to']}")
    print("  slip text (masked):")
    for line in str(body.get("masked_text", "")).splitlines():
        print(f"    {line}")
    return EXIT_OK


def _reviewer(args: argparse.Namespace) -> str:
    return str(args.reviewer or getpass.getuser())


def _decide(args: argparse.Namespace, request: ReviewRequest) -> ReviewItem | int:
    """Run the shared review implementation; an int is the exit code of a failure already printed."""
    cfg = load_or_exit(args)
    try:
        reasons = load_reasons(cfg.bench.validation)
        with _queue(args, cfg) as q:
            return decide(q, request, reasons, cfg.bench.validation.max_quantity)
    except (ReviewError, OSError) as exc:
        return fail(f"review: {exc}")


def cmd_review_accept(args: argparse.Namespace) -> int:
    item = _decide(args, ReviewRequest(args.id, _reviewer(args), "accept", why=args.note))
    if isinstance(item, int):
        return item
    print(f"item {item.id} accepted by {item.reviewer}; the daemon sends its record")
    return EXIT_OK


def cmd_review_correct(args: argparse.Namespace) -> int:
    changes: dict[str, str] = {}
    for pair in args.changes:
        field, sep, value = pair.partition("=")
        if not sep or field.strip() not in FIELD_NAMES:
            return fail(
                f"review correct: --set: expected FIELD=VALUE with FIELD one of {', '.join(FIELD_NAMES)}, got {pair!r}",
                EXIT_FAIL,
            )
        changes[field.strip()] = value
    item = _decide(args, ReviewRequest(args.id, _reviewer(args), "correct", changes, args.why))
    if isinstance(item, int):
        return item
    print(
        f"item {item.id} corrected by {item.reviewer} ({', '.join(item.changes) or 'no change'}); "
        "the daemon sends its record"
    )
    return EXIT_OK


def cmd_review_reject(args: argparse.Namespace) -> int:
    item = _decide(args, ReviewRequest(args.id, _reviewer(args), "reject", why=args.why))
    if isinstance(item, int):
        return item
    print(f"item {item.id} rejected by {item.reviewer} ({item.why}); the daemon sends its record")
    return EXIT_OK
