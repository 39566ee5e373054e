"""`edge-agent demo --profile bench` prints the station's address, and the page there shows the demo's verdicts."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.station.harness import json_of, request

pytestmark = pytest.mark.slow


def test_station_demo__prints_the_address_and_the_page_works_there(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "demo",
            "--profile",
            "bench",
            "--duration",
            "120",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        first = demo.stdout.readline()
        m = re.match(r"operator station: (http://127\.0\.0\.1:\d+/) ", first)
        assert m, f"the first line names the page, got {first!r}"
        url = m.group(1)

        def latest() -> dict[str, object] | None:
            status, body = request(url + "api/state")
            return json_of(body).get("latest") if status == 200 else None

        assert wait_until(latest, 90), (tmp_path / "agent.log").read_text()[-3000:]
        status, page = request(url)
        assert status == 200 and b'data-page="live"' in page and b"demo-bench" in page
        view = latest()
        assert view is not None and view["kind"] in ("passed", "review", "retake")
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            out, _ = demo.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
            out, _ = demo.communicate()
    assert demo.returncode == 0, out[-3000:]
    assert request(url + "healthz")[0] == 0, "the station stops with the demo's agent"
