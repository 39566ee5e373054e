"""The `telematics` command group: registration only; the replay itself lives in cli/replay.py."""

from __future__ import annotations

from typing import Any

from edge_agent.cli.common import lazy


def register(subparsers: Any) -> None:
    """Add the `telematics` command group to the top-level CLI."""
    p = subparsers.add_parser("telematics", help="truck pipeline tools (offline replay)")
    sub = p.add_subparsers(dest="telematics_cmd", metavar="COMMAND")
    sub.required = True
    r = sub.add_parser(
        "replay",
        help="run GPS cleaning, trips and CO2 on a recorded NMEA log; print trips and a summary",
        description="Replay a recorded NMEA 0183 log through the truck pipeline without broker or key. "
        "Fuel and weight logs hold one reading a line: an optional time (ISO 8601 UTC, or seconds from the "
        "first fix) and the raw frame (an ELM327 answer such as '41 5E 01 90', an LLS frame in hex, or a "
        "scale line); lines without a time are taken one second apart from the first fix.",
    )
    r.add_argument("log", metavar="LOG", help="NMEA log (text; gpsd '#' comment lines are skipped)")
    r.add_argument("--fuel", metavar="LOG", help="fuel log (ELM327 answers or LLS frames)")
    r.add_argument("--weight", metavar="LOG", help="scale log (MT-SICS or continuous ASCII lines)")
    r.add_argument("--json", action="store_true", help="one JSON object per line: trip, event, then summary")
    r.add_argument("--telemetry", action="store_true", help="also print telemetry records")
    r.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        default=None,
        help="take the [telematics] section from this config (default: built-in defaults)",
    )
    r.set_defaults(func=lazy("edge_agent.cli.replay", "cmd_replay"))
