"""Doctor checks of time: NTP/chrony/kernel sync, the clock against stored records, and GPS time."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edge_agent.cli.doctor.base import (
    CLOCK_AHEAD_TOLERANCE_S,
    FAIL,
    GPS_SKEW_WARN_S,
    OK,
    WARN,
    Check,
    run_quietly,
)
from edge_agent.settings import AgentConfig
from edge_agent.spine.outbox import Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClockFacts:
    timesyncd_synced: bool | None  # None: not installed / unknown
    chrony_synced: bool | None
    kernel_synced: bool | None


def gather_clock_facts(root: Path) -> ClockFacts:
    timesyncd: bool | None = None
    if (root / "run/systemd/timesync/synchronized").exists():
        timesyncd = True
    else:
        out = run_quietly(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
        if out is not None:
            timesyncd = out.strip() == "yes"
    chrony = None
    out = run_quietly(["chronyc", "-n", "tracking"])
    if out is not None:
        m = re.search(r"Leap status\s*:\s*(.+)", out)
        chrony = bool(m) and m is not None and m.group(1).strip() == "Normal"
    kernel = None
    with contextlib.suppress(Exception):
        from edge_agent.spine.clock import system_clock_synced

        kernel = system_clock_synced()
    return ClockFacts(timesyncd, chrony, kernel)


def check_clock_sync(facts: ClockFacts) -> Check:
    sources = {
        "systemd-timesyncd": facts.timesyncd_synced,
        "chrony": facts.chrony_synced,
        "kernel": facts.kernel_synced,
    }
    synced = [n for n, v in sources.items() if v]
    if synced:
        return Check("clock sync", OK, f"synchronised ({', '.join(synced)})")
    known = [n for n, v in sources.items() if v is not None]
    return Check(
        "clock sync",
        WARN,
        f"not synchronised ({', '.join(known) or 'no time service found'}); records are marked clock=unsynced",
        "give the device network time: `timedatectl set-ntp true` (or configure chrony), and a GPS if it "
        "has no network",
    )


def last_record_time(cfg: AgentConfig) -> datetime | None:
    if not cfg.db_path.exists():
        return None
    try:
        with Outbox(cfg.db_path, readonly=True) as ob:
            row = ob.latest()
    except sqlite3.Error:
        return None
    return datetime.fromisoformat(row[0].replace("Z", "+00:00")) if row else None


def check_clock_vs_records(cfg: AgentConfig, now: datetime) -> Check:
    last = last_record_time(cfg)
    if last is None:
        return Check("clock vs records", OK, "no records yet")
    ahead_s = (last - now).total_seconds()
    if ahead_s > CLOCK_AHEAD_TOLERANCE_S:
        return Check(
            "clock vs records",
            FAIL,
            f"system time {now:%Y-%m-%d %H:%M:%S}Z is {ahead_s:.0f} s before the last record's time "
            f"({last:%Y-%m-%d %H:%M:%S}Z): the clock went backwards",
            "set the clock (network time or GPS) before starting the agent; check the RTC battery if fitted",
        )
    return Check("clock vs records", OK, f"later than the last record ({last:%Y-%m-%d %H:%M:%S}Z)")


def last_gps_skew_s(cfg: AgentConfig) -> tuple[float | None, str | None]:
    """GPS minus system time from the newest health record, and that record's time."""
    if not cfg.db_path.exists():
        return None, None
    try:
        with Outbox(cfg.db_path, readonly=True) as ob:
            row = ob.latest("health")
    except sqlite3.Error:
        return None, None
    if not row:
        return None, None
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        rec = json.loads(row[1])
        skew = rec["body"]["clock"]["gps_skew_s"]
        return (float(skew) if skew is not None else None), rec["ts"]
    return None, None


def check_gps_time(cfg: AgentConfig) -> Check | None:
    if cfg.telematics.gps is None:
        return None
    skew, ts = last_gps_skew_s(cfg)
    if skew is None:
        return Check(
            "gps time",
            WARN,
            "no GPS time seen in the health records yet",
            "let the agent run with a GPS fix for a minute, then run doctor again",
        )
    if abs(skew) > GPS_SKEW_WARN_S:
        return Check(
            "gps time",
            WARN,
            f"system clock differs from GPS time by {skew:+.1f} s (health record of {ts})",
            "enable network time; until then records take GPS time (clock=gps)",
        )
    return Check("gps time", OK, f"system clock agrees with GPS within {abs(skew):.1f} s (health record of {ts})")
