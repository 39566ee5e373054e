"""What every doctor check shares: the verdict line, the thresholds, and two small helpers."""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

Status = Literal["ok", "warn", "fail"]
OK: Status = "ok"
WARN: Status = "warn"
FAIL: Status = "fail"

UNIT_NAME = "edge-agent.service"
UNIT_DIRS = ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system")
CERT_WARN_DAYS = 30
OLDEST_UNDELIVERED_WARN_S = 3600.0
OLDEST_UNDELIVERED_FAIL_S = 7 * 24 * 3600.0
GPS_SKEW_WARN_S = 2.0
CLOCK_AHEAD_TOLERANCE_S = 1.0
DISK_MARGIN_MB = 100.0
SERIAL_LISTEN_S = 3.0
BROKER_TIMEOUT_S = 5.0
OCR_SLOW_S = 5.0
MANIFEST_OLD_S = 7 * 24 * 3600.0  # an expected-returns manifest not updated for a week misses new returns
CHAIN_TAIL = 200  # how many of the newest stored records the link check walks


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    message: str
    remedy: str = ""

    def line(self) -> str:
        text = f"{self.status:<4} {self.name}: {self.message}"
        return text + (f"\n       -> {self.remedy}" if self.remedy and self.status != OK else "")


def human_s(s: float) -> str:
    """A duration as a technician reads it: 45 s, 12 min, 3.5 h, 2.0 days."""
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def run_quietly(argv: list[str]) -> str | None:
    """The output of a short system command (timedatectl, chronyc, systemctl), or None when it cannot run."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=1.0, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 or out.stdout else None
