"""Small helpers shared by every CLI module: the --config option and clean error exits."""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable

from edge_agent.errors import ConfigError
from edge_agent.settings import AgentConfig, load_config, resolve_config_path

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_CONFIG = 2


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    """--config PATH on a subcommand (else $EDGE_AGENT_CONFIG, else /etc/edge-agent/config.toml)."""
    parser.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        default=None,
        help="config file (default: $EDGE_AGENT_CONFIG, else /etc/edge-agent/config.toml)",
    )


def load_or_exit(args: argparse.Namespace) -> AgentConfig:
    """Load the config named by --config/$EDGE_AGENT_CONFIG/default, or print each problem and exit 2."""
    try:
        return load_config(resolve_config_path(getattr(args, "config", None)))
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def number_in(kind: type[int] | type[float], lo: float, hi: float | None = None) -> Callable[[str], float]:
    """An argparse type: a number of `kind` from lo (to hi); anything else is a usage error that says so."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < lo or (hi is not None and value > hi):
            fmt = "d" if kind is int else "g"
            span = f"{lo:{fmt}}-{hi:{fmt}}" if hi is not None else f">= {lo:{fmt}}"
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun} {span}, got {text!r}")
        return value

    return parse


def fail(message: str, code: int = EXIT_FAIL) -> int:
    """Print one short error line to stderr and return the exit code."""
    print(f"edge-agent: {message}", file=sys.stderr)
    return code


def lazy(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    """A command handler that imports its module when the command runs, not when the CLI starts.

    Every group registers its commands at start; a group whose handlers need pynmea2, cv2 or web3
    points at them through this, so `edge-agent status` never pays for them.
    """

    def run(args: argparse.Namespace) -> int:
        handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), func)
        return handler(args)

    return run
