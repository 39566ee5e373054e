"""`edge-agent telematics replay` on input that is not what it expects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_replay__a_file_that_is_not_nmea_fails_and_says_so(tmp_path: Path) -> None:
    log = tmp_path / "notes.txt"
    log.write_text("delivery notes\nno GNSS here\n", encoding="utf-8")
    r = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "telematics", "replay", str(log)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1
    assert "no NMEA sentence found" in r.stderr and str(log) in r.stderr
    assert "Traceback" not in r.stderr
