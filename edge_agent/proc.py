"""This process's own figures from /proc (Linux), shared by the health record, tests and benchmarks."""

from __future__ import annotations

import contextlib
from pathlib import Path


def memory_mb(field: str = "VmRSS") -> float:
    """A memory figure of /proc/self/status in MB: VmRSS (resident now) or VmHWM (the peak so far);
    0.0 where there is no /proc."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024.0
    return 0.0
