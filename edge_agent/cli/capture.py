"""`edge-agent bench capture`: ask the running bench daemon for one photo now (the manual trigger)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from edge_agent.cli.common import EXIT_FAIL, EXIT_OK, add_config_arg, fail, load_or_exit, number_in


def register(subparsers: Any) -> None:
    """Add `bench capture` to the edge-agent command."""
    b = subparsers.add_parser("bench", help="bench controls for a running daemon")
    bsub = b.add_subparsers(dest="bench_cmd", required=True, metavar="{capture}")
    c = bsub.add_parser("capture", help="take a photo now and inspect it (the manual trigger)")
    c.add_argument(
        "--code",
        metavar="ORDER_NO",
        default=None,
        help="the slip's order number, typed in when the scanner cannot read it",
    )
    c.add_argument(
        "--wait",
        metavar="SECONDS",
        type=number_in(float, 0),
        default=3.0,
        help="how long to wait for the daemon to take the request (default 3; 0 = do not wait)",
    )
    add_config_arg(c)
    c.set_defaults(func=cmd_capture)


def cmd_capture(args: argparse.Namespace) -> int:
    # here, not at the top: triggers.py holds the motion trigger too (cv2, numpy), which no other
    # command should pay for at start
    from edge_agent.pipelines.bench.triggers import request_capture, request_path

    cfg = load_or_exit(args)
    if cfg.profile != "bench":
        return fail(f"bench capture: this device runs the {cfg.profile} profile, not bench")
    code = args.code.strip() if args.code else None
    try:
        path = request_capture(cfg.state_dir, code=code or None)
    except PermissionError:
        return fail(
            f"bench capture: cannot write {request_path(cfg.state_dir)}: permission denied "
            "(run as the edge-agent user or with sudo)"
        )
    except OSError as exc:
        return fail(f"bench capture: cannot write {request_path(cfg.state_dir)}: {exc.strerror}")
    if args.wait <= 0:
        print("capture requested")
        return EXIT_OK
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        if not path.exists():
            print("capture taken by the bench daemon; the result appears as a record or in `edge-agent review list`")
            return EXIT_OK
        time.sleep(0.05)
    # Withdraw it, so a daemon started later does not take a photo nobody asked for any more.
    path.unlink(missing_ok=True)
    return fail(
        f"bench capture: the daemon did not take the request within {args.wait:g} s "
        "(is edge-agent running with the bench profile? see `edge-agent status`)",
        EXIT_FAIL,
    )
