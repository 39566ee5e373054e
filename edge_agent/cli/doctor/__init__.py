"""`edge-agent doctor`: every check a technician would otherwise do by hand, one line each, with the remedy.

One module per area (keys, clock, storage, broker, devices, models, systemd); this one runs them in the
order a technician would go.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.cli.doctor.base import FAIL, OK, SERIAL_LISTEN_S, WARN, Check, Status
from edge_agent.cli.doctor.broker import check_broker_login, check_broker_tcp, check_broker_tls, check_client_cert
from edge_agent.cli.doctor.clock import (
    ClockFacts,
    check_clock_sync,
    check_clock_vs_records,
    check_gps_time,
    gather_clock_facts,
)
from edge_agent.cli.doctor.devices import check_serial_device, iter_models, serial_devices
from edge_agent.cli.doctor.keys import (
    check_config,
    check_device_key,
    check_secret_file,
    check_trusted_keys,
    service_user,
)
from edge_agent.cli.doctor.models import check_camera, check_expected_returns, check_ocr_models
from edge_agent.cli.doctor.storage import check_disk, check_outbox
from edge_agent.cli.doctor.systemd import check_systemd
from edge_agent.settings import resolve_config_path

__all__ = [
    "FAIL",
    "OK",
    "WARN",
    "Check",
    "ClockFacts",
    "Status",
    "check_client_cert",
    "check_clock_sync",
    "check_expected_returns",
    "check_ocr_models",
    "cmd_doctor",
    "register",
    "run_checks",
]

log = logging.getLogger(__name__)


def run_checks(
    config_path: Path,
    *,
    root: Path = Path("/"),
    listen_s: float = SERIAL_LISTEN_S,
    now: datetime | None = None,
    on_check: Callable[[Check], None] | None = None,
) -> list[Check]:
    """Every check, in the order a technician would go; checks that need a valid config are skipped without one."""
    results: list[Check] = []

    def add(c: Check | None) -> None:
        if c is not None:
            results.append(c)
            if on_check is not None:
                on_check(c)

    first, cfg = check_config(config_path)
    add(first)
    if cfg is None:
        for c in check_systemd(root):
            add(c)
        return results
    t = now or datetime.now(UTC)
    user = service_user(root)
    add(check_device_key(cfg, user))
    makes = {
        "key_file": "put the client certificate's private key there (from the central team; chmod 600)",
        "password_file": "write the broker password there, on one line (chmod 600)",
    }
    for name, make in makes.items():
        p = getattr(cfg.mqtt, name)
        if p is not None:
            add(check_secret_file(f"mqtt {name.replace('_', ' ')}", Path(p), user, make))
    add(check_trusted_keys(cfg))
    add(check_clock_sync(gather_clock_facts(root)))
    add(check_clock_vs_records(cfg, t))
    add(check_gps_time(cfg))
    add(check_disk(cfg))
    add(check_outbox(cfg))
    tcp = check_broker_tcp(cfg)
    add(tcp)
    if tcp.status == OK:
        add(check_broker_tls(cfg))
    add(check_client_cert(cfg, t))
    if tcp.status == OK:
        add(check_broker_login(cfg))
    for path, dev in serial_devices(cfg):
        add(check_serial_device(path, dev, listen_s))
    if cfg.profile == "bench":
        for path, m in iter_models(cfg.bench, "bench"):
            if getattr(m, "kind", None) in ("folder", "opencv", "picamera2"):
                add(check_camera(path, m))
        for c in check_ocr_models(cfg):
            add(c)
        add(check_expected_returns(cfg, t))
    for c in check_systemd(root):
        add(c)
    return results


def cmd_doctor(args: argparse.Namespace) -> int:
    path = resolve_config_path(args.config)
    root = Path(args.root)
    if args.json:
        checks = run_checks(path, root=root, listen_s=args.listen_s)
        print(json.dumps([asdict(c) for c in checks], ensure_ascii=False, indent=1))
    else:
        checks = run_checks(path, root=root, listen_s=args.listen_s, on_check=lambda c: print(c.line(), flush=True))
        counts = {s: sum(1 for c in checks if c.status == s) for s in (OK, WARN, FAIL)}
        print(f"{counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} fail", file=sys.stderr)
    return 1 if any(c.status == FAIL for c in checks) else 0


def register(sub: Any) -> None:
    from edge_agent.cli.common import add_config_arg

    s = sub.add_parser("doctor", help="check config, keys, clock, disk, outbox, broker, devices, models, systemd")
    add_config_arg(s)
    s.add_argument("--json", action="store_true", help="one JSON list of {name, status, message, remedy}")
    s.add_argument("--listen-s", type=float, default=SERIAL_LISTEN_S, help="how long to listen to each serial device")
    s.add_argument("--root", default="/", help=argparse.SUPPRESS)  # a filesystem root, for tests and images
    s.set_defaults(func=cmd_doctor)
