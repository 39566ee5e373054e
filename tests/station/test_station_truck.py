"""The truck profile's status strip on the same server: its devices' state and the pipeline's figures, in Chromium."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from edge_agent.cli.main import render_config
from edge_agent.demo.profiles import setup_truck
from edge_agent.demo.runner import Twins
from edge_agent.settings import load_config
from edge_agent.spine.keys import generate_key
from tests.broker import Broker, free_port
from tests.helpers import wait_until
from tests.station.harness import chromium_paths, json_of, request, start_chromium

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_paths() is None, reason="needs chromium and chromium-driver (.ci/apt-packages.txt)"),
]


@pytest.fixture
def truck(broker: Broker, tmp_path: Path) -> Iterator[str]:
    twins = Twins()
    cfg = tmp_path / "config.toml"
    cfg.write_text(render_config("truck", "truck-3", "depot", broker.url, tmp_path / "state"), encoding="utf-8")
    setup_truck(cfg, tmp_path, twins)
    port = free_port()
    doc = tomlkit.parse(cfg.read_text(encoding="utf-8"))
    doc.setdefault("bench", tomlkit.table())["station"] = {"enabled": True, "port": port}  # type: ignore[index]
    cfg.write_text(tomlkit.dumps(doc), encoding="utf-8")
    generate_key(load_config(cfg).key_path)
    log = tmp_path / "agent.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(cfg)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        assert wait_until(lambda: request(url + "healthz")[0] == 200, 30), log.read_text()[-3000:]
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(20) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
            twins.stop()


def test_station_truck__strip_shows_the_drivers_and_the_pipeline(truck: str, tmp_path: Path) -> None:
    def strip() -> dict[str, Any]:
        status, body = request(truck + "api/state")
        return dict(json_of(body)["status"]) if status == 200 else {}

    assert wait_until(lambda: strip().get("devices") and all(d["connected"] for d in strip()["devices"]), 30)
    st = strip()
    assert st["profile"] == "truck" and {"Broker", "Outbox"} <= {i["name"] for i in st["items"]}
    assert len(st["devices"]) >= 3, "GPS, OBD-II and the axle scale"
    assert "distance_km" in st["summary"]
    driver = start_chromium(tmp_path / "chromium")
    try:
        from selenium.webdriver.support.ui import WebDriverWait

        driver.get(truck)
        WebDriverWait(driver, 30, 0.05).until(
            lambda d: (
                d.execute_script("return document.querySelectorAll('#device-details table.devices tr').length") > 3
            )
        )
        text = driver.execute_script("return document.querySelector('#device-details').innerText")
        assert "distance km" in text and "reconnects" in text
        assert driver.execute_script("return document.querySelector('#counts').children.length") == 0
        driver.save_screenshot(str(tmp_path / "truck.png"))
    finally:
        driver.quit()
